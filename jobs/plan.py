"""What the main command runs, decided from Dagster's own records.

For every asset (and source partition) of a stage Dagster says whether it is missing, stale (its
code version, or the configuration it reads, changed; or an input has a new data version: the stale
status Dagster shows in the UI) or fresh. On top of that, one rule Dagster's stale status does not
cover: an asset partition whose latest blocking check failed is not up to date (the check gates
publication, assets/staging.py, so its previous good output is still the materialised one, and a
run is what tells whether the check passes now); and nothing runs on top of an input that is
missing or whose latest blocking check failed. That is the whole hand-written part.

Within a stage, a run materialises the assets that need it and everything after them in that stage
(their inputs are about to change); the next stage is planned only after this one ran, from the
records it wrote, so an unchanged data version stops the chain.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleCauseCategory, StaleStatus
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._time import get_current_datetime

from assets.versions import describe_change
from jobs.main import STAGES, Stage
from pipeline import SOURCES

SOURCE_FILES = dg.AssetKey("source_files")


def name(key: dg.AssetKey, partition: str | None = None) -> str:
    return key.to_user_string() + (f"[{partition}]" if partition else "")


@dataclass
class FailedCheck:
    key: dg.AssetKey
    partition: str | None
    check: str
    description: str

    def __str__(self) -> str:
        return f"{name(self.key, self.partition)} failed its blocking check {self.check}: {self.description}"


@dataclass
class StageRun:
    """One run to make: `keys` of `stage` for `partition`, and why."""

    stage: Stage
    partition: str | None
    keys: list[dg.AssetKey]
    reason: str

    @property
    def label(self) -> str:
        return label(self.partition, self.keys)


def label(partition: str | None, keys: list[dg.AssetKey]) -> str:
    """What a line of the command's output is about: the source, the asset, or how many assets."""
    if partition:
        return partition
    return keys[0].to_user_string() if len(keys) == 1 else f"{len(keys)} assets"


@dataclass
class StagePlan:
    stage: Stage
    runs: list[StageRun] = field(default_factory=list)
    fresh: list[tuple[str | None, list[dg.AssetKey]]] = field(default_factory=list)
    blocked: list[tuple[str | None, list[dg.AssetKey], str]] = field(default_factory=list)


class Records:
    """Dagster's records about the graph, read once per planning step (they change between stages)."""

    def __init__(self, instance: dg.DagsterInstance, graph) -> None:
        self.instance = instance
        self.graph = graph
        view = AssetGraphView(temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
                              instance=instance, asset_graph=graph)
        self.stale = CachingStaleStatusResolver(instance=instance, asset_graph=graph, loading_context=view)

    def why_run(self, key: dg.AssetKey, partition: str | None) -> str | None:
        """None when the asset partition is up to date, else the reason to run it."""
        status = self.stale.get_status(key, partition)
        if status == StaleStatus.MISSING:
            return "never materialised"
        failed = self.failed_check(key, partition)
        if failed is not None:
            return f"its last run failed check {failed.check}"
        if status == StaleStatus.STALE:
            return self._stale_words(key, partition)
        return None

    def _stale_words(self, key: dg.AssetKey, partition: str | None) -> str:
        words = []
        for cause in self.stale.get_stale_causes(key, partition):
            if cause.category == StaleCauseCategory.CODE:
                recorded = self.latest_tag(key, partition, "dagster/code_version")
                words.append(describe_change(recorded, self.graph.get(key).code_version))
            elif cause.category == StaleCauseCategory.DATA and cause.dependency is not None:
                dep = cause.dependency
                words.append("the raw folder changed" if dep.asset_key == SOURCE_FILES
                             else f"{name(dep.asset_key, dep.partition_key)} has a new data version")
            else:
                words.append(cause.reason)
        unique = list(dict.fromkeys(words))
        return "; ".join(unique[:3]) + (f" (+{len(unique) - 3} more)" if len(unique) > 3 else "")

    def latest_tag(self, key: dg.AssetKey, partition: str | None, tag: str) -> str | None:
        flt = dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None)
        records = self.instance.fetch_materializations(flt, limit=1).records
        return records[0].asset_materialization.tags.get(tag) if records else None

    def failed_check(self, key: dg.AssetKey, partition: str | None) -> FailedCheck | None:
        """The latest evaluation of a blocking check of this asset partition, if it failed."""
        check_keys = [ck for ck in self.graph.asset_check_keys if ck.asset_key == key
                      and self.graph.get_check_spec(ck).blocking]
        if not check_keys:
            return None
        latest = self.instance.event_log_storage.get_latest_asset_check_execution_by_key(
            check_keys, partition_filter=PartitionKeyFilter(key=partition))
        for ck, record in sorted(latest.items(), key=lambda kv: kv[0].name):
            if record.status == AssetCheckExecutionRecordStatus.FAILED:
                evaluation = record.event.dagster_event.event_specific_data if record.event else None
                return FailedCheck(key, partition, ck.name, getattr(evaluation, "description", None) or "failed")
        return None

    def not_ready(self, key: dg.AssetKey, partition: str | None, upcoming: set) -> str | None:
        """Why `key` cannot run now: an input missing or behind a failed blocking check (inputs in
        `upcoming`, about to run earlier in this command, are taken as ready)."""
        for parent in sorted(self.graph.get(key).parent_keys, key=lambda k: k.to_user_string()):
            node = self.graph.get(parent)
            if not node.is_materializable or parent in upcoming:
                continue
            if node.is_partitioned:
                parts = [partition] if self.graph.get(key).is_partitioned else list(node.partitions_def.get_partition_keys())
            else:
                parts = [None]
            for p in parts:
                if self.stale.get_status(parent, p) == StaleStatus.MISSING:
                    return f"needs {name(parent, p)}, which was never materialised"
                failed = self.failed_check(parent, p)
                if failed is not None:
                    return str(failed)
        return None


