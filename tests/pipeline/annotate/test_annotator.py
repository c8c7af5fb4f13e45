"""The teacher against a local OpenAI-compatible server, through the real openai client."""
import pyarrow.parquet as pq
import pytest

from pipeline.annotate import prompts
from pipeline.annotate.annotator import FINAL
from pipeline.annotate.partition import annotate_partition
from pipeline.storage import Root
from tests.pipeline.annotate.conftest import make_annotator, write_toy_source

ALL_FAULTS = ["rate_limit", "server_error", "timeout", "malformed", "refusal"]


def run(fake, tmp_path, toy_source, out="out", policy="missing", **settings):
    source_root, sub = toy_source
    ann = make_annotator(fake, tmp_path, source_root, **settings)
    try:
        summary = annotate_partition("toy", sub, source_root, Root(str(tmp_path / out)), ann, policy=policy,
                                     log=lambda *_: None)
    finally:
        ann.cache.close()
    rows = pq.read_table(summary.annotations_path).to_pylist()
    return summary, rows, ann


def test_every_turn_is_annotated_and_accepted(fake, tmp_path, toy_source):
    summary, rows, _ = run(fake, tmp_path, toy_source)
    assert summary.turns == 15 and len(rows) == 15
    assert {r["status"] for r in rows} == {"ok"}
    second_turns = [r for r in rows if r["turn_index"] == 1]
    assert len(second_turns) == 3 and all(r["conclusion"] == "2" for r in second_turns)
    mc = next(r for r in rows if r["sample_id"] == "toy/0")
    assert mc["conclusion"] == "B" and mc["judge_verdict"] == "rule:option_letter"
    assert all(r["teacher_model"] == "gpt-4o" and r["prompt_version"] == prompts.PROMPT_VERSION for r in rows)
    assert all(r["input_tokens"] > 0 and r["cost_usd"] > 0 for r in rows)


def test_faults_of_every_kind_end_with_every_turn_final(fake, tmp_path):
    fake.configure(fault_rate=0.2, fault_kinds=ALL_FAULTS, seed=7)
    summary, rows, ann = run(fake, tmp_path, write_toy_source(tmp_path, 80))
    assert len(rows) == 100
    assert all(r["status"] in FINAL for r in rows)
    assert sum(r["status"] == "ok" for r in rows) >= 95
    faults = fake.stats()["faults_by_kind"]
    assert set(faults) >= {"rate_limit", "server_error", "timeout", "malformed"}, faults
    assert sum(ann.stats.faults.values()) >= sum(v for k, v in faults.items() if k != "refusal")


def test_a_second_run_with_nothing_changed_makes_no_call(fake, tmp_path, toy_source):
    run(fake, tmp_path, toy_source)
    received = fake.stats()["received"]
    # a fresh output folder: nothing kept, so every turn goes through the cache
    summary, rows, ann = run(fake, tmp_path, toy_source, out="out2")
    assert fake.stats()["received"] == received
    assert ann.stats.calls == 0 and ann.stats.cache_hits == 15
    assert {r["status"] for r in rows} == {"ok"}
    # the same output folder: every turn is kept without even a cache lookup
    summary, _, ann = run(fake, tmp_path, toy_source)
    assert summary.kept == 15 and summary.sent == 0 and ann.stats.cache_hits == 0


def test_a_prompt_version_bump_resends_exactly_the_affected_turns(fake, tmp_path, toy_source, monkeypatch):
    run(fake, tmp_path, toy_source)
    received = fake.stats()["received"]
    out = tmp_path / "out" / "annotations.parquet"
    table = pq.read_table(out).to_pylist()
    monkeypatch.setattr(prompts, "PROMPT_VERSION", "v2")
    monkeypatch.setattr(prompts, "SYSTEM", prompts.SYSTEM + "\nBe concise.")
    # four turns were already written under the new version: only the other eleven are stale
    for r in table[:4]:
        r["prompt_version"] = "v2"
    import pyarrow as pa

    from pipeline import schema
    pq.write_table(pa.Table.from_pylist(table, schema=schema.ANNOTATION), out)
    summary, rows, ann = run(fake, tmp_path, toy_source)
    assert summary.stale == {"stale_prompt": 11} and summary.kept == 4
    assert fake.stats()["received"] - received == 11 == ann.stats.calls
    assert {r["prompt_version"] for r in rows} == {"v2"}


def test_the_spend_cap_stops_new_calls_and_leaves_turns_pending(fake, tmp_path, toy_source):
    # each request reserves about 2k output tokens at $10/M, so a $0.09 cap admits only a few
    summary, rows, ann = run(fake, tmp_path, toy_source, max_spend_usd=0.09, max_concurrency=2)
    pending = [r for r in rows if r["status"] == "pending"]
    done = [r for r in rows if r["status"] == "ok"]
    assert pending and done and len(pending) + len(done) == 15
    assert ann.stats.spent_usd <= 0.09
    assert fake.stats()["received"] == ann.stats.calls == len(done)
    # raising the cap finishes the pending turns and re-buys nothing
    summary, rows, ann = run(fake, tmp_path, toy_source, max_spend_usd=10.0)
    assert summary.stale == {"pending": len(pending)} and ann.stats.calls == len(pending)
    assert {r["status"] for r in rows} == {"ok"}
    assert fake.stats()["answered_twice"] == []


