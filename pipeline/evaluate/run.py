"""Predict and score a benchmark, resumably and across ranks.

    score = evaluate("MMStar", "MMStar.tsv", predict, "out/", strategy="stage_beam_n4", model=fingerprint,
                     judge=teacher_callable)

Each rank predicts its shard (`cache.shard`) of the items not yet predicted by anyone, appending
to its own file; after a barrier, rank 0 merges the files and scores. Under `torchrun` pass
`barrier=torch.distributed.barrier`; a single process needs nothing.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Mapping

from pipeline.evaluate import BENCHMARKS, get_benchmark
from pipeline.evaluate.base import Score
from pipeline.evaluate.cache import Ask, Judge, PredictionStore, Verdicts, merge_predictions, rank_and_world, shard
from pipeline.evaluate.tsv import Item

Predict = Callable[[Item], "str | dict"]  # an item -> the model's text (or {"prediction": text, ...})

VERDICTS_FILE = "verdicts.sqlite"


def predict_items(items: list[Item], predict: Predict, store: PredictionStore, rank: int = 0, world_size: int = 1,
                  on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Predict this rank's shard, skipping items already stored (by any rank, any earlier run)."""
    mine = shard([it.index for it in items], world_size, rank)
    done = store.done()
    by_index = {it.index: it for it in items}
    todo = [i for i in mine if i not in done]
    for k, index in enumerate(todo):
        t0 = time.perf_counter()
        out = predict(by_index[index])
        extra = {}
        if isinstance(out, dict):
            extra = {k2: v for k2, v in out.items() if k2 != "prediction"}
            out = out["prediction"]
        store.add(index, "" if out is None else str(out), seconds=round(time.perf_counter() - t0, 4), **extra)
        if on_progress:
            on_progress(k + 1, len(todo))
    return {"shard": len(mine), "cached": len(mine) - len(todo), "predicted": len(todo)}


def score_predictions(name: str, items: list[Item], predictions: Mapping[str, str], judge: Judge | None = None,
                      verdicts: Verdicts | None = None, strategy: str = "", model: str = "",
                      judge_name: str | None = None, scope: str = "conclusion", judge_workers: int = 1) -> Score:
    ask = Ask(judge, verdicts, benchmark=name, strategy=strategy, model=model, judge_name=judge_name,
              workers=judge_workers)
    return get_benchmark(name).score(items, predictions, ask, scope)


def evaluate(name: str, tsv: str, predict: Predict, out_dir: str | os.PathLike, strategy: str, model: str,
             judge: Judge | None = None, judge_name: str | None = None, scope: str = "conclusion",
             rank: int | None = None, world_size: int | None = None, barrier: Callable[[], None] | None = None,
             storage_options: dict | None = None, judge_workers: int = 1) -> Score | None:
    """Predict (this rank's shard) and, on rank 0, merge and score. Returns the score on rank 0 and
    None elsewhere. The score is also written to `<run folder>/score-<scope>.json`."""
    env_rank, env_world = rank_and_world()
    rank = env_rank if rank is None else rank
    world_size = env_world if world_size is None else world_size
    if world_size > 1 and barrier is None:
        raise ValueError("with several ranks, pass barrier= (e.g. torch.distributed.barrier) so rank 0 "
                         "merges only after every rank has finished")
    items = get_benchmark(name).load(tsv, storage_options)
    store = PredictionStore(out_dir, name, strategy, model, rank)
    predict_items(items, predict, store, rank, world_size)
    if barrier is not None:
        barrier()
    if rank != 0:
        return None
    return score_run(name, items, out_dir, strategy, model, judge, judge_name, scope, judge_workers)


def score_run(name: str, items: list[Item], out_dir: str | os.PathLike, strategy: str, model: str,
              judge: Judge | None = None, judge_name: str | None = None, scope: str = "conclusion",
              judge_workers: int = 1) -> Score:
    """Rank 0: merge the stored predictions and score them (judge verdicts cached in the out folder;
    `judge_workers` > 1 grades MM-Vet from that many threads)."""
    path, records, missing = merge_predictions(out_dir, name, strategy, model, [it.index for it in items])
    predictions = {i: r["prediction"] for i, r in records.items()}
    verdicts = Verdicts(Path(out_dir) / VERDICTS_FILE)
    try:
        score = score_predictions(name, items, predictions, judge, verdicts, strategy, model, judge_name, scope,
                                  judge_workers)
    finally:
        verdicts.close()
    out = path.parent / f"score-{scope}.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(score.as_dict(records=True), ensure_ascii=False, indent=1, default=str))
    os.replace(tmp, out)
    return score


def average(scores: Mapping[str, "Score | float"]) -> float:
    """The unweighted mean of the benchmarks' headline values (the paper's "average")."""
    vals = [s.value if isinstance(s, Score) else float(s) for s in scores.values()]
    if not vals:
        raise ValueError("no scores to average")
    return sum(vals) / len(vals)


def summary(scores: Mapping[str, "Score | float"]) -> dict:
    """Per-benchmark values, their average, and whether all six are present."""
    vals = {k: (s.value if isinstance(s, Score) else float(s)) for k, s in scores.items()}
    return {"scores": vals, "average": average(vals) if vals else None,
            "complete": all(b in vals for b in BENCHMARKS), "missing": [b for b in BENCHMARKS if b not in vals]}
