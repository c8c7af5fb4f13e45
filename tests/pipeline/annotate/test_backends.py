"""Both request paths (ours on aiohttp, and the official openai client's `post`) against the fake
server: the same reply or the same classified error for every kind of fault it makes."""
import asyncio

import pytest

from pipeline.annotate.backends import OpenAIBackend, RequestRejected, TeacherUnusable, TransientError
from tests.fakes.openai_server import FakeOpenAI

KEY = "sk-test-0123456789abcdefSECRET"
MESSAGES = [{"role": "system", "content": "Answer in four stages."},
            {"role": "user", "content": [{"type": "text", "text": "How many cubes?\nStandard answer: 3"}]}]
CASES = {
    "answer": {},
    "refusal field": dict(refusal=1.0, refusal_mode="field"),
    "content filter": dict(content_filter=1.0),
    "truncated": dict(faults={"length": 1.0}),
    "429 with headers": dict(rate_limit=1.0, retry_after=2),
    "429 without headers": dict(rate_limit_bare=1.0, retry_after=3),
    "429, headers -1": dict(rate_limit=1.0, ratelimit_headers="minus_one"),
    "insufficient quota": dict(insufficient_quota=1.0),
    "bad key": dict(api_key="sk-another"),
    "unknown model": dict(known_models=["gpt-4o-2024-11-20"]),
    "500": dict(server_error=1.0, server_error_statuses=[500]),
    "503": dict(server_error=1.0, server_error_statuses=[503]),
    "invalid json": dict(malformed=1.0, malformed_mode="invalid_json"),
    "no choices": dict(malformed=1.0, malformed_mode="missing_choices"),
    "stall": dict(timeout=1.0, timeout_hold=3.0),
}


def outcome(fake, http: str):
    backend = OpenAIBackend(KEY, fake.base_url, timeout_s=1.0, http=http)

    async def go():
        try:
            reply = await backend.chat("gpt-4o", MESSAGES, {"max_tokens": 200})
            choice = reply["choices"][0]
            return ("reply", choice["finish_reason"], choice["message"].get("refusal"),
                    bool(choice["message"].get("content")))
        except TransientError as exc:  # (what is left of the budget refills by the millisecond: said or not)
            return ("transient", exc.kind, exc.retry_after, tuple(x is not None for x in exc.remaining),
                    exc.maybe_billed)
        except (TeacherUnusable, RequestRejected) as exc:
            return (type(exc).__name__, str(exc))
        finally:
            await backend.close()

    return asyncio.run(go())


@pytest.mark.parametrize("case", sorted(CASES))
def test_both_request_paths_see_the_same_thing(case):
    seen = {}
    for http in ("direct", "openai"):
        with FakeOpenAI(**CASES[case]) as fake:
            seen[http] = outcome(fake, http)
    assert seen["direct"] == seen["openai"], seen
    assert KEY not in str(seen)


def test_what_each_fault_is_classified_as():
    expect = {
        "answer": ("reply", "stop"), "refusal field": ("reply", "stop"), "content filter": ("reply", "content_filter"),
        "truncated": ("reply", "length"), "429 with headers": ("transient", "rate_limit"),
        "429 without headers": ("transient", "rate_limit"), "429, headers -1": ("transient", "rate_limit"),
        "insufficient quota": ("TeacherUnusable",), "bad key": ("TeacherUnusable",),
        "unknown model": ("TeacherUnusable",), "500": ("transient", "server_error"),
        "503": ("transient", "server_error"), "invalid json": ("transient", "malformed"),
        "no choices": ("transient", "malformed"), "stall": ("transient", "timeout"),
    }
    for case, want in expect.items():
        with FakeOpenAI(**CASES[case]) as fake:
            got = outcome(fake, "direct")
        assert got[:len(want)] == want, (case, got)
        if case == "429 with headers":
            assert got[2] == 2 and got[3] == (True, True)  # Retry-After, and the budget the headers report
        if case in ("429 without headers", "429, headers -1"):
            assert got[3] == (False, False)  # the server does not say what is left
        if case in ("stall", "invalid json"):
            assert got[4] is True  # may have been billed: its reservation stays counted
