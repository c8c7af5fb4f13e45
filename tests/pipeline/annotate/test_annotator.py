"""The teacher against a local OpenAI-compatible server, through the real openai client."""
import pyarrow.parquet as pq
import pytest

from pipeline.annotate import prompts
from pipeline.annotate.annotator import FINAL
from pipeline.annotate.partition import annotate_partition
from pipeline.storage import Root
from tests.fakes.openai_server import RETRYABLE_KINDS as ALL_FAULTS  # every kind a run survives
from tests.pipeline.annotate.conftest import close, make_annotator, write_toy_source


def run(fake, tmp_path, toy_source, out="out", policy="missing", **settings):
    """annotate_partition with `make_annotator(**settings)`: (summary, rows, annotator)."""
    source_root, sub = toy_source
    ann = make_annotator(fake, tmp_path, source_root, **settings)
    try:
        summary = annotate_partition("toy", sub, source_root, Root(str(tmp_path / out)), ann, policy=policy,
                                     log=lambda *_: None)
    finally:
        close(ann)
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
    fake.configure(fault_rate=0.3, fault_kinds=list(ALL_FAULTS), seed=7)
    summary, rows, ann = run(fake, tmp_path, write_toy_source(tmp_path, 80), timeout_s=0.5)  # the fake stalls 1 s
    assert len(rows) == 100
    assert all(r["status"] in FINAL for r in rows)
    assert sum(r["status"] == "ok" for r in rows) >= 95
    faults = fake.stats()["faults_by_kind"]
    assert set(faults) == set(ALL_FAULTS), faults
    transport = ("rate_limit", "rate_limit_bare", "server_error", "timeout", "malformed")  # the rest are replies
    assert sum(ann.stats.faults.values()) >= sum(v for k, v in faults.items() if k in transport)
    assert fake.stats()["answered_twice"] == []


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
    monkeypatch.setattr(prompts, "PROMPT_VERSION", "v3")
    monkeypatch.setattr(prompts, "SYSTEM", prompts.SYSTEM + "\nBe concise.")
    # four turns were already written under the new version: only the other eleven are stale
    for r in table[:4]:
        r["prompt_version"] = "v3"
    import pyarrow as pa

    from pipeline import schema
    pq.write_table(pa.Table.from_pylist(table, schema=schema.ANNOTATION), out)
    summary, rows, ann = run(fake, tmp_path, toy_source)
    assert summary.stale == {"stale_prompt": 11} and summary.kept == 4
    assert fake.stats()["received"] - received == 11 == ann.stats.calls
    assert {r["prompt_version"] for r in rows} == {"v3"}


def test_the_spend_cap_stops_new_calls_and_leaves_turns_pending(fake, tmp_path, toy_source):
    # each request reserves what it can cost at most (2,048 output tokens at $10/M: ~$0.022) before
    # it is sent, and costs ~$0.0025: a $0.05 cap lets two start, and a few more as the first settle
    summary, rows, ann = run(fake, tmp_path, toy_source, max_spend_usd=0.05, max_concurrency=2)
    pending = [r for r in rows if r["status"] == "pending"]
    done = [r for r in rows if r["status"] == "ok"]
    assert pending and done and len(pending) + len(done) == 15
    assert ann.stats.spent_usd <= 0.05
    assert all("spending cap $0.05 reached" in r["reason"] for r in pending)
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


def test_a_429_pauses_everyone_only_when_the_budget_is_spent_or_429s_keep_coming(fake, tmp_path, toy_source):
    from pipeline.annotate.backends import TransientError

    ann = make_annotator(fake, tmp_path, toy_source[0])
    try:
        burst = TransientError("rate_limit", "429", 1.0, remaining=(50, 100_000))
        spent = TransientError("rate_limit", "429", 1.0, remaining=(0, 100_000))
        bare = TransientError("rate_limit", "429", 1.0)  # no x-ratelimit-* headers (Azure, vLLM, ...)
        assert ann._wait_after(burst, 0, 2_000) == 1.0 and ann.stats.pauses == 0  # only this request waits
        assert ann._wait_after(bare, 0, 2_000) == 1.0 and ann.stats.pauses == 0  # no headers: still only this one
        assert ann._wait_after(spent, 0, 2_000) == 1.0 and ann.stats.pauses == 1  # the headers say the budget is spent
        for _ in range(10):  # then 429s keep coming: everyone pauses
            ann._wait_after(bare, 0, 2_000)
        assert ann.stats.pauses > 1
    finally:
        close(ann)


def record_sleeps(monkeypatch) -> list:
    import asyncio

    from pipeline.annotate import annotator as annotator_module

    waits = []
    real_sleep = asyncio.sleep

    async def recording_sleep(seconds, *args, **kwargs):
        waits.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(annotator_module.asyncio, "sleep", recording_sleep)
    return waits


