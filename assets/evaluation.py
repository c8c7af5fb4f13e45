"""benchmark_scores/<benchmark>/<strategy> and benchmark_report: the fine-tuned model under each
decoding strategy, scored by each benchmark's published rules."""
import base64
import functools
import hashlib
import json
import time

import dagster as dg

from assets.metadata import counts_table
from pipeline.evaluate import BENCHMARKS
from pipeline.evaluate.report import beam_plot_png, by_model, markdown, strategy_and_beam, table
from resources import DataStore
from resources.evaluation import EvaluationSettings
from resources.teacher import Teacher

STRATEGY_KEYS = ["direct", "best_of_n_2", "sentence_beam_2", "stage_beam_2", "stage_beam_4"]


def score_key(benchmark: str, strategy: str) -> dg.AssetKey:
    """One asset per benchmark x strategy, `benchmark_scores/<benchmark>/<strategy>`.

    Why assets and not partitions: Dagster's backfills (the UI's "Materialize all") only reach
    partitions downstream of the root partitions through partitioned assets, so partitions behind
    the unpartitioned model were never part of a backfill; and a run covers one partition, so 30
    partitions cost 30 runs (30 process starts and model loads), while the assets of one
    multi-asset run in one process with one model load, each with its own data version."""
    return dg.AssetKey(["benchmark_scores", benchmark, strategy])


def score_keys(benchmarks=BENCHMARKS, strategies=STRATEGY_KEYS) -> dict[dg.AssetKey, tuple[str, str]]:
    unknown = sorted(set(benchmarks) - set(BENCHMARKS)) + sorted(set(strategies) - set(STRATEGY_KEYS))
    if unknown:
        raise ValueError(f"unknown benchmark or strategy {unknown}; known: {', '.join(BENCHMARKS)}; "
                         f"{', '.join(STRATEGY_KEYS)}")
    return {score_key(b, k): (b, k) for b in benchmarks for k in strategies}
EVAL_VERSION = "1"


@functools.lru_cache(maxsize=2)
def _core(path: str, version: str, device: str, dtype: str, greedy: bool, seed: int):
    """One loaded model per process and model version: the main command scores 30 partitions in a row."""
    from pipeline.search import load_core

    return load_core(path, device=device, dtype=dtype, greedy=greedy, seed=seed)


class _Progress:
    """Items done / total and the time left, to the run log (and so the terminal): at each quarter of
    a partition of 20 items or more, every 15 s, and at the end (a small partition: one line)."""

    def __init__(self, log, label: str):
        self.log, self.label = log, label
        self.start = self.last_time = time.monotonic()
        self.last_step = 0
        self.count = 0

    def __call__(self, done: int, total: int, eta: float | None) -> None:
        self.count = done
        step = done * 4 // max(total, 1) if total >= 20 else 0
        now = time.monotonic()
        if done == total:
            self.log.info(f"{self.label}: {done}/{total} items predicted in {now - self.start:.1f} s")
        elif step > self.last_step or now - self.last_time > 15:
            self.last_time, self.last_step = now, step
            left = "" if eta is None else f", about {eta:.0f} s left"
            self.log.info(f"{self.label}: {done}/{total} items predicted{left}")


def _latest(instance, name: str):
    records = instance.fetch_materializations(dg.AssetKey(name), limit=1).records
    return records[0].asset_materialization if records else None


def lineage(instance) -> dict:
    """What this score descends from, read from Dagster's records of the upstream assets."""
    model = _latest(instance, "finetuned_model")
    dataset = _latest(instance, "cot_dataset")
    if model is None or "export" not in model.metadata:
        raise dg.Failure(description="finetuned_model has no materialisation with an exported model; materialise it first")
    out = {
        "model_path": model.metadata["export"].path,
        "model_version": model.tags.get("dagster/data_version", ""),
    }
    if "dataset_manifest" in model.metadata:
        out["dataset_manifest"] = model.metadata["dataset_manifest"].path
    if dataset is not None:
        out["dataset_version"] = dataset.tags.get("dagster/data_version", "")
        for k in ("teacher_models", "prompt_versions"):
            if k in dataset.metadata:
                out[k] = dataset.metadata[k].value
    return out


