"""The Batch API transport against the local server: splits at the API's limits, half price, the
finished part of an expired batch kept and the rest resubmitted, failed lines resubmitted, and
polling resumed after a restart without paying for a batch twice."""
import asyncio
import json
import sqlite3

import pyarrow.parquet as pq
import pytest

from pipeline.annotate.annotator import turns_of
from pipeline.annotate.backends import RequestRejected
from pipeline.annotate.batch import BatchTransport, split_lines
from pipeline.annotate.partition import annotate_partition
from pipeline.annotate.pricing import PriceTable
from pipeline.storage import Root
from tests.fakes.openai_server import default_responder
from tests.pipeline.annotate.conftest import close, make_annotator, write_toy_source


def batch_annotator(fake, folder, source_root, max_attempts=3, **transport):
    ann = make_annotator(fake, folder, source_root, max_attempts=max_attempts)
    opts = dict(poll_interval_s=0.05, gather_window_s=0.05, log=lambda *_: None, budget=ann.budget,
                resubmit_backoff_s=0.05)
    opts.update(transport)
    ann.transport = BatchTransport(ann.backend, ann.cache, ann.prices, **opts)
    return ann


def run(ann, toy, tmp_path, out="out"):
    source_root, sub = toy
    try:
        summary = annotate_partition("toy", sub, source_root, Root(str(tmp_path / out)), ann, log=lambda *_: None)
    finally:
        close(ann)
    return summary, pq.read_table(summary.annotations_path).to_pylist()


def batches(fake) -> list:
    """The server's batches in creation order."""
    return list(fake.server.batches.values())


def custom_ids(batch) -> list[str]:
    return [line["custom_id"] for line in batch.lines]


def file_data(fake, file_id) -> bytes:
    """A file's bytes, also after the client deleted it (the fake keeps them for tests)."""
    return (fake.server.files.get(file_id) or fake.server.deleted_files[file_id])["data"]


def error_ids(fake, batch) -> set[str]:
    data = file_data(fake, batch.error_file_id) if batch.error_file_id else b""
    return {json.loads(line)["custom_id"] for line in data.splitlines() if line.strip()}


def ledger(tmp_path) -> list[tuple]:
    db = sqlite3.connect(tmp_path / "requests.sqlite")
    try:
        return db.execute("SELECT key, model, mode, input_tokens, output_tokens, cost_usd FROM ledger").fetchall()
    finally:
        db.close()


def once_then(fake, **later):
    """A responder that answers normally and, the first time it is asked, reconfigures the server
    for every batch created from then on (a batch keeps the settings it was created with)."""
    done = []

    def responder(body):
        if not done:
            done.append(True)
            fake.configure(**later)
        return default_responder(body)

    return responder


# -- split_lines ---------------------------------------------------------------------------


def test_split_lines_respects_the_byte_limit_exactly():
    lines = [(f"k{i}", b"x" * 9 + b"\n") for i in range(10)]  # ten lines of 10 bytes
    assert [len(c) for c in split_lines(lines, max_bytes=30)] == [3, 3, 3, 1]  # 30 bytes fit exactly
    assert [len(c) for c in split_lines(lines, max_bytes=29)] == [2, 2, 2, 2, 2]  # 30 is one byte over
    assert [len(c) for c in split_lines(lines, max_bytes=100)] == [10]
    chunks = split_lines(lines, max_requests=4, max_bytes=25)
    assert [len(c) for c in chunks] == [2, 2, 2, 2, 2]
    assert [k for c in chunks for k, _ in c] == [k for k, _ in lines]  # order kept, nothing lost
    assert [len(c) for c in split_lines(lines, max_requests=4)] == [4, 4, 2]
    assert split_lines(lines[:1], max_bytes=10) == [lines[:1]]  # a line exactly at the limit fits
    with pytest.raises(RequestRejected, match="over the batch file limit"):
        split_lines(lines[:1], max_bytes=9)
    assert split_lines([]) == []


# -- against the server ----------------------------------------------------------------------


def test_requests_are_split_into_batches_and_booked_at_half_price(fake, tmp_path):
    toy = write_toy_source(tmp_path, 10)  # 10 rows, 12 assistant turns
    ann = batch_annotator(fake, tmp_path, toy[0], max_requests=5)
    summary, rows = run(ann, toy, tmp_path)
    assert len(rows) == 12 and {r["status"] for r in rows} == {"ok"}
    assert [len(b.lines) for b in batches(fake)] == [5, 5, 2]
    assert ann.transport.batches_submitted == 3 and {b.status for b in batches(fake)} == {"completed"}
    assert fake.stats()["requests"] == 0  # nothing went through the online endpoint
    assert fake.stats()["batch_lines_answered"] == 12 and fake.stats()["answered_twice"] == []

    booked = ledger(tmp_path)
    prices = PriceTable.default()
    assert len(booked) == 12 and {m for _, _, m, *_ in booked} == {"batch"}
    for _, model, _, tin, tout, cost in booked:
        assert tin > 0 and tout > 0
        assert cost == pytest.approx(prices.cost(model, tin, tout) / 2)
        assert cost == pytest.approx(prices.cost(model, tin, tout, batch=True))
    assert sum(r["cost_usd"] for r in rows) == pytest.approx(sum(b[-1] for b in booked))
    assert summary.stats["spent_usd"] == pytest.approx(sum(b[-1] for b in booked), abs=1e-6)