def plan_stage(records: Records, stage: Stage, selected: set[dg.AssetKey], partitions: list[str],
               force: bool, failed: set[tuple[dg.AssetKey, str | None]], upcoming: set | None = None) -> StagePlan:
    """The runs `stage` needs now. `failed` are asset partitions whose run failed in this command:
    nothing reads them. `upcoming` (a dry run): assets an earlier stage would run; what reads them
    is planned as if they had new data."""
    upcoming = upcoming or set()
    graph = records.graph
    keys = [k for k in graph.toposorted_asset_keys if k in stage.selection.resolve(graph) and k in selected]
    out = StagePlan(stage)
    if not keys:
        return out
    for partition in (partitions if stage.partitioned else [None]):
        reasons = {k: ("forced" if force else records.why_run(k, partition)
                       or _after(graph.get(k).parent_keys & upcoming)) for k in keys}
        first = next((k for k in keys if reasons[k]), None)
        if first is None:
            # up to date, unless what it reads failed now or since: then it is not current either
            why_not = _failed_upstream(graph, keys, partition, failed) or records.not_ready(keys[0], partition, upcoming)
            if why_not:
                out.blocked.append((partition, keys, why_not))
            else:
                out.fresh.append((partition, keys))
            continue
        # the assets that need a run and everything after them in this stage (their inputs change)
        todo: list[dg.AssetKey] = []
        for k in keys[keys.index(first):]:
            if reasons[k] or graph.get(k).parent_keys & set(todo):
                todo.append(k)
        why_not = _failed_upstream(graph, todo, partition, failed) or records.not_ready(todo[0], partition, upcoming)
        if why_not:
            out.blocked.append((partition, todo, why_not))
            continue
        reason = reasons[first] if len(todo) == 1 else f"{first.to_user_string()}: {reasons[first]}"
        out.runs.append(StageRun(stage, partition, todo, reason))
    return out


def _after(parents: set[dg.AssetKey]) -> str | None:
    if not parents:
        return None
    first = sorted(parents, key=lambda k: k.to_user_string())[0]
    return f"if {first.to_user_string()}{' and others' if len(parents) > 1 else ''} get new data versions"


def _failed_upstream(graph, todo: list[dg.AssetKey], partition: str | None,
                     failed: set[tuple[dg.AssetKey, str | None]]) -> str | None:
    for key in todo:
        for parent in graph.get(key).parent_keys:
            for k, p in failed:
                if k == parent and (partition is None or p in (partition, None)):
                    return f"{name(k, p)} did not materialise in this command"
    return None


def source_partitions(requested: list[str] | None) -> list[str]:
    """The sources to run, in SOURCES order (a subsample removes what earlier sources hold)."""
    return [s for s in SOURCES if not requested or s in requested]
