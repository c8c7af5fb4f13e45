"""The fake OpenAI server, seen through the real `openai` client (max_retries=0: faults arrive raw)."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import openai
import pytest

from tests.fakes.openai_server import REFUSAL_TEXT, FakeOpenAI, request_key

REPO = Path(__file__).resolve().parents[2]


def _msg(question: str = "How many cubes?", answer: str = "3", image: bool = True) -> list:
    parts = [{"type": "text", "text": f"{question}\nStandard answer: {answer}"}]
    if image:
        parts.append({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}})
    return [{"role": "system", "content": "Answer in four stages."}, {"role": "user", "content": parts}]


@pytest.fixture
def fake():
    with FakeOpenAI() as f:
        yield f


@pytest.fixture
def client(fake):
    return openai.OpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0, timeout=5)


def test_completion_round_trip_with_usage_and_headers(fake, client):
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=_msg(answer="7"))
    r = raw.parse()
    assert r.object == "chat.completion" and r.model == "gpt-4o-mini" and r.id.startswith("chatcmpl-")
    msg = r.choices[0].message
    assert msg.role == "assistant" and msg.refusal is None and r.choices[0].finish_reason == "stop"
    assert msg.content.startswith("<SUMMARY>") and msg.content.endswith("<CONCLUSION>7</CONCLUSION>")
    for tag in ("CAPTION", "REASONING"):
        assert f"<{tag}>" in msg.content
    u = r.usage
    assert u.prompt_tokens >= fake.server.config.image_tokens  # one image part
    assert u.completion_tokens > 0 and u.total_tokens == u.prompt_tokens + u.completion_tokens
    h = raw.headers
    for what in ("requests", "tokens"):
        assert int(h[f"x-ratelimit-limit-{what}"]) >= int(h[f"x-ratelimit-remaining-{what}"]) >= 0
        assert h[f"x-ratelimit-reset-{what}"]
    # no standard answer -> "unknown"; a judge request -> "valid"
    r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Describe."}])
    assert r.choices[0].message.content.endswith("<CONCLUSION>unknown</CONCLUSION>")
    judge = [{"role": "system", "content": "Give your verdict: valid or invalid."},
             {"role": "user", "content": "Candidate: 3\nStandard answer: 3"}]
    assert client.chat.completions.create(model="m", messages=judge).choices[0].message.content == "valid"
    s = fake.stats()
    assert s["received"] == s["answered"] == 3 and s["answered_twice"] == [] and s["faults_by_kind"] == {}


def test_async_client_and_concurrency(fake):
    fake.configure(latency=0.2)

    async def go():
        c = openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0)
        rs = await asyncio.gather(*(c.chat.completions.create(model="m", messages=_msg(answer=str(i)))
                                    for i in range(32)))
        await c.close()
        return rs

    t = time.monotonic()
    rs = asyncio.run(go())
    assert [r.choices[0].message.content.split("<CONCLUSION>")[1][:-13] for r in rs] == [str(i) for i in range(32)]
    assert time.monotonic() - t < 3  # concurrent, not 32 x 0.2 s
    assert fake.stats()["in_flight_max"] > 1


def test_custom_responder_sync_and_async(fake, client):
    fake.configure(responder=lambda body: "echo:" + body["model"])
    assert client.chat.completions.create(model="abc", messages=_msg()).choices[0].message.content == "echo:abc"

    async def slow(body):
        await asyncio.sleep(0.01)
        return "async"

    fake.configure(responder=slow)
    assert client.chat.completions.create(model="abc", messages=_msg()).choices[0].message.content == "async"


def test_rate_limit_fault_carries_retry_after(fake, client):
    fake.configure(rate_limit=1.0, retry_after=2)
    with pytest.raises(openai.RateLimitError) as ei:
        client.chat.completions.create(model="m", messages=_msg())
    assert ei.value.status_code == 429
    assert ei.value.response.headers["retry-after"] == "2"
    assert "x-ratelimit-remaining-requests" in ei.value.response.headers
    assert ei.value.code == "rate_limit_exceeded"
    assert fake.stats()["faults_by_kind"] == {"rate_limit": 1} and fake.stats()["answered"] == 0


def test_enforced_request_budget(fake, client):
    fake.configure(rpm=2, enforce_rate_limits=True)
    client.chat.completions.create(model="m", messages=_msg(answer="1"))
    client.chat.completions.create(model="m", messages=_msg(answer="2"))
    with pytest.raises(openai.RateLimitError) as ei:
        client.chat.completions.create(model="m", messages=_msg(answer="3"))
    assert int(ei.value.response.headers["retry-after"]) >= 1
    assert ei.value.response.headers["x-ratelimit-remaining-requests"] == "0"


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors(fake, client, status):
    fake.configure(server_error=1.0, server_error_statuses=(status,))
    with pytest.raises(openai.InternalServerError) as ei:
        client.chat.completions.create(model="m", messages=_msg())
    assert ei.value.status_code == status


def test_timeout_then_drop_or_answer(fake):
    fake.configure(timeout=1.0, timeout_hold=0.6, timeout_then="answer")
    c = openai.OpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0, timeout=0.2)
    with pytest.raises(openai.APITimeoutError):
        c.chat.completions.create(model="m", messages=_msg())
    deadline = time.monotonic() + 3
    while fake.stats()["answered_after_disconnect"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    s = fake.stats()
    assert s["answered_after_disconnect"] == 1 and s["answered"] == 0 and s["faults_by_kind"] == {"timeout": 1}
    # a hold shorter than the client's timeout: "drop" closes the connection without an answer
    fake.configure(timeout_hold=0.05, timeout_then="drop")
    with pytest.raises(openai.APIConnectionError):
        openai.OpenAI(base_url=fake.base_url, api_key="x", max_retries=0, timeout=2).chat.completions.create(
            model="m", messages=_msg())


def test_malformed_bodies(fake):
    fake.configure(malformed=1.0, malformed_mode="invalid_json")
    lax = openai.OpenAI(base_url=fake.base_url, api_key="x", max_retries=0)
    with pytest.raises(json.JSONDecodeError):
        lax.chat.completions.create(model="m", messages=_msg())
    fake.configure(malformed_mode="missing_choices")
    strict = openai.OpenAI(base_url=fake.base_url, api_key="x", max_retries=0, _strict_response_validation=True)
    with pytest.raises(openai.APIResponseValidationError):
        strict.chat.completions.create(model="m", messages=_msg())
    assert not lax.chat.completions.create(model="m", messages=_msg()).choices  # lax: parsed, but no choices
    assert fake.stats()["answered"] == 0 and fake.stats()["faults_by_kind"] == {"malformed": 3}


def test_refusals(fake, client):
    fake.configure(refusal=1.0, refusal_mode="content")
    m = client.chat.completions.create(model="m", messages=_msg()).choices[0].message
    assert m.content == REFUSAL_TEXT and m.refusal is None
    fake.configure(refusal_mode="field")
    m = client.chat.completions.create(model="m", messages=_msg()).choices[0].message
    assert m.content is None and m.refusal == REFUSAL_TEXT
    assert fake.stats()["faults_by_kind"] == {"refusal": 2} and fake.stats()["answered"] == 2


def test_faults_are_deterministic_per_seed(fake, client):
    def run() -> list[str]:
        out = []
        for i in range(40):
            try:
                r = client.chat.completions.create(model="m", messages=_msg(answer=str(i)))
                out.append("refusal" if r.choices[0].message.refusal else "ok")
            except openai.RateLimitError:
                out.append("429")
            except openai.InternalServerError:
                out.append("5xx")
        return out

    fake.configure(seed=7, rate_limit=0.2, server_error=0.2, refusal=0.2, refusal_mode="field")
    first = run()
    fake.reset()
    assert run() == first
    assert {"ok", "429", "5xx", "refusal"} <= set(first)
    fake.reset()
    fake.configure(seed=8)
    assert run() != first


def test_fail_first_k_attempts_and_answered_twice(fake, client):
    fake.configure(fail_first=2, fail_first_kind="server_error", server_error_statuses=(503,))
    body = {"model": "m", "messages": _msg(answer="5")}
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(**body)
    assert client.chat.completions.create(**body).choices[0].message.content.endswith("5</CONCLUSION>")
    assert fake.counts(body) == (3, 1)
    assert fake.stats()["answered_twice"] == []
    client.chat.completions.create(**body)  # paid twice
    s = fake.stats()
    assert s["answered_twice"] == [request_key(body)] and fake.counts(body) == (4, 2)
    # the HTTP view of the same accounting, then a reset
    with urllib.request.urlopen(fake.url + "/_stats") as resp:
        assert json.load(resp)["answered_twice"] == [request_key(body)]
    urllib.request.urlopen(urllib.request.Request(fake.url + "/_reset", method="POST")).close()
    assert fake.stats()["received"] == 0 and fake.stats()["answered_twice"] == []


def _batch_jsonl(n: int, prefix: str = "r") -> bytes:
    return "".join(
        json.dumps({"custom_id": f"{prefix}{i}", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": "gpt-4o-mini", "messages": _msg(answer=f"a{i}", image=False)}}) + "\n"
        for i in range(n)
    ).encode()


def _poll(client, batch_id: str, limit: int = 10):
    statuses = []
    for _ in range(limit):
        b = client.batches.retrieve(batch_id)
        statuses.append(b.status)
        if b.status in ("completed", "failed", "expired", "cancelled"):
            return b, statuses
    raise AssertionError(f"batch never finished: {statuses}")


def _lines(client, file_id: str) -> list[dict]:
    return [json.loads(ln) for ln in client.files.content(file_id).text.splitlines() if ln.strip()]


def test_batch_round_trip(fake, client):
    fake.configure(batch_polls=3, batch_fail_fraction=0.3, seed=1)
    f = client.files.create(file=("in.jsonl", _batch_jsonl(20)), purpose="batch")
    assert f.purpose == "batch" and f.bytes > 0 and client.files.retrieve(f.id).id == f.id
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert b.status == "validating"
    b, statuses = _poll(client, b.id)
    assert statuses == ["in_progress", "in_progress", "completed"]
    rc = b.request_counts
    assert rc.total == 20 and rc.completed + rc.failed == 20 and 0 < rc.failed < 20
    out = _lines(client, b.output_file_id)
    err = _lines(client, b.error_file_id)
    assert len(out) == rc.completed and len(err) == rc.failed
    for row in out:
        assert row["error"] is None and row["response"]["status_code"] == 200
        i = row["custom_id"][1:]
        assert row["response"]["body"]["choices"][0]["message"]["content"].endswith(f"<CONCLUSION>a{i}</CONCLUSION>")
    assert all(r["response"]["status_code"] == 500 and r["response"]["body"]["error"] for r in err)
    assert {r["custom_id"] for r in out + err} == {f"r{i}" for i in range(20)}
    s = fake.stats()
    assert s["batch_lines_answered"] == rc.completed and s["answered_twice"] == []
    assert [x.id for x in client.batches.list()] == [b.id]
    assert client.files.delete(f.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)


def test_expired_batch_keeps_partial_output(fake, client):
    fake.configure(batch_polls=1, batch_expire_fraction=0.4)
    f = client.files.create(file=("in.jsonl", _batch_jsonl(10)), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    b, _ = _poll(client, b.id)
    assert b.status == "expired" and b.expired_at
    assert (b.request_counts.total, b.request_counts.completed, b.request_counts.failed) == (10, 4, 6)
    assert [r["custom_id"] for r in _lines(client, b.output_file_id)] == [f"r{i}" for i in range(4)]
    err = _lines(client, b.error_file_id)
    assert [r["custom_id"] for r in err] == [f"r{i}" for i in range(4, 10)]
    assert all(r["response"] is None and r["error"]["code"] == "batch_expired" for r in err)


def test_batch_cancel_and_invalid_lines(fake, client):
    f = client.files.create(file=("in.jsonl", _batch_jsonl(3)), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert client.batches.cancel(b.id).status == "cancelling"
    assert client.batches.retrieve(b.id).status == "cancelled"
    bad = _batch_jsonl(2) + b"not json\n" + _batch_jsonl(1)  # r0 repeated, plus a broken line
    f = client.files.create(file=("bad.jsonl", bad), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    b = client.batches.retrieve(b.id)
    assert b.status == "failed"
    assert sorted((e.code, e.line) for e in b.errors.data) == [("duplicate_custom_id", 4), ("invalid_json_line", 3)]


def test_batch_limits(fake, client):
    line = b'{"custom_id":"%d","method":"POST","url":"/v1/chat/completions","body":{}}\n'
    big = b"".join(line % i for i in range(50_001))
    f = client.files.create(file=("big.jsonl", big), purpose="batch")
    with pytest.raises(openai.BadRequestError, match="50,000"):
        client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    fake.configure(max_batch_bytes=1000)  # stands in for 200 MB
    with pytest.raises(openai.BadRequestError, match="too large"):
        client.files.create(file=("big.jsonl", big[:1001]), purpose="batch")


def test_standalone_process():
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server", "--port", "0", "--latency", "0.01",
         "--rate-limit", "1.0", "--retry-after", "3"],
        cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line
        base_url = line.split()[-1]
        c = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
        with pytest.raises(openai.RateLimitError) as ei:
            c.chat.completions.create(model="m", messages=_msg())
        assert ei.value.response.headers["retry-after"] == "3"
        root = base_url[: -len("/v1")]
        req = urllib.request.Request(root + "/_configure", data=json.dumps({"faults": {}}).encode(), method="POST")
        urllib.request.urlopen(req).close()
        assert c.chat.completions.create(model="m", messages=_msg(answer="9")).choices[0].message.content.endswith(
            "<CONCLUSION>9</CONCLUSION>")
        with urllib.request.urlopen(root + "/_stats") as resp:
            s = json.load(resp)
        assert s["received"] == 2 and s["answered"] == 1 and s["faults_by_kind"] == {"rate_limit": 1}
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


# -- the modes the teacher's defects needed -------------------------------------------------------


def test_429_without_rate_limit_headers(fake, client):
    fake.configure(rate_limit_bare=1.0, retry_after=2)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="m", messages=_msg())
    headers = info.value.response.headers
    assert headers["retry-after"] == "2" and not [h for h in headers if h.lower().startswith("x-ratelimit-")]
    fake.configure(faults={}, ratelimit_headers="none")  # every reply without them (Azure, vLLM, ...)
    raw = client.chat.completions.with_raw_response.create(model="m", messages=_msg())
    assert not [h for h in raw.headers if h.lower().startswith("x-ratelimit-")]
    fake.configure(ratelimit_headers="minus_one")
    raw = client.chat.completions.with_raw_response.create(model="m", messages=_msg())
    assert raw.headers["x-ratelimit-remaining-requests"] == "-1" and raw.headers["x-ratelimit-reset-requests"]


def test_insufficient_quota_and_an_unknown_model(fake, client):
    fake.configure(insufficient_quota=1.0)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="m", messages=_msg())
    assert info.value.code == "insufficient_quota" and "retry-after" not in info.value.response.headers
    fake.configure(faults={}, known_models=["gpt-4o"])
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-4o-typo", messages=_msg())
    assert info.value.code == "model_not_found"
    assert client.chat.completions.create(model="gpt-4o", messages=_msg()).choices[0].finish_reason == "stop"


def test_finish_reason_variants(fake, client):
    fake.configure(content_filter=1.0)
    r = client.chat.completions.create(model="m", messages=_msg())
    assert r.choices[0].finish_reason == "content_filter" and "<CONCLUSION>" not in r.choices[0].message.content
    fake.configure(faults={"length": 1.0})
    r = client.chat.completions.create(model="m", messages=_msg())
    assert r.choices[0].finish_reason == "length" and "</CONCLUSION>" not in r.choices[0].message.content
    fake.configure(faults={}, min_complete_tokens=500)
    r = client.chat.completions.create(model="m", messages=_msg(), max_tokens=20)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 20
    r = client.chat.completions.create(model="m", messages=_msg(), max_tokens=600)
    assert r.choices[0].finish_reason == "stop"


def test_prompt_caching_reports_a_repeated_prefix_of_1024_tokens_or_more(fake, client):
    long_system = "Follow these rules. " * 300  # ~1,500 tokens, the same in every request
    def msgs(q):
        return [{"role": "system", "content": long_system}, {"role": "user", "content": q}]
    first = client.chat.completions.create(model="m", messages=msgs("What is 1+1?"))
    again = client.chat.completions.create(model="m", messages=msgs("What is 2+2?"))
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    cached = again.usage.prompt_tokens_details.cached_tokens
    assert cached >= 1024 and cached % 128 == 0 and cached <= again.usage.prompt_tokens
    short = [{"role": "system", "content": "Short rules."}, {"role": "user", "content": "Hi"}]
    client.chat.completions.create(model="m", messages=short)
    assert client.chat.completions.create(model="m", messages=short).usage.prompt_tokens_details.cached_tokens == 0
    assert fake.stats()["usage"]["cached_tokens"] == cached