def test_an_expired_batch_keeps_its_finished_lines_and_resubmits_the_rest(fake, tmp_path):
    toy = write_toy_source(tmp_path, 10)
    fake.configure(batch_expire_fraction=0.5, responder=once_then(fake, batch_expire_fraction=None))
    ann = batch_annotator(fake, tmp_path, toy[0])
    summary, rows = run(ann, toy, tmp_path)
    assert len(rows) == 12 and {r["status"] for r in rows} == {"ok"}

    first, second = batches(fake)
    assert first.status == "expired" and first.counts == {"total": 12, "completed": 6, "failed": 6}
    finished, expired = custom_ids(first)[:6], custom_ids(first)[6:]
    assert error_ids(fake, first) == set(expired)
    # only the unfinished lines were sent again; the finished ones were kept
    assert sorted(custom_ids(second)) == sorted(expired) and second.status == "completed"
    assert not set(finished) & set(custom_ids(second))
    assert fake.stats()["batch_lines_answered"] == 12 and fake.stats()["answered_twice"] == []
    assert len(ledger(tmp_path)) == 12


def test_failed_lines_are_resubmitted_and_end_ok(fake, tmp_path):
    toy = write_toy_source(tmp_path, 10)
    fake.configure(batch_fail_fraction=0.4, seed=3, responder=once_then(fake, batch_fail_fraction=0.0))
    ann = batch_annotator(fake, tmp_path, toy[0])
    summary, rows = run(ann, toy, tmp_path)
    assert len(rows) == 12 and {r["status"] for r in rows} == {"ok"}

    first, second = batches(fake)
    failed = error_ids(fake, first)
    assert 0 < len(failed) < 12 and first.counts["failed"] == len(failed)
    assert sorted(custom_ids(second)) == sorted(failed)
    assert fake.stats()["batch_lines_answered"] == 12 and fake.stats()["answered_twice"] == []


def test_lines_that_keep_failing_end_as_errors_after_the_resubmissions(fake, tmp_path):
    toy = write_toy_source(tmp_path, 2)  # 2 turns
    fake.configure(batch_fail_fraction=1.0)
    ann = batch_annotator(fake, tmp_path, toy[0], max_resubmits=1)
    summary, rows = run(ann, toy, tmp_path)
    assert {r["status"] for r in rows} == {"error"}
    assert all("batch request failed 2 times" in r["reason"] for r in rows)
    assert len(batches(fake)) == 2  # the first submission and one resubmission
    assert ledger(tmp_path) == []


def turns_in(sub) -> list:
    return [t for r in pq.read_table(sub).to_pylist() for t in turns_of(r)]


def stop_when(ann, turns, condition) -> None:
    """Run the annotation until `condition()` holds, then stop it as a killed process would stop:
    leaving asyncio.run cancels the turns and the transport's flusher and pollers."""
    async def go():
        task = asyncio.create_task(ann.run(turns))
        while not condition():
            assert not task.done(), task
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())


def test_a_restart_mid_poll_resumes_the_recorded_batch_and_creates_no_new_one(fake, tmp_path):
    toy = write_toy_source(tmp_path, 10)
    source_root, sub = toy
    fake.configure(batch_seconds=1.0)  # the batch stays in progress for a second after creation

    first = batch_annotator(fake, tmp_path, source_root)
    stop_when(first, turns_in(sub), first.cache.open_batches)
    recorded = first.cache.open_batches()
    close(first)
    assert len(recorded) == 1 and len(batches(fake)) == 1
    batch_id, pairs = recorded[0]
    assert batches(fake)[0].id == batch_id and batches(fake)[0].status in ("validating", "in_progress")
    assert sorted(k for k, _ in pairs) == sorted(custom_ids(batches(fake)[0]))

    again = batch_annotator(fake, tmp_path, source_root)  # a fresh transport on the same cache file
    summary, rows = run(again, toy, tmp_path)
    assert len(rows) == 12 and {r["status"] for r in rows} == {"ok"}
    assert again.transport.resumed_batches == 1 and again.transport.batches_submitted == 0
    assert len(batches(fake)) == 1 and batches(fake)[0].status == "completed"
    assert fake.stats()["batch_lines_answered"] == 12 and fake.stats()["answered_twice"] == []
    assert fake.stats()["received"] == 12 and fake.stats()["requests"] == 0  # each line once, none online
    check = make_annotator(fake, tmp_path, source_root).cache
    try:
        assert check.open_batches() == [] and check.responses_count() == 12
    finally:
        check.close()


def stopped_here(reached: list):
    """Stands for the process dying at this point (the task running it is cancelled)."""
    def stop(*args, **kwargs):
        reached.append(True)
        raise asyncio.CancelledError()

    return stop


