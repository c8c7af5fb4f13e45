"""A run killed with SIGKILL at a random point and restarted: no request answered twice, no turn
lost, and the requests in flight at the kill counted as spent in the budget's ledger.

The annotation runs in a child process against the fake server in this process. To make the
outcome independent of timing luck, the server freezes at a random request number K: request K
and every later one are held and never answered, so at the moment of the kill the server has
answered exactly the requests the child has had time to receive and commit (we wait half a second
for that). Whatever the child had not committed by then would show up as answered twice.
"""
import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.annotate.budget import SharedBudget
from pipeline.annotate.cache import RequestCache
from tests.fakes.openai_server import Fault, default_responder
from tests.pipeline.annotate.conftest import write_toy_source

REPO = Path(__file__).resolve().parents[3]

# The child: the annotation of the toy partition exactly as a user would run it (an Annotator
# built like conftest.make_annotator), with a client timeout long enough that held requests are
# not retried before the kill, so what the server received is easy to account for.
CHILD = """
import sys
from pathlib import Path
from types import SimpleNamespace

from pipeline.annotate.backends import OpenAIBackend
from pipeline.annotate.partition import annotate_partition
from pipeline.storage import Root
from tests.pipeline.annotate.conftest import API_KEY, make_annotator

base_url, folder, sub, src = sys.argv[1], Path(sys.argv[2]), sys.argv[3], Root(sys.argv[4])
ann = make_annotator(SimpleNamespace(base_url=base_url), folder, src, max_concurrency=16)
ann.backend = OpenAIBackend(API_KEY, base_url, timeout_s=30.0)
summary = annotate_partition("toy", sub, src, Root(str(folder / "out")), ann, log=lambda *_: None)
print(summary.by_status, flush=True)
"""


class Freezer:
    """A responder that answers normally until request number `k` arrives; from then on every
    request (that one included) is held and never answered, until `thaw()`."""

    def __init__(self, k: int) -> None:
        self.k, self.n, self.held = k, 0, 0
        self.frozen = False
        self.froze = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release: asyncio.Event | None = None

    async def __call__(self, body: dict) -> str:
        self.n += 1  # runs on the server's event loop only: no lock needed
        if self.frozen or self.n == self.k:
            if self._release is None:
                self._loop, self._release = asyncio.get_running_loop(), asyncio.Event()
            self.frozen = True
            self.held += 1
            self.froze.set()
            await self._release.wait()  # the client is killed meanwhile
            raise Fault("server_error")  # to a closed connection: never delivered, never counted
        return default_responder(body)

    def thaw(self) -> None:
        """Later requests are answered again; the held ones stay held."""
        self.frozen = False

    def release(self) -> None:
        """End the held handlers (their clients are long gone), so the server stops cleanly."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._release.set)
            time.sleep(0.1)


def child(fake, tmp_path, sub, src) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, fake.base_url, str(tmp_path), sub, src.uri],
        cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_run_killed_at_a_random_point_and_restarted_pays_nothing_twice(fake, tmp_path, seed):
    k = random.Random(seed).randint(10, 40)
    src, sub = write_toy_source(tmp_path, 60)  # 60 rows, 75 assistant turns
    freezer = Freezer(k)
    fake.configure(latency=0.05, responder=freezer)
    try:
        run_kill_restart(fake, tmp_path, src, sub, freezer)
    finally:
        freezer.release()


def run_kill_restart(fake, tmp_path, src, sub, freezer):
    k = freezer.k

    first = child(fake, tmp_path, sub, src)
    try:
        assert freezer.froze.wait(60), f"request {k} never arrived: {first.communicate(timeout=10)}"
        time.sleep(0.5)  # everything answered before the freeze reaches the child and is committed
        assert first.poll() is None, "the run finished before it could be killed"
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
    assert first.returncode == -signal.SIGKILL
    assert not (tmp_path / "out" / "annotations.parquet").exists()
    held = freezer.held
    killed_at = fake.stats()
    assert killed_at["received"] == killed_at["answered"] + held, killed_at
    cache = RequestCache(tmp_path / "requests.sqlite")
    try:  # every answer the server gave before the kill is in the cache
        assert cache.responses_count() == killed_at["answered"]
    finally:
        cache.close()
    budget = SharedBudget(tmp_path / "rate.sqlite")
    try:  # the requests in flight at the kill stay counted as spent (at the most they could cost)
        by_state = budget.requests_by_state()
        in_flight = by_state["held"]
        assert in_flight[0] == held and in_flight[1] > 0
        assert by_state["paid"][0] == killed_at["answered"]
        assert budget.spent()["total"] == pytest.approx(budget.spent()["paid"] + in_flight[1])
    finally:
        budget.close()

    freezer.thaw()
    for _ in range(3):
        again = child(fake, tmp_path, sub, src)
        out, err = again.communicate(timeout=120)
        if again.returncode == 0:
            break
    assert again.returncode == 0, err[-3000:]

    rows = pq.read_table(tmp_path / "out" / "annotations.parquet").to_pylist()
    keys = [(r["sample_id"], r["turn_index"]) for r in rows]
    assert len(rows) == 75 and len(set(keys)) == 75
    assert {r["status"] for r in rows} == {"ok"}

    stats = fake.stats(per_key=True)
    assert stats["answered_twice"] == []
    answered = [key for key, n in stats["per_key"].items() if n["answered"]]
    # the requests the turns needed: their generation attempts and their judge calls
    needed = sum(r["attempts"] for r in rows) + sum(r["judge_verdict"] in ("valid", "invalid") for r in rows)
    assert len(answered) == stats["answered"] == needed
    # the only waste: the requests held in flight at the kill, sent once more after the restart
    assert stats["received"] == stats["answered"] + held
    cache = RequestCache(tmp_path / "requests.sqlite")
    try:
        assert cache.responses_count() == needed
    finally:
        cache.close()
