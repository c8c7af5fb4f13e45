"""Several questions searched at once, their model calls batched together.

Each question runs its strategy, unchanged, in a worker thread; the strategy's model calls (a
session's `sample`, the judge's `score`) go to a shared gate instead of the core. When every busy
worker is waiting at the gate, the calls are served together: all sampling requests as one decoding
loop (`GenerationCore.sample_many`: one batch over the candidates of every question, their
prompts prefilled in one forward), then the scoring requests. So `direct` over k questions decodes
k rows per step, and stage-level beam search over k questions decodes k x N rows per step, while
each strategy stays the plain sequential function it is. Each question samples from its own seeded
generator, so its answer does not depend on which others share its batches (up to floating-point
rounding, which can differ with the batch's size).

Only the thread that completes a round touches the model, so the core is never used by two threads
at once. Python threads suffice: the workers only run strategy logic between model calls.

    results = run_many("stage_beam", core, [(image, question), ...], SearchConfig(beam=4),
                       parallel=8, on_result=lambda i, result: ...)
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

from .base import SearchConfig, SearchResult
from .registry import run


class _Gate:
    def __init__(self, core):
        self.core = core
        self.cv = threading.Condition()
        self.busy = 0                      # workers running a question (not idle, not gone)
        self.queue: list[tuple[str, tuple, dict]] = []

    def enter(self) -> None:
        with self.cv:
            self.busy += 1

    def leave(self) -> None:
        with self.cv:
            self.busy -= 1
            self._serve_if_ready()

    def call(self, kind: str, args: tuple):
        with self.cv:
            slot: dict[str, Any] = {}
            self.queue.append((kind, args, slot))
            self._serve_if_ready()
            while "result" not in slot and "error" not in slot:
                self.cv.wait()
        if "error" in slot:
            raise slot["error"]
        return slot["result"]

    def _serve_if_ready(self) -> None:
        """With the lock held: when every busy worker waits here, serve the round."""
        if not self.queue or len(self.queue) < self.busy:
            return
        todo, self.queue = self.queue, []
        samples = [t for t in todo if t[0] == "sample"]
        if samples:
            try:
                got = self.core.sample_many([t[1] for t in samples])
                for t, r in zip(samples, got):
                    t[2]["result"] = r
            except Exception:  # noqa: BLE001 - find the culprit: each request alone, so only its question fails
                for t in samples:
                    try:
                        t[2]["result"] = self.core.sample_many([t[1]])[0]
                    except Exception as exc:  # noqa: BLE001 - handed to the caller
                        t[2]["error"] = exc
        for kind, args, slot in todo:
            if kind == "score":
                try:
                    slot["result"] = self.core.score(*args)
                except Exception as exc:  # noqa: BLE001 - as above
                    slot["error"] = exc
        self.cv.notify_all()


class _GatedSession:
    def __init__(self, session, core: "_GatedCore"):
        self.inner, self.core = session, core
        self.image, self.question = session.image, session.question

    @property
    def text(self) -> str:
        return self.inner.text

    def sample(self, n, stop, max_new_tokens, greedy=None):
        return self.core.gate.call("sample", (self.inner, n, list(stop), max_new_tokens, greedy))

    def commit(self, candidate) -> None:
        self.inner.commit(candidate)

    def mark(self) -> int:
        return self.inner.mark()

    def rollback(self, mark: int) -> None:
        self.inner.rollback(mark)

    def close(self) -> None:
        self.inner.close()


class _GatedCore:
    """What a strategy sees: the core, with its model calls routed through the gate."""

    batched = True

    def __init__(self, core, gate: _Gate):
        self.inner, self.gate = core, gate

    @property
    def stats(self):
        return self.inner.stats

    def open(self, image, question: str, seed: int | None = None) -> _GatedSession:
        return _GatedSession(self.inner.open(image, question, seed=seed), self)

    def score(self, session: _GatedSession, items) -> list[float]:
        return self.gate.call("score", (session.inner, list(items)))

    def __getattr__(self, name):          # tokens, judge_mode, ...
        return getattr(self.inner, name)

    def __setattr__(self, name, value):
        if name in ("inner", "gate"):
            object.__setattr__(self, name, value)
        else:
            setattr(self.inner, name, value)


def run_many(strategy: str, core, questions: Sequence[tuple[Any, str]], config: SearchConfig | None = None,
             parallel: int = 8, on_result: Callable[[int, "SearchResult | Exception"], None] | None = None
             ) -> list["SearchResult | Exception"]:
    """Answer every (image, question) with `strategy`, up to `parallel` at once, model calls batched
    across them. A question whose search raises gets the exception as its result (the others go on).
    `on_result(i, result)` is called as each one finishes (from a worker thread)."""
    results: list[SearchResult | Exception | None] = [None] * len(questions)
    if parallel <= 1 or len(questions) <= 1 or not hasattr(core, "sample_many"):
        for i, (image, question) in enumerate(questions):
            try:
                results[i] = run(strategy, core, image, question, config)
            except Exception as exc:  # noqa: BLE001 - one failing question does not stop the rest
                results[i] = exc
            if on_result:
                on_result(i, results[i])
        return results  # type: ignore[return-value]
    gate = _Gate(core)
    gated = _GatedCore(core, gate)
    lock = threading.Lock()
    todo = list(range(len(questions)))

    def worker(i: int) -> None:
        while True:
            try:
                image, question = questions[i]
                results[i] = run(strategy, gated, image, question, config)
            except Exception as exc:  # noqa: BLE001 - as above
                results[i] = exc
            finally:
                gate.leave()
            if on_result:
                on_result(i, results[i])
            with lock:
                if not todo:
                    return
                i = todo.pop(0)
                gate.enter()

    # every worker's first question counts as busy before any thread starts: else the first thread
    # could reach the gate while the others are still starting and be served alone (no batching)
    first = [todo.pop(0) for _ in range(min(parallel, len(questions)))]
    for _ in first:
        gate.enter()
    threads = [threading.Thread(target=worker, args=(i,), name=f"search-{k}", daemon=True)
               for k, i in enumerate(first)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results  # type: ignore[return-value]