def test_a_run_stopped_after_the_api_created_a_batch_but_before_it_was_recorded_finds_it(fake, tmp_path):
    toy = write_toy_source(tmp_path, 10)
    source_root, sub = toy
    fake.configure(batch_seconds=0.5)
    first = batch_annotator(fake, tmp_path, source_root)
    reached: list = []
    first.cache.add_batch = stopped_here(reached)  # the batch exists at the API, its id is lost
    stop_when(first, turns_in(sub), lambda: reached)
    assert len(batches(fake)) == 1 and first.cache.open_batches() == []
    assert [f for f, *_ in first.cache.creating_batches()] == [batches(fake)[0].input_file_id]
    close(first)

    again = batch_annotator(fake, tmp_path, source_root)
    summary, rows = run(again, toy, tmp_path)
    assert len(rows) == 12 and {r["status"] for r in rows} == {"ok"}
    assert len(batches(fake)) == 1, "the batch was bought twice"
    assert again.transport.resumed_batches == 1 and again.transport.batches_submitted == 0
    assert fake.stats()["batch_lines_answered"] == 12 and fake.stats()["answered_twice"] == []
    check = make_annotator(fake, tmp_path, source_root).cache
    try:
        assert check.open_batches() == [] and check.creating_batches() == []
    finally:
        check.close()


def test_a_run_stopped_before_the_batch_was_created_sends_its_requests_again_once(fake, tmp_path):
    toy = write_toy_source(tmp_path, 10)
    source_root, sub = toy
    first = batch_annotator(fake, tmp_path, source_root)
    reached: list = []
    first.transport.client.batches.create = stopped_here(reached)  # uploaded, never created
    stop_when(first, turns_in(sub), lambda: reached)
    assert len(first.cache.creating_batches()) == 1 and batches(fake) == []
    close(first)

    again = batch_annotator(fake, tmp_path, source_root)
    summary, rows = run(again, toy, tmp_path)
    assert len(rows) == 12 and {r["status"] for r in rows} == {"ok"}
    assert len(batches(fake)) == 1 and len(batches(fake)[0].lines) == 12
    assert fake.stats()["batch_lines_answered"] == 12 and fake.stats()["answered_twice"] == []


def test_a_create_call_that_fails_after_the_batch_was_made_does_not_buy_it_twice(fake, tmp_path):
    toy = write_toy_source(tmp_path, 10)
    ann = batch_annotator(fake, tmp_path, toy[0])
    real_create = ann.transport.client.batches.create

    async def create_then_drop(**kwargs):
        await real_create(**kwargs)
        raise ConnectionError("the connection dropped before the reply")

    ann.transport.client.batches.create = create_then_drop
    summary, rows = run(ann, toy, tmp_path)
    assert len(rows) == 12 and {r["status"] for r in rows} == {"ok"}
    assert len(batches(fake)) == 1 and ann.transport.resumed_batches == 1
    assert fake.stats()["batch_lines_answered"] == 12 and fake.stats()["answered_twice"] == []


def test_files_are_deleted_once_stored_and_the_counts_are_right(fake, tmp_path):
    toy = write_toy_source(tmp_path, 10)
    ann = batch_annotator(fake, tmp_path, toy[0], max_requests=5)
    budget_path = tmp_path / "rate.sqlite"
    summary, rows = run(ann, toy, tmp_path)
    assert {r["status"] for r in rows} == {"ok"}
    assert fake.server.files == {}  # inputs and outputs of the three batches: all deleted
    assert len(fake.server.deleted_files) == 6 and ann.transport.files_deleted == 6
    assert summary.stats["calls"] == 12 and summary.batch  # calls_made counts every batch line
    assert summary.usd_per_accepted_turn == pytest.approx(summary.stats["spent_usd"] / 12, rel=1e-3)
    from pipeline.annotate.budget import SharedBudget

    budget = SharedBudget(budget_path)
    try:  # every reservation settled at its batch price
        assert budget.spent()["held"] == pytest.approx(0, abs=1e-12)
        assert budget.spent()["paid"] == pytest.approx(sum(b[-1] for b in ledger(tmp_path)))
    finally:
        budget.close()


def test_a_failed_batch_is_resubmitted_after_a_growing_backoff(fake, tmp_path, monkeypatch):
    from pipeline.annotate import batch as batch_module

    waits = []
    real_sleep = asyncio.sleep

    async def recording_sleep(seconds, *args, **kwargs):
        waits.append(seconds)
        await real_sleep(min(seconds, 0.01))

    monkeypatch.setattr(batch_module.asyncio, "sleep", recording_sleep)
    toy = write_toy_source(tmp_path, 4)  # 5 turns
    fake.configure(batch_fail_first=2)
    ann = batch_annotator(fake, tmp_path, toy[0], resubmit_backoff_s=7.0, poll_interval_s=0.01)
    summary, rows = run(ann, toy, tmp_path)
    assert {r["status"] for r in rows} == {"ok"}
    assert [b.status for b in batches(fake)] == ["failed", "failed", "completed"]
    assert 7.0 in waits and 14.0 in waits  # the first resubmission after 7 s, the second after 14 s
    assert summary.stats["calls"] == 15  # five requests, sent three times