def build_benchmark_scores(keys: dict[dg.AssetKey, tuple[str, str]]) -> dg.AssetsDefinition:
    """One asset per benchmark x strategy in `keys` (score_keys()), materialised by one function."""

    @dg.multi_asset(
        specs=[dg.AssetSpec(key, deps=["finetuned_model"], group_name="evaluation", code_version=f"evaluate-{EVAL_VERSION}",
                            kinds={"pytorch"},
                            description=f"{b} under {k}: one benchmark under one decoding strategy (direct, best-of-N, "
                            "sentence-level or stage-level beam search at beam size N); predictions and judge verdicts "
                            "cached per item, so an interrupted evaluation resumes.")
               for key, (b, k) in keys.items()],
        can_subset=True,
        name="benchmark_scores",
        pool="evaluation",
    )
    def benchmark_scores(context: dg.AssetExecutionContext, data_store: DataStore, evaluation: EvaluationSettings,
                         teacher: Teacher):
        """The selected benchmark x strategy pairs, one after another in this process (one model load)."""
        for key in sorted(context.selected_asset_keys, key=lambda k: k.path):
            bench, strategy_key = keys[key]
            yield score_one(context, bench, strategy_key, data_store, evaluation, teacher)

    return benchmark_scores


def score_one(context: dg.AssetExecutionContext, bench: str, key: str, data_store: DataStore,
              evaluation: EvaluationSettings, teacher: Teacher) -> dg.MaterializeResult:
    from pipeline.evaluate.run import evaluate, search_predictor
    from pipeline.search import SearchConfig, quiet_warnings

    strategy, beam = strategy_and_beam(key)
    lin = lineage(context.instance)
    tsv = evaluation.benchmark_file(data_store, bench)
    out = data_store.step("benchmark_scores")
    if not out.is_local:
        raise dg.Failure(description="benchmark_scores keeps predictions in a local folder (appends, SQLite); "
                         "use a local data root or set evaluation.work_dir")
    quiet_warnings()
    core = _core(lin["model_path"], lin["model_version"], evaluation.device, evaluation.dtype, evaluation.greedy,
                 evaluation.seed)
    config = SearchConfig(beam=max(beam, 1), budgets=dict(evaluation.stage_budgets), greedy=evaluation.greedy,
                          seed=evaluation.seed, sentence_tokens=evaluation.sentence_tokens, judge=evaluation.judge)
    predict_many = search_predictor(strategy, core, config, parallel=evaluation.batch_size)
    progress = _Progress(context.log, f"{bench} / {key}")
    stats0 = core.stats.as_dict()
    t0 = time.perf_counter()

    folder = teacher.cache_folder(data_store.root().base)
    annotator, cleanup = teacher.build(folder, load_image=None, run_id=context.run_id, log=context.log.info)
    from pipeline.annotate.text_judge import text_judge

    judge = text_judge(annotator)
    try:
        score = evaluate(bench, tsv, None, out.base, strategy=key, model=lin["model_version"][:16] or "model",
                         judge=judge, judge_name=getattr(judge, "name", None), scope=evaluation.scope,
                         predict_many=predict_many, on_progress=progress)
    finally:
        if judge is not None:
            judge.close()
        cleanup()
    seconds = time.perf_counter() - t0
    stats = {k: v - stats0[k] for k, v in core.stats.as_dict().items()}
    well_formed = round(score.well_formed / score.n_items, 4) if score.n_items else 0.0
    result = {"benchmark": bench, "strategy": key, "beam": beam, "score": round(score.value, 4),
              "breakdown": {k: round(v, 4) for k, v in score.breakdown.items()}, "n_items": score.n_items,
              "missing": score.missing, "well_formed_fraction": well_formed, "lineage": lin}
    path = f"{out.base}/{bench}__{key}.json"
    with out.open(f"{bench}__{key}.json", "w") as f:
        json.dump(result, f, indent=2, sort_keys=True)
    digest = hashlib.sha256(json.dumps(result, sort_keys=True).encode()).hexdigest()[:32]
    return dg.MaterializeResult(
        asset_key=score_key(bench, key),
        data_version=dg.DataVersion(digest),
        metadata={
            "score": round(float(score.value), 2),
            "n_items": score.n_items,
            "units_scored": score.n_units,
            "missing_predictions": score.missing,
            "predicted_this_run": progress.count,
            "well_formed_fraction": well_formed,
            "well_formed_answers": score.well_formed,
            "search_seconds": round(seconds, 2),
            "search": dg.MetadataValue.json({**stats, "device": str(core.device), "batch_size": evaluation.batch_size,
                                             "judge_mode": getattr(core, "judge_mode", evaluation.judge)}),
            "judge_calls": score.judge_calls,
            "judge": getattr(judge, "name", None) or "none (offline teacher: rules only)",
            "extraction": counts_table(score.how, "how", "items"),
            "breakdown": dg.MetadataValue.json({k: round(v, 2) for k, v in score.breakdown.items()}),
            "model": dg.MetadataValue.path(lin["model_path"]),
            "lineage": dg.MetadataValue.json(lin),
            "path": dg.MetadataValue.path(path),
        },
    )