def test_429s_with_retry_after_are_honoured_and_the_turns_finish(fake, tmp_path, toy_source, monkeypatch):
    waits = record_sleeps(monkeypatch)
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


# -- what a refusal is -------------------------------------------------------------------------

FOUR = "<SUMMARY>{s}</SUMMARY><CAPTION>{c}</CAPTION><REASONING>{r}</REASONING><CONCLUSION>{k}</CONCLUSION>"


def answer_of(body) -> str:
    """The standard answer a generation request carries ("" for a judge request)."""
    import re

    text = body["messages"][1]["content"]
    text = text if isinstance(text, str) else text[-1]["text"]
    found = re.search(r"^Standard answer: (.*)$", text, re.MULTILINE)
    return found.group(1) if found else ""


def test_hedged_but_correct_answers_are_accepted_at_the_first_attempt(fake, tmp_path, toy_source):
    def responder(body):
        return FOUR.format(
            s="I cannot be sure of every detail, so I will read what is visible and work from it.",
            c="I can't make out the small print, but the main objects are clear.",
            r="I cannot determine the exact value from the image alone, but the visible parts point to "
              f"{answer_of(body)}. I'm unable to see the back of the scene, which does not change this.",
            k=answer_of(body))

    fake.configure(responder=responder)
    summary, rows, ann = run(fake, tmp_path, toy_source, max_attempts=3)
    assert {r["status"] for r in rows} == {"ok"} and {r["attempts"] for r in rows} == {1}
    assert fake.stats()["received"] == 15  # nothing paid twice, nothing paid three times
    assert all("I cannot determine the exact value" in r["reasoning"] for r in rows)


REFUSALS = {
    "plain": ("content", "I'm sorry, but I can't assist with that."),
    "before the tags": ("content", "I'm sorry, I can't help identify people in images. " + FOUR.format(
        s="s", c="c", r="r", k="unknown")),
    "in the conclusion": ("content", FOUR.format(s="The question asks about the image.", c="A scene.",
                                                 r="Looking at it.", k="I'm sorry, but I can't help with that.")),
    "no answer in the conclusion": ("content", FOUR.format(s="The question asks about the image.", c="A scene.",
                                                           r="Looking at it.", k="It cannot be determined from the image.")),
    "the API's refusal field": ("field", "I'm sorry, I can't help with that request."),
}


@pytest.mark.parametrize("shape", sorted(REFUSALS))
def test_real_refusal_shapes_end_refused(fake, tmp_path, toy_source, shape):
    mode, text = REFUSALS[shape]
    if mode == "field":
        fake.configure(refusal=1.0, refusal_mode="field")
    else:
        fake.configure(responder=lambda body: text)
    summary, rows, _ = run(fake, tmp_path, toy_source, max_attempts=2)
    assert {r["status"] for r in rows} == {"refused"}, {r["reason"] for r in rows}
    assert all(r["attempts"] == 2 for r in rows)


def test_content_filtered_answers_are_refused_with_the_reason_and_each_retry_is_a_new_request(fake, tmp_path, toy_source):
    fake.configure(content_filter=1.0)
    summary, rows, _ = run(fake, tmp_path, toy_source, max_attempts=2)
    assert {r["status"] for r in rows} == {"refused"}
    assert all("content filter" in r["reason"] for r in rows)
    stats = fake.stats()
    assert stats["distinct"] == stats["received"] == 30  # the retry is not answered from the cache
    assert "format" not in str(fake.stats())  # (and no format complaint was ever sent: see below)


def test_truncated_answers_are_asked_again_with_a_larger_budget_never_a_format_complaint(fake, tmp_path, toy_source):
    seen = []
    fake.configure(min_complete_tokens=3000, responder=lambda body: seen.append(body) or
                   __import__("tests.fakes.openai_server", fromlist=["x"]).default_responder(body))
    summary, rows, _ = run(fake, tmp_path, toy_source, max_tokens=1024, max_tokens_cap=4096)
    assert {r["status"] for r in rows} == {"ok"} and {r["attempts"] for r in rows} == {3}
    assert sorted({b["max_tokens"] for b in seen if "verdict" not in str(b)}) == [1024, 2048, 4096]
    assert not any("not accepted" in str(b["messages"]) for b in seen)  # the same prompt, only a larger budget

    fake.configure(min_complete_tokens=10_000)
    summary, rows, _ = run(fake, tmp_path, toy_source, out="out2", max_tokens=1024, max_tokens_cap=2048)
    assert {r["status"] for r in rows} == {"invalid"}
    assert all(r["reason"].startswith("truncated") and "2048" in r["reason"] for r in rows)