def test_refusals_and_wrong_answers_are_retried_with_the_reason(fake, tmp_path, toy_source):
    seen = []

    def responder(body):
        text = str(body["messages"])
        seen.append(body["messages"])
        if "previous answer was not accepted" in text:
            return "<SUMMARY>s</SUMMARY><CAPTION>c</CAPTION><REASONING>r</REASONING><CONCLUSION>B</CONCLUSION>"
        if "Which shape" in text:
            return "I'm sorry, but I can't help with that."
        return "<SUMMARY>s</SUMMARY><CAPTION>c</CAPTION><REASONING>r</REASONING><CONCLUSION>zzz</CONCLUSION>"

    fake.configure(responder=responder)
    summary, rows, _ = run(fake, tmp_path, toy_source, max_attempts=2)
    mc = [r for r in rows if r["sample_id"] in ("toy/0", "toy/4", "toy/8")]
    assert all(r["status"] == "ok" and r["attempts"] == 2 for r in mc)
    numeric = next(r for r in rows if r["sample_id"] == "toy/1")
    assert numeric["status"] == "invalid" and "disagrees" in numeric["reason"] and numeric["attempts"] == 2
    retries = [m for m in seen if any("not accepted" in str(x.get("content")) for x in m)]
    assert any("declined" in str(m[-1]["content"]) for m in retries)
    assert any("does not agree" in str(m[-1]["content"]) for m in retries)


def test_the_judge_decides_only_what_rules_cannot(fake, tmp_path, toy_source):
    def responder(body):
        system = body["messages"][0]["content"]
        if "verdict" in system.lower():
            return "valid"
        return ("<SUMMARY>s</SUMMARY><CAPTION>c</CAPTION><REASONING>r</REASONING>"
                "<CONCLUSION>It has a crimson hue, like 9 others</CONCLUSION>")

    fake.configure(responder=responder)
    summary, rows, _ = run(fake, tmp_path, toy_source, max_attempts=1)
    colour = next(r for r in rows if r["sample_id"] == "toy/2")
    assert colour["status"] == "ok" and colour["judge_verdict"] == "valid"
    count = next(r for r in rows if r["sample_id"] == "toy/1")
    # a number answer is decided by rule, no judge call
    assert count["judge_verdict"] == "rule:number" and count["status"] == "invalid"


def test_retry_failed_policy_sends_refused_turns_again_in_a_new_round(fake, tmp_path, toy_source):
    fake.configure(responder=lambda body: "I'm sorry, but I can't help with that.")
    summary, rows, _ = run(fake, tmp_path, toy_source, max_attempts=1)
    assert {r["status"] for r in rows} == {"refused"}
    fake.configure(responder=None)
    # a plain re-run keeps them (nothing is re-bought) ...
    summary, rows, ann = run(fake, tmp_path, toy_source, max_attempts=1)
    assert ann.stats.calls == 0 and {r["status"] for r in rows} == {"refused"}
    # ... the re-annotation policy sends them again, as new requests
    summary, rows, ann = run(fake, tmp_path, toy_source, max_attempts=1, policy="retry_failed")
    assert summary.stale == {"retry_refused": 15} and ann.stats.calls == 15
    assert {r["status"] for r in rows} == {"ok"} and {r["round"] for r in rows} == {1}


def test_bad_credentials_stop_the_run_with_a_clear_error(fake, tmp_path, toy_source):
    from pipeline.annotate.backends import TeacherUnusable

    fake.configure(api_key="sk-the-right-one")
    with pytest.raises(TeacherUnusable, match="refused the credentials") as info:
        run(fake, tmp_path, toy_source)
    assert "SECRET" not in str(info.value)


def test_a_429_pauses_everyone_only_when_the_budget_is_spent(fake, tmp_path, toy_source):
    from pipeline.annotate.backends import TransientError

    ann = make_annotator(fake, tmp_path, toy_source[0])
    try:
        burst = TransientError("rate_limit", "429", 1.0, remaining=(50, 100_000))
        spent = TransientError("rate_limit", "429", 1.0, remaining=(0, 100_000))
        unknown = TransientError("rate_limit", "429", 1.0)
        assert ann._pause_everyone(burst, 2_000) is False  # budget remains: only this request waits
        assert ann._pause_everyone(spent, 2_000) is True
        assert ann._pause_everyone(unknown, 2_000) is True  # no headers: be careful
        ann._429_streak = 5
        assert ann._pause_everyone(burst, 2_000) is True  # refusals keep coming whatever the headers say
    finally:
        ann.cache.close()


def test_429s_with_retry_after_are_honoured_and_the_turns_finish(fake, tmp_path, toy_source, monkeypatch):
    import asyncio

    from pipeline.annotate import annotator as annotator_module

    waits = []
    real_sleep = asyncio.sleep

    async def recording_sleep(seconds, *args, **kwargs):
        waits.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(annotator_module.asyncio, "sleep", recording_sleep)
    fake.configure(fail_first=2, fail_first_kind="rate_limit", retry_after=0.3)
    summary, rows, ann = run(fake, tmp_path, toy_source)
    assert {r["status"] for r in rows} == {"ok"}
    assert ann.stats.faults["rate_limit"] == 2 * 15  # each request refused twice, then answered
    assert waits.count(0.3) == 30  # every refusal waited exactly its Retry-After


def test_identical_requests_in_flight_are_paid_for_once(fake, tmp_path):
    import pyarrow as pa

    from pipeline import schema
    from tests.pipeline.annotate.conftest import sample_rows

    source_root, sub = write_toy_source(tmp_path, 4)
    rows = sample_rows(4)
    twins = [dict(r, id=r["id"] + "-copy") for r in rows[:3]]  # same question, answer and image
    pq.write_table(pa.Table.from_pylist(rows + twins, schema=schema.SAMPLE), sub)
    summary, out_rows, ann = run(fake, tmp_path, (source_root, sub))
    assert len(out_rows) == 5 + 3 and {r["status"] for r in out_rows} == {"ok"}
    assert fake.stats()["received"] == 5  # the three copies rode on their twins' requests
    assert fake.stats()["answered_twice"] == []