def build_evaluation(benchmarks=BENCHMARKS, strategies=STRATEGY_KEYS) -> tuple[dg.AssetsDefinition, dg.AssetsDefinition]:
    """benchmark_scores for `benchmarks` x `strategies` (default: all six under all five) and the
    report over them."""
    keys = score_keys(benchmarks, strategies)
    return build_benchmark_scores(keys), build_benchmark_report(list(keys))


def build_benchmark_report(score_asset_keys: list[dg.AssetKey]) -> dg.AssetsDefinition:
    return dg.asset(
        name="benchmark_report", deps=score_asset_keys, group_name="evaluation",
        code_version=f"report-{EVAL_VERSION}",
        description="All scores in one table (with the unweighted average of the six benchmarks) and a "
        "plot of score against beam size per strategy.",
    )(make_report)


def make_report(context: dg.AssetExecutionContext, data_store: DataStore) -> dg.MaterializeResult:
    out = data_store.step("benchmark_scores")
    records = []
    for rel in out.glob("*__*.json"):
        with out.open(rel, "r") as f:
            r = json.load(f)
        records.append({"model": r["lineage"].get("model_version", "") or "unknown", "benchmark": r["benchmark"],
                        "strategy": r["strategy"], "score": r["score"], "lineage": r["lineage"]})
    if not records:
        raise dg.Failure(description="no benchmark_scores yet: materialise some partitions first")
    grouped = by_model(records)
    try:  # the headline is the current model's; scores of earlier models are shown apart, never mixed
        current = lineage(context.instance)["model_version"] or "unknown"
    except dg.Failure:
        current = None
    if current not in grouped:
        current = max(grouped, key=lambda m: len(grouped[m]))
    columns, rows = table(grouped[current], list(BENCHMARKS))
    png = beam_plot_png(rows, list(BENCHMARKS), title=f"model {current[:16]}")
    md = markdown(columns, rows)
    others = {m: markdown(*table(v, list(BENCHMARKS))) for m, v in sorted(grouped.items()) if m != current}
    report = data_store.step("benchmark_report")
    with report.open("report.md", "w") as f:
        f.write(f"## model {current}\n\n{md}\n")
        for m, t in others.items():
            f.write(f"\n## earlier model {m} (not averaged with the above)\n\n{t}\n")
    with report.open("score_vs_beam.png", "wb") as f:
        f.write(png)
    digest = hashlib.sha256((current + md + "".join(others.values())).encode()).hexdigest()[:32]
    lineages = {json.dumps(r["lineage"], sort_keys=True) for r in records if r["model"] == current}
    metadata = {
        "model_version": current,
        "table": dg.MetadataValue.md(md),
        "score_vs_beam": dg.MetadataValue.md("![score vs beam](data:image/png;base64," + base64.b64encode(png).decode() + ")"),
        "scores": len(grouped[current]),
        "models_scored": len(grouped),
        "lineage": dg.MetadataValue.json([json.loads(x) for x in sorted(lineages)]),
        "path": dg.MetadataValue.path(report.path("report.md")),
    }
    if others:
        metadata["earlier_models"] = dg.MetadataValue.md("\n\n".join(f"**{m}**\n\n{t}" for m, t in others.items()))
    return dg.MaterializeResult(data_version=dg.DataVersion(digest), metadata=metadata)


# the whole matrix, for code that imports the assets directly (definitions.py chooses its own)
benchmark_scores, benchmark_report = build_evaluation()