def test_a_multiple_choice_conclusion_is_the_bare_option(fake, tmp_path, toy_source):
    fake.configure(responder=lambda body: FOUR.format(s="Compare the options.", c="Four shapes.",
                                                      r="The second one has four equal sides.", k="B. square"))
    summary, rows, _ = run(fake, tmp_path, toy_source, max_attempts=1)
    mc = [r for r in rows if r["sample_id"] in ("toy/0", "toy/4", "toy/8")]
    assert {r["status"] for r in mc} == {"ok"} and {r["conclusion"] for r in mc} == {"B"}
    assert all(r["response"].endswith("<CONCLUSION>\nB\n</CONCLUSION>") for r in mc)
    assert "only the letter of the correct option" in prompts.SYSTEM


# -- prices, and an answer cached before anything that can fail after it --------------------------


def test_a_judge_model_without_a_price_stops_before_the_first_request(fake, tmp_path, toy_source):
    from pipeline.annotate.pricing import UnknownPrice

    with pytest.raises(UnknownPrice, match=r"gpt-4o-mini-2099-01-01.*nothing was sent.*LLAVACOT_TEACHER_PRICE_IN"):
        make_annotator(fake, tmp_path, toy_source[0], judge_model="gpt-4o-mini-2099-01-01")
    assert fake.stats()["received"] == 0


def test_an_answer_paid_for_is_never_bought_again_when_the_judge_fails_after_it(fake, tmp_path, toy_source):
    from pipeline.annotate.backends import TeacherUnusable

    def responder(body):  # free-text conclusions: every turn needs the judge
        if not answer_of(body):
            return "valid"
        return FOUR.format(s="s", c="c", r="r", k="a picture of some thing or other")

    fake.configure(responder=responder, known_models=["gpt-4o"])  # the judge model does not exist there
    with pytest.raises(TeacherUnusable, match="not found"):
        run(fake, tmp_path, toy_source, judge_model="gpt-4o-mini", max_attempts=1)
    first = fake.stats()["answered"]
    assert first > 0
    fake.configure(known_models=None)  # fixed: the run is repeated
    summary, rows, _ = run(fake, tmp_path, toy_source, judge_model="gpt-4o-mini", max_attempts=1)
    assert {r["judge_verdict"] for r in rows} == {"valid"} and {r["status"] for r in rows} == {"ok"}
    assert fake.stats()["answered_twice"] == []  # the generation answers came from the cache


def test_cached_prompt_tokens_are_counted_at_the_cached_price(fake, tmp_path, toy_source):
    from pipeline.annotate.pricing import PriceTable

    summary, rows, ann = run(fake, tmp_path, toy_source, detail="auto")  # 765-token images: a prefix over 1,024
    usage = fake.stats()["usage"]
    assert usage["cached_tokens"] > 0 and ann.stats.cached_tokens == usage["cached_tokens"]
    table = PriceTable.default()
    paid = sum(r["cost_usd"] for r in rows)
    full = table.cost("gpt-4o", usage["prompt_tokens"], usage["completion_tokens"])
    discounted = full - usage["cached_tokens"] * (2.50 - 1.25) / 1e6
    assert paid == pytest.approx(discounted) and paid < full


def test_questions_about_one_image_are_sent_together_and_small_images_go_at_low_detail(fake, tmp_path, toy_source):
    order = []
    fake.configure(responder=lambda body: order.append(str(body["messages"][1]["content"][0]["image_url"]))
                   or __import__("tests.fakes.openai_server", fromlist=["x"]).default_responder(body))
    run(fake, tmp_path, toy_source, max_concurrency=1)
    runs = [u for i, u in enumerate(order) if i == 0 or u != order[i - 1]]
    assert len(runs) == 3  # three images, each one's questions in one stretch
    assert all("'detail': 'low'" in u for u in order)  # 64x48 images fit in 512x512: nothing is lost


# -- a dead account, a bad key, an unknown model: stop at once --------------------------------------


@pytest.mark.parametrize("fault, message", [
    (dict(insufficient_quota=1.0), "no quota left"),
    (dict(api_key="sk-the-right-one"), "rejected the API key"),
    (dict(known_models=["gpt-4o-2024-11-20"]), "'gpt-4o' was not found"),
])
def test_an_unusable_teacher_stops_the_run_at_once_with_a_clear_message(fake, tmp_path, fault, message):
    from pipeline.annotate.backends import TeacherUnusable
    from tests.pipeline.annotate.conftest import API_KEY

    fake.configure(**fault)
    with pytest.raises(TeacherUnusable, match=message) as info:
        run(fake, tmp_path, write_toy_source(tmp_path, 80), max_concurrency=8)
    assert API_KEY not in str(info.value) and "SECRET" not in str(info.value)
    assert fake.stats()["requests"] <= 8 + 1  # the requests already in flight, none retried or started after
    assert not (tmp_path / "out" / "annotations.parquet").exists()


