"""`llavacot`: the command-line entry of the Dagster layer.

    llavacot run                 observe the raw folders, then materialise every stage that Dagster
                                 reports stale or missing (sources -> dataset -> training ->
                                 evaluation -> report) on the instance at $DAGSTER_HOME (default
                                 ./.dagster_home, the one `dagster dev` shows)
    llavacot run --partition clevr --partition ai2d      only these sources (the per-source stage)
    llavacot run --select evaluation                     one stage (or assets: raw_samples,
                                                         benchmark_scores/MMStar/direct, or Dagster's
                                                         selection syntax: 'group:evaluation')
    llavacot run --dry-run       the plan: what would run and why, nothing runs
    llavacot run --force         run even what is up to date
    llavacot demo [--force]      write the embedded sample into the raw root
    llavacot --version
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

DEFAULT_HOME = ".dagster_home"
# The local instance: runs queue (a daemon, e.g. `dagster dev`, launches them two at a time; without
# one, `llavacot run` executes them itself). No pool limits here: they are counted in the instance and
# only a daemon's run monitoring frees the slot of a run whose process was killed; the team instance
# (deploy/dagster.yaml) has both.
LOCAL_INSTANCE = """\
telemetry:
  enabled: false
nux:
  enabled: false
concurrency:
  runs:
    max_concurrent_runs: 2
"""


def write_local_instance() -> Path:
    """$DAGSTER_HOME (default ./.dagster_home) with LOCAL_INSTANCE unless it has a dagster.yaml."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path(DEFAULT_HOME).resolve())))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        # No telemetry (this machine may have no network, and users did not ask for it), no
        # newsletter pop-up in the UI, the run queue as above.
        config.write_text(LOCAL_INSTANCE)
    return home


def _instance():
    import dagster as dg

    write_local_instance()
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


def resolve_selection(values: list[str] | None, graph) -> set:
    """Asset keys named by --select: stage names, asset keys (or key prefixes), or Dagster's asset
    selection syntax ('group:evaluation', 'key:raw_samples+')."""
    import dagster as dg

    from jobs.main import STAGES

    every = set(graph.materializable_asset_keys)
    if not values:
        return every
    stages = {s.name: s for s in STAGES}
    keys: set = set()
    for value in values:
        for part in filter(None, (p.strip() for p in value.split(","))):
            if part in stages:
                keys |= stages[part].selection.resolve(graph)
                continue
            key = dg.AssetKey.from_user_string(part)
            prefixed = {k for k in every if k.path[:len(key.path)] == key.path}
            if prefixed:
                keys |= prefixed
                continue
            try:
                found = dg.AssetSelection.from_string(part).resolve(graph) & every
            except Exception as exc:  # Dagster's parser says what is wrong with the string
                raise SystemExit(f"--select {part!r}: {exc}") from exc
            if not found:
                raise SystemExit(f"--select {part!r} names no asset; stages: {', '.join(stages)}")
            keys |= found
    return keys


def _line(stage: str, label: str, status: str, detail: str = "") -> None:
    print(f"  {stage:<10} {label:<16} {status}{('  ' + detail) if detail else ''}", flush=True)


def _observe(defs, instance, runs, sources: list[str], dry_run: bool) -> bool:
    """Fingerprint the raw folders; when one differs from its last observation, record new
    observations (the data versions of source_files) through the observe_sources job."""
    from assets.sources import observed_version

    store = _store(defs)

    def current(source: str) -> str:
        if dry_run and not store.raw_root().child(source).exists():
            return "missing"  # the demo writes its embedded sample on first use; a dry run writes nothing
        return observed_version(store, source)

    seen = _last_observed(instance)
    changed = [s for s in sources if current(s) != seen.get(s)]
    if not changed:
        return True
    what = f"{len(changed)} raw folder(s) new or changed: {', '.join(changed)}"
    if dry_run:
        _line("observe", "source_files", "would observe", f"({what})")
        return True
    run = runs.create("observe_sources", None, None)
    runs.start(run)
    runs.wait([run.run_id])
    outcome = runs.outcome(run.run_id)
    _line("observe", "source_files", "ok" if outcome.success else "FAILED",
          f"run {run.run_id[:8]}  {outcome.seconds:5.1f}s  ({what})")
    for message in outcome.failures:
        print(f"    {message}", file=sys.stderr)
    return outcome.success


