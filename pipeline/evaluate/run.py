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
import threading
import time
from pathlib import Path
from typing import Callable, Mapping

from pipeline.evaluate import BENCHMARKS, get_benchmark
from pipeline.evaluate.base import Score
from pipeline.evaluate.cache import Ask, Judge, PredictionStore, Verdicts, merge_predictions, rank_and_world, shard
from pipeline.evaluate.tsv import Item

Predict = Callable[[Item], "str | dict"]  # an item -> the model's text (or {"prediction": text, ...})

VERDICTS_FILE = "verdicts.sqlite"


Progress = Callable[[int, int, "float | None"], None]   # (items done, items to do, seconds left or None)
Record = Callable[[Item, "str | dict"], None]           # store one item's prediction (thread-safe)
PredictMany = Callable[[list[Item], Record], None]       # predict items, recording each as it is done


def predict_items(items: list[Item], predict: Predict | None, store: PredictionStore, rank: int = 0,
                  world_size: int = 1, on_progress: Progress | None = None,
                  predict_many: PredictMany | None = None) -> dict:
    """Predict this rank's shard, skipping items already stored (by any rank, any earlier run). With
    `predict_many`, the items go to it all at once (it batches them) and each is stored the moment
    it is done; else `predict` runs item by item. `on_progress(done, total, eta_seconds)` after each."""
    mine = shard([it.index for it in items], world_size, rank)
    done = store.done()
    by_index = {it.index: it for it in items}
    todo = [i for i in mine if i not in done]
    lock = threading.Lock()
    t0 = time.perf_counter()
    count = [0]

    def record(item: Item, out, seconds: float | None = None) -> None:
        extra = {}
        if isinstance(out, dict):
            extra = {k: v for k, v in out.items() if k != "prediction"}
            out = out["prediction"]
        with lock:
            if seconds is not None:
                extra["seconds"] = round(seconds, 4)
            store.add(item.index, "" if out is None else str(out), **extra)
            count[0] += 1
            n = count[0]
        if on_progress:
            elapsed = time.perf_counter() - t0
            on_progress(n, len(todo), elapsed / n * (len(todo) - n) if n else None)

    if predict_many is not None and todo:
        predict_many([by_index[i] for i in todo], record)
    else:
        for index in todo:
            t1 = time.perf_counter()
            record(by_index[index], predict(by_index[index]), time.perf_counter() - t1)
    return {"shard": len(mine), "cached": len(mine) - len(todo), "predicted": len(todo)}


def search_predictor(strategy: str, core, config, parallel: int = 8) -> PredictMany:
    """Predictions by a search strategy on a generation core (`pipeline.search`), `parallel` items in
    flight with their model calls batched. An item's images: none (a text-only question), one, or
    several (joined side by side, noted in the record). A search that fails records an empty
    prediction with the error as its reason (the item scores as wrong; nothing is dropped)."""
    from pipeline.search.batch import run_many

    def predict_many(items: list[Item], record: Record) -> None:
        ready, images = [], []
        for it in items:
            try:
                images.append(it.images())
                ready.append(it)
            except Exception as exc:  # noqa: BLE001 - an unreadable image fails its item, not the run
                record(it, {"prediction": "", "error": f"image: {type(exc).__name__}: {exc}"[:500]})

        def done(i: int, result) -> None:
            extra = {"images": len(images[i])} if len(images[i]) != 1 else {}
            if isinstance(result, Exception):
                record(ready[i], {"prediction": "", "error": f"{type(result).__name__}: {result}"[:500], **extra})
                return
            record(ready[i], {"prediction": result.text, "search_seconds": round(result.seconds, 3),
                              "well_formed": result.problem is None, **extra})

        run_many(strategy, core, [(ims or None, it.prompt) for ims, it in zip(images, ready)], config,
                 parallel=parallel, on_result=done)

    return predict_many


def well_formed_count(predictions: Mapping[str, str]) -> int:
    """How many predictions are well-formed four-stage answers."""
    from pipeline.stages import parse

    return sum(1 for p in predictions.values() if parse((p or "").strip()).ok)


def score_predictions(name: str, items: list[Item], predictions: Mapping[str, str], judge: Judge | None = None,
                      verdicts: Verdicts | None = None, strategy: str = "", model: str = "",
                      judge_name: str | None = None, scope: str = "conclusion", judge_workers: int = 1) -> Score:
    ask = Ask(judge, verdicts, benchmark=name, strategy=strategy, model=model, judge_name=judge_name,
              workers=judge_workers)
    return get_benchmark(name).score(items, predictions, ask, scope)


def evaluate(name: str, tsv: str, predict: Predict | None, out_dir: str | os.PathLike, strategy: str, model: str,
             judge: Judge | None = None, judge_name: str | None = None, scope: str = "conclusion",
             rank: int | None = None, world_size: int | None = None, barrier: Callable[[], None] | None = None,
             storage_options: dict | None = None, judge_workers: int = 1, predict_many: PredictMany | None = None,
             on_progress: Progress | None = None) -> Score | None:
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
    predict_items(items, predict, store, rank, world_size, on_progress=on_progress, predict_many=predict_many)
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
    score.well_formed = well_formed_count({i: predictions[i] for i in (it.index for it in items) if i in predictions})
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