# -- 429s -------------------------------------------------------------------------------------------


def test_a_429_without_budget_headers_delays_only_its_own_request(fake, tmp_path, monkeypatch):
    waits = record_sleeps(monkeypatch)
    fake.configure(ratelimit_headers="none", rate_limit_bare=0.15, seed=5, retry_after=0.3)
    summary, rows, ann = run(fake, tmp_path, write_toy_source(tmp_path, 40))
    refused = fake.stats()["faults_by_kind"]["rate_limit_bare"]
    assert refused > 0 and {r["status"] for r in rows} == {"ok"}
    assert ann.stats.pauses == 0 and ann.budget.waited_s == 0  # nobody else was held
    assert waits.count(0.3) == refused == ann.stats.faults["rate_limit"]


def test_429s_that_keep_coming_pause_everyone(fake, tmp_path, monkeypatch):
    fake.configure(ratelimit_headers="minus_one", fail_first=3, fail_first_kind="rate_limit_bare", retry_after=0.2)
    summary, rows, ann = run(fake, tmp_path, write_toy_source(tmp_path, 12))
    assert {r["status"] for r in rows} == {"ok"}
    assert ann.stats.pauses > 0 and ann.budget.waited_s > 0  # the shared budget held the other requests


# -- the estimate before a run ------------------------------------------------------------------------


def test_the_estimate_takes_image_sizes_from_the_rows_and_opens_no_image(fake, tmp_path):
    from pipeline.annotate.annotator import turns_of
    from tests.pipeline.annotate.conftest import sample_rows

    rows = [dict(r, image_width=640, image_height=480) for r in sample_rows(400)]
    turns = [t for r in rows for t in turns_of(r)]
    ann = make_annotator(fake, tmp_path, None)

    def no_reading(path):
        raise AssertionError("the estimate opened an image")

    ann.load_image = ann.open_image = no_reading
    try:
        e = ann.estimate(turns)
        assert e["turns"] == 500 and e["generation_requests"] == 500 and e["requests"] == 500 + e["judge_requests"]
        assert e["input_tokens"] > 500 * (85 + 170 * 4) and e["output_tokens"] >= 500 * 600
        assert e["usd"] > 0 and fake.stats()["received"] == 0
        ann.transport = object()  # the Batch API: half the price
        assert ann.estimate(turns)["usd"] == pytest.approx(e["usd"] / 2, rel=1e-3)
    finally:
        close(ann)


def test_the_estimate_reads_each_image_header_once(fake, tmp_path, toy_source):
    from pipeline.annotate.annotator import turns_of
    from tests.pipeline.annotate.conftest import sample_rows

    source_root, _ = toy_source
    opened = []
    ann = make_annotator(fake, tmp_path, source_root)
    ann.open_image = lambda rel: opened.append(rel) or source_root.open(rel, "rb")
    try:
        turns = [t for r in sample_rows(30) for t in turns_of(r)]
        e = ann.estimate(turns)
        assert sorted(opened) == ["img/0.png", "img/1.png", "img/2.png"]
        assert ann.image_sizes(turns) == {f"img/{i}.png": (64, 48) for i in range(3)}
        # 64x48 images go at low detail: 85 tokens each
        assert e["input_tokens"] < len(turns) * (85 + 600)
    finally:
        close(ann)


def test_an_image_is_read_and_encoded_once_for_the_turns_about_it(fake, tmp_path, toy_source):
    source_root, _ = toy_source
    reads = []
    ann = make_annotator(fake, tmp_path, source_root)
    load = ann.load_image
    ann.load_image = lambda rel: reads.append(rel) or load(rel)
    ann.open_image = lambda rel: source_root.open(rel, "rb")  # the estimate's header reads
    try:
        summary = annotate_partition("toy", toy_source[1], source_root, Root(str(tmp_path / "out")), ann,
                                     log=lambda *_: None)
    finally:
        close(ann)
    assert summary.by_status == {"ok": 15} and sorted(reads) == ["img/0.png", "img/1.png", "img/2.png"]
    # a per-sample rendering (marks drawn for one sample): once per sample, its two turns share it
    reads.clear()
    ann = make_annotator(fake, tmp_path, source_root)
    ann.load_image = lambda rel: reads.append(rel) or load(rel)
    ann.open_image = lambda rel: source_root.open(rel, "rb")
    ann.prepare_image = lambda data, turn: data
    try:
        annotate_partition("toy", toy_source[1], source_root, Root(str(tmp_path / "out2")), ann, log=lambda *_: None)
    finally:
        close(ann)
    assert len(reads) == 12  # 12 samples, 15 turns