def cmd_run(args) -> int:
    from jobs.quiet import quiet_warnings

    quiet_warnings()
    from definitions import defs
    from jobs.main import STAGES
    from jobs.plan import Records, plan_stage, source_partitions
    from jobs.runs import Runs
    from pipeline import SOURCES

    instance = _instance()
    unknown = sorted(set(args.partition or []) - set(SOURCES))
    if unknown:
        print(f"unknown partition(s) {unknown}; known: {', '.join(SOURCES)}", file=sys.stderr)
        return 2
    graph = defs.resolve_asset_graph()
    selected = resolve_selection(args.select, graph)
    partitions = source_partitions(args.partition)  # in SOURCES order: a subsample reads earlier sources
    stages = [s for s in STAGES if s.selection.resolve(graph) & selected]
    if args.partition and not args.select:
        stages = [s for s in stages if s.partitioned]  # the sources only: the rest needs every source
    started = time.monotonic()
    runs = Runs(instance)
    print(f"instance {os.environ['DAGSTER_HOME']}: runs are {runs.how}" + ("; DRY RUN: nothing runs" if args.dry_run else ""))
    if not _observe(defs, instance, runs, partitions, args.dry_run):
        print("observing the source folders failed; see the run in the Dagster UI", file=sys.stderr)
        return 1
    failed: set = set()
    upcoming: set = set()  # a dry run: what earlier stages would run
    problems: list[str] = []
    for stage in stages:
        plan = plan_stage(Records(instance, graph), stage, selected, partitions, args.force, failed, upcoming)
        failed |= _print_plan(plan, partitions, problems, upcoming if args.dry_run else None)
        if not args.dry_run:
            failed |= _execute(runs, plan.runs, problems)
    if not args.dry_run:
        _report(_store(defs), partitions)
        print(f"runs recorded in {os.environ['DAGSTER_HOME']}; browse them with: dagster dev  (http://127.0.0.1:3000)")
        print(f"total {time.monotonic() - started:.1f}s")
    elif upcoming:
        print("  (each stage is planned again once the one before it ran: an unchanged data version stops the chain)")
    if problems:
        print("FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    return 0


def _print_plan(plan, partitions: list[str], problems: list[str], upcoming: set | None) -> set:
    """One line per partition (or stage) that is up to date or cannot run, and, in a dry run
    (`upcoming` is then the set to add the planned assets to), per run it would make. Returns the
    asset partitions that cannot run."""
    from jobs.plan import label

    stage = plan.stage.name
    lines = [(p, label(p, keys), "up to date", "") for p, keys in plan.fresh]
    lines += [(p, label(p, keys), "NOT RUN", f"({why})") for p, keys, why in plan.blocked]
    problems += [f"{stage} {label(p, keys)}: {why}" for p, keys, why in plan.blocked]
    if upcoming is not None:
        for run in plan.runs:
            names = (", ".join(k.to_user_string() for k in run.keys) if len(run.keys) <= 4
                     else f"{run.keys[0].to_user_string()} ... {run.keys[-1].to_user_string()}")
            lines.append((run.partition, run.label, "would run", f"{names}  ({run.reason})"))
            upcoming |= set(run.keys)
    order = {p: i for i, p in enumerate(partitions)}
    for p, what, status, detail in sorted(lines, key=lambda line: order.get(line[0], -1)):
        _line(stage, what, status, detail)
    return {(k, p) for p, keys, _ in plan.blocked for k in keys}


def _execute(runs, todo, problems: list[str]) -> set:
    """Make the runs (queued together, or one after another here); print one line per run and every
    failed check's description. Returns the asset partitions that did not materialise."""
    failed: set = set()
    queued = []
    for item in todo:
        run = runs.create(item.stage.name, item.keys, item.partition)
        runs.start(run)
        if runs.queue:
            _line(item.stage.name, item.label, "queued", f"run {run.run_id[:8]}  ({item.reason})")
            queued.append((run.run_id, item))
        else:
            failed |= _finished(runs, run.run_id, item, problems)
    if queued:
        runs.wait([run_id for run_id, _ in queued])
        for run_id, item in queued:
            failed |= _finished(runs, run_id, item, problems)
    return failed


def _finished(runs, run_id: str, item, problems: list[str]) -> set:
    outcome = runs.outcome(run_id)
    _line(item.stage.name, item.label, "ok" if outcome.success else "FAILED",
          f"run {run_id[:8]}  {outcome.seconds:5.1f}s  ({item.reason})")
    for message in outcome.failed_checks + outcome.failures:
        print(f"    {message}", file=sys.stdout if outcome.success else sys.stderr, flush=True)
    if outcome.success:
        return set()
    problems.append(f"{item.stage.name} {item.label}: " + "; ".join(outcome.failed_checks + outcome.failures))
    done = set(outcome.materialized)
    return {(k, item.partition) for k in item.keys if (k, item.partition) not in done}


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
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="materialise what is stale or missing in the whole asset graph")
    run.add_argument("--partition", action="append", help="only this source (repeatable)")
    run.add_argument("--select", action="append", help="only these stages or assets (repeatable, comma-separated): "
                     "sources, dataset, training, evaluation, report, an asset key, or Dagster's selection syntax")
    run.add_argument("--dry-run", action="store_true", help="print the plan (what would run and why); run nothing")
    run.add_argument("--force", action="store_true", help="run even what is up to date")
    run.set_defaults(func=cmd_run)
    demo = sub.add_parser("demo", help="write the embedded sample")
    demo.add_argument("--force", action="store_true", help="rewrite even if present")
    demo.set_defaults(func=cmd_demo)
    args = parser.parse_args(argv)
    return args.func(args)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        own = version("llava-cot-pipeline")
    except PackageNotFoundError:  # a checkout that was never installed
        own = "unknown (not installed)"
    try:
        dagster = version("dagster")
    except PackageNotFoundError:
        dagster = "not installed"
    return f"llavacot {own} (dagster {dagster}, Python {sys.version.split()[0]})"


if __name__ == "__main__":
    sys.exit(main())
