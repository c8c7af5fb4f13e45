"""Several client processes sharing one budget, for an endpoint that takes hundreds of requests in
flight (a self-hosted vLLM or SGLang server).

One Python process spends about a millisecond of CPU on each request (the openai client's HTTP
stack, the cache, the prompt, the checks), so at 256 requests in flight against a fast server it
tops out well below the server's pace (benchmarks/teacher.py). Each worker here is a complete
Annotator on the same request cache and budget files (both are SQLite files built for several
processes: the rate budget and the spending cap hold across them), given a contiguous share of the
turns, so the questions about one image stay in one process and share its prompt prefix.

Only what pickles crosses to a worker: the backend's settings (the API key goes through the
process pipe, never to disk or a log), the files' paths, the settings, prices, and the image
callables (module-level functions or picklable objects such as `images.SourceImages`).
"""
from __future__ import annotations

import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, replace

from pipeline.annotate.backends import TeacherUnusable

PROGRESS_EVERY_S = 2.0


@dataclass
class WorkerSpec:
    backend: dict  # OpenAIBackend keyword arguments
    cache_path: str
    budget: dict | None  # SharedBudget keyword arguments
    settings: object  # TeacherSettings, with this worker's share of the concurrency
    prices: object
    run_id: str | None
    load_image: object
    prepare_image: object


def _send(stream, message) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _receive(stream):
    head = stream.read(8)
    if len(head) < 8:
        return None
    (n,) = struct.unpack("<Q", head)
    return pickle.loads(stream.read(n))


def _worker_main() -> None:
    """A worker process: (index, spec, turns) on stdin, messages on stdout."""
    import asyncio

    from pipeline.annotate.annotator import Annotator
    from pipeline.annotate.backends import OpenAIBackend
    from pipeline.annotate.budget import SharedBudget
    from pipeline.annotate.cache import RequestCache

    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # anything printed goes to the log, not into the message stream
    index, spec, turns = pickle.load(sys.stdin.buffer)
    cache = RequestCache(spec.cache_path)
    budget = SharedBudget(**spec.budget) if spec.budget is not None else None
    last = [0.0]

    def progress(stats, total):
        if time.monotonic() - last[0] >= PROGRESS_EVERY_S:
            last[0] = time.monotonic()
            _send(out, ("progress", index, stats.as_dict()))

    ann = Annotator(OpenAIBackend(**spec.backend), cache, spec.settings, load_image=spec.load_image, budget=budget,
                    prices=spec.prices, run_id=spec.run_id, prepare_image=spec.prepare_image, on_progress=progress)

    async def go():
        try:
            return await ann.run(turns)
        finally:
            await ann.aclose()

    try:
        rows = asyncio.run(go())
        _send(out, ("done", index, ann.stats.as_dict(), rows))
    except TeacherUnusable as exc:
        _send(out, ("unusable", index, ann.stats.as_dict(), str(exc)))
    except BaseException:
        _send(out, ("failed", index, ann.stats.as_dict(), traceback.format_exc(limit=8)))
    finally:
        cache.close()
        if budget is not None:
            budget.close()


def default_processes(max_concurrency: int) -> int:
    """Client processes for this many requests in flight: one keeps up with ~1,000 requests a
    second (benchmarks/teacher.py), and another costs its start-up and some SQLite contention."""
    return max(1, min(os.cpu_count() or 1, 1 + max_concurrency // 512))


def split(turns: list, parts: int) -> list[list]:
    """Contiguous shares of nearly equal size (the turns come sorted by image)."""
    size, extra = divmod(len(turns), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (i < extra)
        out.append(turns[start:end])
        start = end
    return [p for p in out if p]


def run_in_processes(spec: WorkerSpec, turns: list, processes: int, on_progress=None) -> tuple[list[dict], dict]:
    """Annotate `turns` in `processes` worker processes: (rows in the order of `turns`, summed stats).
    A worker that finds the teacher unusable stops them all (TeacherUnusable is raised)."""
    shares = split(turns, processes)
    per = max(1, spec.settings.max_concurrency // len(shares))
    spec = replace(spec, settings=replace(spec.settings, max_concurrency=per, client_processes=1))
    # plain child processes (not multiprocessing): nothing of the parent's main module is re-imported
    procs = [subprocess.Popen([sys.executable, "-m", "pipeline.annotate.workers"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": _pythonpath()})
             for _ in shares]
    messages: queue.Queue = queue.Queue()

    def read(i: int, proc) -> None:
        while True:
            try:
                msg = _receive(proc.stdout)
            except (EOFError, pickle.UnpicklingError, OSError):
                msg = None
            if msg is None:
                messages.put(("died", i, {}, proc.wait()))
                return
            messages.put(msg)
            if msg[0] != "progress":
                return

    readers = []
    for i, (proc, share) in enumerate(zip(procs, shares)):
        pickle.dump((i, spec, share), proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
        proc.stdin.close()
        readers.append(threading.Thread(target=read, args=(i, proc), daemon=True))
        readers[-1].start()
    stats: dict[int, dict] = {}  # each worker's latest
    rows: dict[int, list[dict]] = {}
    try:
        while len(rows) < len(procs):
            kind, index, worker_stats, *rest = messages.get()
            stats[index] = worker_stats or stats.get(index, {})
            if kind == "done":
                rows[index] = rest[0]
            elif kind == "unusable":  # the others are stopped below: nothing more can succeed
                raise TeacherUnusable(rest[0])
            elif kind == "failed":
                raise RuntimeError(f"a teacher worker process failed:\n{rest[0]}")
            elif kind == "died":
                raise RuntimeError(f"a teacher worker process died (exit code {rest[0]})")
            if on_progress is not None:
                on_progress(sum_stats(list(stats.values())), len(turns))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    by_key = {(r["sample_id"], r["turn_index"]): r for part in rows.values() for r in part}
    ordered = [by_key[(t.sample_id, t.turn_index)] for t in turns if (t.sample_id, t.turn_index) in by_key]
    return ordered, sum_stats(list(stats.values()))


def _pythonpath() -> str:
    """The parent's import path, so a worker imports the same code (a checkout on PYTHONPATH too)."""
    return os.pathsep.join(p for p in sys.path if p)


def sum_stats(parts: list[dict]) -> dict:
    total: dict = {}
    for s in parts:
        for k, v in s.items():
            if isinstance(v, dict):
                total[k] = dict(Counter(total.get(k, {})) + Counter(v))
            else:
                total[k] = total.get(k, 0) + v
    return total


if __name__ == "__main__":
    _worker_main()
