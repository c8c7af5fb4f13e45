"""`llavacot`: the command-line entry of the Dagster layer.

    llavacot run            observe the raw folders, then run the main job for every source
                            partition on the Dagster instance at $DAGSTER_HOME (default
                            ./.dagster_home, the one `dagster dev` shows)
    llavacot run --partition clevr --partition ai2d
    llavacot demo [--force] write the embedded sample into the raw root
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

DEFAULT_HOME = ".dagster_home"
# The console shows progress lines (INFO); every DEBUG event is still in the run's event log.
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def _instance():
    import dagster as dg

    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path(DEFAULT_HOME).resolve())))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        # No telemetry (this machine may have no network, and users did not ask for it) and no
        # newsletter pop-up in the UI.
        config.write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    return dg.DagsterInstance.get()


def cmd_demo(args) -> int:
    from definitions import defs
    from pipeline.demo import write_demo

    raw = _store(defs).raw_root()
    planted = write_demo(raw, force=args.force)
    print(f"embedded sample written to {raw.uri} ({sum(len(p) for p in planted.values())} planted bad rows)")
    return 0


def _store(defs):
    from resources import DataStore

    store = defs.resources["data_store"]
    if not isinstance(store, DataStore):
        raise SystemExit("the data_store resource is not a DataStore")
    return store


def cmd_run(args) -> int:
    from definitions import defs
    from jobs.freshness import CONFIG_TAG, config_fingerprint, stale_reason
    from pipeline import SOURCES
    from pipeline.fingerprint import fingerprint

    instance = _instance()
    partitions = args.partition or list(SOURCES)
    unknown = sorted(set(partitions) - set(SOURCES))
    if unknown:
        print(f"unknown partition(s) {unknown}; known: {', '.join(SOURCES)}", file=sys.stderr)
        return 2
    started = time.monotonic()
    store = _store(defs)
    for source in partitions:
        store.raw(source)  # the demo deployment writes the embedded sample on first use
    fingerprints = {s: fingerprint(store.raw_root().child(s))[0] for s in SOURCES}
    if fingerprints != _last_observed(instance):  # record new observations only when a folder changed
        observe = defs.resolve_job_def("observe_sources").execute_in_process(
            instance=instance, raise_on_error=False, run_config=QUIET
        )
        if not observe.success:
            print("observing the source folders failed; see the run in the Dagster UI", file=sys.stderr)
            return 1
    job = defs.resolve_job_def("main")
    config = config_fingerprint(defs)
    failed = []
    for source in partitions:
        t0 = time.monotonic()
        digest = fingerprints[source]
        why = None if args.force else stale_reason(instance, defs, "main", source, config, digest)
        if not args.force and why is None:
            print(f"  {source:<11} up to date (nothing changed since its last run)", flush=True)
            continue
        result = job.execute_in_process(
            partition_key=source, instance=instance, raise_on_error=False, run_config=QUIET,
            tags={CONFIG_TAG: config},
        )
        status = "ok" if result.success else "FAILED"
        if not result.success:
            failed.append(source)
        why = "forced" if args.force else why
        print(f"  {source:<11} {status:<6} run {result.run_id[:8]}  {time.monotonic() - t0:5.1f}s  ({why})", flush=True)
    if failed:
        print(f"FAILED partitions: {', '.join(failed)}; the whole-dataset assets wait for them", file=sys.stderr)
        return 1
    t0 = time.monotonic()
    why = "forced" if args.force else stale_reason(instance, defs, "dataset", None, config)
    if args.partition:
        print(f"  {'dataset':<11} not built: it needs every source (run without --partition)", flush=True)
    elif why is None:
        print(f"  {'dataset':<11} up to date (nothing changed since its last run)", flush=True)
    else:
        result = defs.resolve_job_def("dataset").execute_in_process(
            instance=instance, raise_on_error=False, run_config=QUIET, tags={CONFIG_TAG: config}
        )
        print(f"  {'dataset':<11} {'ok' if result.success else 'FAILED':<6} run {result.run_id[:8]}  "
              f"{time.monotonic() - t0:5.1f}s  ({why})", flush=True)
        if not result.success:
            failed.append("dataset")
    if not failed and not args.partition:
        failed += _evaluate(defs, instance, config, args.force)
    _report(store, partitions)
    print(f"runs recorded in {os.environ['DAGSTER_HOME']}; browse them with: dagster dev  (http://127.0.0.1:3000)")
    print(f"total {time.monotonic() - started:.1f}s")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _run_job(defs, instance, job_name: str, label: str, config: str, force: bool, partition=None) -> bool:
    """Run `job_name` (for one partition) unless it is up to date; print one line. False on failure."""
    from jobs.freshness import CONFIG_TAG, stale_reason

    t0 = time.monotonic()
    why = "forced" if force else stale_reason(instance, defs, job_name, partition, config)
    if why is None:
        print(f"  {label:<28} up to date", flush=True)
        return True
    result = defs.resolve_job_def(job_name).execute_in_process(
        instance=instance, raise_on_error=False, run_config=QUIET, tags={CONFIG_TAG: config},
        **({"partition_key": partition} if partition else {}),
    )
    status = "ok" if result.success else "FAILED"
    print(f"  {label:<28} {status:<6} run {result.run_id[:8]}  {time.monotonic() - t0:5.1f}s  ({why})", flush=True)
    return result.success


def _evaluate(defs, instance, config: str, force: bool) -> list[str]:
    """Every benchmark x strategy partition, then the report."""
    import dagster as dg

    from assets.evaluation import STRATEGY_KEYS
    from pipeline.evaluate import BENCHMARKS

    failed = []
    for bench in BENCHMARKS:
        for key in STRATEGY_KEYS:
            partition = dg.MultiPartitionKey({"benchmark": bench, "strategy": key})
            if not _run_job(defs, instance, "evaluation", f"{bench} / {key}", config, force, partition):
                failed.append(f"{bench}/{key}")
    if not failed and not _run_job(defs, instance, "report", "benchmark report", config, force):
        failed.append("report")
    return failed


def _last_observed(instance) -> dict[str, str]:
    import dagster as dg

    from pipeline import SOURCES

    seen = {}
    for source in SOURCES:
        flt = dg.AssetRecordsFilter(asset_key=dg.AssetKey("source_files"), asset_partitions=[source])
        records = instance.fetch_observations(flt, limit=1).records
        if records:
            seen[source] = records[0].asset_observation.tags.get("dagster/data_version")
    return seen


def _report(store, partitions) -> None:
    import json

    import pyarrow.parquet as pq

    root = store.root()

    def rows(rel: str) -> str:
        r = root.child(*rel.split("/")[:-1])
        name = rel.split("/")[-1]
        if not r.exists(name):
            return "-"
        with r.open(name, "rb") as f:
            return str(pq.ParquetFile(f).metadata.num_rows)

    print(f"\n{'source':<11} {'raw rows':>8} {'quarantined':>11} {'subsample':>9} {'turns ok':>9} {'validated':>9}")
    for source in partitions:
        raw_summary = root.child("raw_samples", source)
        quar = "-"
        if raw_summary.exists("summary.json"):
            with raw_summary.open("summary.json", "r") as f:
                quar = str(sum(json.load(f)["quarantined"].values()))
        ok = "-"
        ann = root.child("annotations", source)
        if ann.exists("annotations.parquet"):
            with ann.open("annotations.parquet", "rb") as f:
                ok = str(pq.read_table(f, columns=["status"]).column("status").to_pylist().count("ok"))
        print(f"{source:<11} {rows(f'raw_samples/{source}/samples.parquet'):>8} {quar:>11} "
              f"{rows(f'subsample/{source}/samples.parquet'):>9} {ok:>9} {rows(f'validated/{source}/samples.parquet'):>9}")
    ds = root.child("cot_dataset")
    if ds.exists("manifest.json"):
        with ds.open("manifest.json", "r") as f:
            totals = json.load(f)["totals"]
        splits = ", ".join(f"{k} {v['rows']} rows in {v['files']} shard(s)" for k, v in totals["splits"].items())
        print(f"\ndataset: {splits}\n  shards   {ds.uri}/data/\n  manifest {ds.uri}/manifest.json\n"
              f"  LLaVA-CoT JSONL export {ds.uri}/export/")
    model = root.child("finetuned_model")
    if model.exists("final"):
        print(f"model:   {model.uri}/final/ (Hugging Face folder; loss in {model.uri}/metrics.jsonl)")
    report = root.child("benchmark_report")
    if report.exists("report.md"):
        print(f"scores:  {report.uri}/report.md and score_vs_beam.png")
    where = os.path.abspath(root.base) if root.is_local else root.uri
    print(f"\nall outputs under {where}/")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llavacot", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="materialise the whole asset graph, every source partition")
    run.add_argument("--partition", action="append", help="only this source (repeatable)")
    run.add_argument("--force", action="store_true", help="run even the partitions that are up to date")
    run.set_defaults(func=cmd_run)
    demo = sub.add_parser("demo", help="write the embedded sample")
    demo.add_argument("--force", action="store_true", help="rewrite even if present")
    demo.set_defaults(func=cmd_demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
