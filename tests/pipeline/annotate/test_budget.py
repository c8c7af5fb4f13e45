"""The shared budget: rate buckets and the spending cap, across budgets opened on one store (other
partitions, runs, processes, and through PostgreSQL other hosts), with reservations written before
a request is sent."""
import asyncio
import threading
import uuid

import pyarrow.parquet as pq
import pytest

from pipeline.annotate.budget import SharedBudget, SpendCapReached
from pipeline.annotate.partition import annotate_partition
from pipeline.storage import Root
from tests.pipeline.annotate.conftest import close, make_annotator, write_toy_source


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL server (tests/postgres.py, the team deployment's test helper)."""
    helper = pytest.importorskip("tests.postgres", reason="the PostgreSQL test helper (tests/postgres.py)")
    bin_dir = helper.binaries()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (scripts/test.sh installs Debian's postgresql)")
    with helper.throwaway_server(bin_dir) as server:
        yield f"postgresql://{server.user}@{server.host}:{server.port}/{server.database}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    """(where, names): a SQLite file, or a PostgreSQL database (as other hosts would reach it),
    with budget names of this test's own."""
    names = dict(name=f"endpoint-{uuid.uuid4().hex[:8]}", budget=f"budget-{uuid.uuid4().hex[:8]}")
    if request.param == "sqlite":
        return tmp_path / "b.db", names
    return request.getfixturevalue("postgres"), names


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def granted(budget, *asks, timeout=0.2) -> list:
    """Ask for each (tokens, usd) in turn: the reservation id, 'cap', or 'waits'."""
    async def go():
        out = []
        for tokens, usd in asks:
            try:
                out.append(await asyncio.wait_for(budget.acquire(tokens, usd, key="k", model="m"), timeout))
            except SpendCapReached:
                out.append("cap")
            except asyncio.TimeoutError:
                out.append("waits")
        return out

    return asyncio.run(go())


def test_buckets_refuse_past_the_budget_and_refill_over_time(store):
    where, names = store
    clock = Clock()
    b = SharedBudget(where, rpm=60, tpm=1000, clock=clock, **names)
    assert "waits" not in granted(b, *[(100, 0)] * 9)
    assert granted(b, (200, 0)) == ["waits"]  # 100 tokens left
    clock.t += 6  # 100 tokens refilled (1000/min)
    assert granted(b, (200, 0)) != ["waits"]
    b.close()


def test_two_budgets_on_one_store_share_the_rate_and_a_pause(store):
    where, names = store
    clock = Clock()
    a = SharedBudget(where, rpm=2, tpm=10_000, clock=clock, **names)
    b = SharedBudget(where, rpm=2, tpm=10_000, clock=clock, **names)
    assert "waits" not in granted(a, (1, 0)) + granted(b, (1, 0))
    assert granted(a, (1, 0)) == ["waits"] and granted(b, (1, 0)) == ["waits"]  # two a minute between them
    clock.t += 60
    a.pause(3)
    assert granted(b, (1, 0)) == ["waits"]  # b holds too
    clock.t += 3
    assert granted(b, (1, 0)) != ["waits"]
    a.close()
    b.close()


def test_the_spending_cap_holds_across_runs_and_counts_what_a_kill_lost(store):
    path, names = store
    first = SharedBudget(path, cap_usd=1.0, **names)
    [r1, r2] = granted(first, (0, 0.6), (0, 0.3))
    first.settle(r1, 0.5)  # answered: its real cost
    first.close()  # "killed" with r2 in flight: never settled
    second = SharedBudget(path, cap_usd=1.0, **names)  # another run (or process, or host on the same store)
    assert second.spent() == {"paid": pytest.approx(0.5), "held": pytest.approx(0.3), "total": pytest.approx(0.8)}
    assert granted(second, (0, 0.25)) == ["cap"]  # 0.5 paid + 0.3 lost to the kill + 0.25 > 1.0
    [r3] = granted(second, (0, 0.2))
    second.settle(r3, 0.0)  # a request that was refused (a 429): not billed, the reservation is released
    assert second.spent()["total"] == pytest.approx(0.8)
    assert second.requests_by_state() == {"held": (1, pytest.approx(0.3)), "paid": (1, pytest.approx(0.5)),
                                          "released": (1, 0)}
    second.close()


def test_two_partitions_at_once_share_one_cap(fake, tmp_path):
    """Two partitions annotated at the same time (two threads, two budgets on one file) together
    stay within one cap; what neither could afford stays pending."""
    rows, spent, errors = {}, {}, []

    def partition(name):
        try:
            folder = tmp_path / name
            folder.mkdir()
            src, sub = write_toy_source(folder, 12)
            ann = make_annotator(fake, folder, src, max_concurrency=2, max_spend_usd=0.06,
                                 budget_path=tmp_path / "shared.sqlite")
            try:
                summary = annotate_partition(name, sub, src, Root(str(folder / "out")), ann, log=lambda *_: None)
            finally:
                close(ann)
            rows[name] = pq.read_table(summary.annotations_path).to_pylist()
            spent[name] = summary.stats["spent_usd"]
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=partition, args=(n,)) for n in ("p1", "p2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    statuses = [r["status"] for name in rows for r in rows[name]]
    assert "pending" in statuses and "ok" in statuses
    assert sum(spent.values()) <= 0.06
    total = SharedBudget(tmp_path / "shared.sqlite")
    try:
        assert total.spent()["paid"] == pytest.approx(sum(spent.values()), abs=1e-5)
        assert total.spent()["held"] == pytest.approx(0, abs=1e-12)
    finally:
        total.close()
