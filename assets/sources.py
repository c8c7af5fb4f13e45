"""Source assets: raw folder fingerprint -> canonical rows (with quarantine) -> quota subsample."""

import hashlib

import dagster as dg
import pyarrow.compute as pc
import pyarrow.parquet as pq

from assets.automation import observe_on_cron
from assets.metadata import PREVIEW_COLUMNS, counts_table, preview_table, sample_column_schema
from assets.partitions import source_partitions
from assets.staging import gate
from pipeline import SOURCES
from pipeline.demo import DemoRefused
from pipeline.fingerprint import fingerprint
from pipeline.ingest import INGEST_VERSION, ingest_source
from pipeline.publish import staged
from pipeline.sampling import SUBSAMPLE_VERSION, earlier_sources, source_keys, subsample_source
from pipeline.sources import SourceLayoutError, all_readers, get_reader
from resources import DataStore, QualityThresholds, SamplingPlan


def _readers_version() -> str:
    versions = "|".join(f"{name}={reader.version}" for name, reader in sorted(all_readers().items()))
    return hashlib.sha256(versions.encode()).hexdigest()[:8]


@dg.observable_source_asset(
    partitions_def=source_partitions,
    group_name="sources",
    automation_condition=observe_on_cron(),
    description="The raw source folders in their native layouts. Observed, not materialised: the "
    "data version of each partition is a fingerprint of its folder listing (paths, sizes, stamps).",
)
def source_files(data_store: DataStore) -> dg.DataVersionsByPartition:
    return dg.DataVersionsByPartition({source: dg.DataVersion(observed_version(data_store, source))
                                       for source in SOURCES})


def observed_version(data_store: DataStore, source: str) -> str:
    """The data version source_files records for `source` (the main command compares with it)."""
    try:
        digest, _, _ = data_store.fingerprint(source)
    except DemoRefused:  # the folder as it is; raw_samples reports the refusal and what to do
        digest, _, _ = fingerprint(data_store.raw_root().child(source))
    return digest


RAW_CHECKS = [
    dg.AssetCheckSpec("no_duplicate_ids", asset="raw_samples", blocking=True, partitions_def=source_partitions,
                      description="Every id appears once in the canonical table."),
    dg.AssetCheckSpec("quarantine_rate", asset="raw_samples", blocking=True, partitions_def=source_partitions,
                      description="The share of quarantined rows stays under the configured limit."),
]


def _duplicate_ids(path: str, fs) -> int:
    with fs.open(path, "rb") as f:
        ids = pq.read_table(f, columns=["id"]).column("id")
    return len(ids) - len(pc.unique(ids))


@dg.asset(
    partitions_def=source_partitions,
    deps=[source_files],
    group_name="sources",
    code_version=f"ingest-{INGEST_VERSION}-readers-{_readers_version()}",
    check_specs=RAW_CHECKS,
    output_required=False,  # a failed blocking check publishes (and materialises) nothing
    kinds={"parquet"},
    description="Native files -> canonical sample rows (image paths, not bytes). Rows that cannot be "
    "used are kept in quarantine.parquet with a machine-readable reason. Written beside the published "
    "folder and published only when the blocking checks pass.",
)
def raw_samples(
    context: dg.AssetExecutionContext, data_store: DataStore, quality: QualityThresholds
):
    source = context.partition_key
    staging = staged(data_store.step("raw_samples"), source)
    out = staging.root
    try:  # the whole folder is wrong, or is someone else's: say what was expected where
        source_root = data_store.raw(source)
        context.log.info(f"reading {source} from {source_root.uri}")
        s = ingest_source(source, source_root, out, cache=data_store.cache(source))
    except (SourceLayoutError, DemoRefused) as exc:
        raise dg.Failure(description=str(exc)) from exc
    digest, files, size = fingerprint(source_root)

    # every native record counts: a whole unreadable file weighs the records it held
    total = s.rows_read
    counted = sum(n for r, n in s.quarantined_rows.items() if r not in quality.expected_reasons)
    rate = counted / total if total else 0.0
    limit = quality.limit(source)
    dups = _duplicate_ids(s.samples_path, out.fs)
    checks = [
        dg.AssetCheckResult(check_name="no_duplicate_ids", passed=dups == 0, metadata={"duplicate_ids": dups}),
        dg.AssetCheckResult(
            check_name="quarantine_rate",
            passed=rate <= limit and s.rows > 0,  # a source that yields nothing is never a pass
            metadata={"rate": round(rate, 4), "limit": limit, "quarantined_counted": counted,
                      "rows_read": total, "rows": s.rows,
                      "not_counted_reasons": ", ".join(quality.expected_reasons)},
            description=(f"{counted} of {total} rows quarantined for data errors ({rate:.1%}; limit {limit:.0%})"
                         if s.rows else f"no usable rows ({total} read, {counted} quarantined): the source yields "
                         "nothing, see quarantined_by_reason and skipped_files"),
        ),
    ]
    yield from gate(staging, checks, dg.MaterializeResult(
        data_version=dg.DataVersion(s.content_hash),
        check_results=checks,
        metadata={
            "dagster/row_count": s.rows,
            "dagster/column_schema": sample_column_schema(),
            "rows": s.rows,
            "rows_read": total,
            "quarantined": sum(s.quarantined.values()),
            "quarantined_by_reason": counts_table(s.quarantined, "reason"),
            **{f"quarantined/{reason}": n for reason, n in s.quarantined.items()},
            "quarantined_rows_by_reason": dg.MetadataValue.json(s.quarantined_rows),
            "skipped_files": dg.MetadataValue.json(s.skipped),
            "rows_by_split": counts_table(s.splits, "split"),
            "skipped_splits": dg.MetadataValue.json(s.skipped_splits or {}),
            "images_checked": s.images_checked,
            "images_decoded": s.images_decoded,
            "source_uri": dg.MetadataValue.path(source_root.given or source_root.uri),
            "dataset_folder": dg.MetadataValue.path(s.dataset_folder),
            "source_fingerprint": digest,
            "source_files": files,
            "source_bytes": size,
            "path": dg.MetadataValue.path(staging.final_path(s.samples_path)),
            "quarantine_path": dg.MetadataValue.path(staging.final_path(s.quarantine_path)),
            "preview": preview_table(s.preview, PREVIEW_COLUMNS),
        },
    ))


def own_and_earlier_sources() -> dg.StaticPartitionMapping:
    """subsample[p] reads raw_samples of p and of every source before it in SOURCES (cross-source
    duplicate removal keeps the earlier source's row), so a change there makes it stale too."""
    order = list(SOURCES)
    return dg.StaticPartitionMapping({source: order[i:] for i, source in enumerate(order)})


SUBSAMPLE_CHECKS = [
    dg.AssetCheckSpec("no_duplicate_ids", asset="subsample", blocking=True, partitions_def=source_partitions,
                      description="Every id appears once in the subsample."),
]


@dg.asset(
    partitions_def=source_partitions,
    deps=[dg.AssetDep(raw_samples, partition_mapping=own_and_earlier_sources())],
    group_name="sources",
    code_version=f"subsample-{SUBSAMPLE_VERSION}",
    check_specs=SUBSAMPLE_CHECKS,
    output_required=False,  # a failed blocking check publishes (and materialises) nothing
    kinds={"parquet"},
    description="A deterministic quota sample of each source (hash rank; stable when data is added), "
    "test splits excluded, optionally stratified. Published only when its blocking check passes.",
)
def subsample(
    context: dg.AssetExecutionContext, data_store: DataStore, sampling: SamplingPlan
):
    source = context.partition_key
    plan = sampling.plan()
    quota = plan.quota(source)
    stratify_key = sampling.stratify.get(source) or get_reader(source).stratify_key
    raw = data_store.step("raw_samples", source)
    staging = staged(data_store.step("subsample"), source)
    out = staging.root
    # Cross-source duplicates: a fixed priority (the order of SOURCES); this source drops what an
    # earlier source already has. Their raw rows are read here (raw_samples of those partitions).
    earlier, missing = {}, []
    for other in earlier_sources(source, SOURCES):
        path = data_store.step("raw_samples", other).path("samples.parquet")
        if out.fs.exists(path):
            earlier[other] = source_keys(path, out.fs)
        else:
            missing.append(other)
    if missing:
        context.log.warning(f"{source}: raw_samples of {', '.join(missing)} not materialised yet: duplicates of "
                            "their rows cannot be removed from this subsample until it is materialised again")
    s = subsample_source(
        source, raw.path("samples.parquet"), out, quota=quota, seed=plan.seed,
        stratify_key=stratify_key, exclude_splits=tuple(sampling.exclude_splits), earlier_keys=earlier,
    )
    with out.fs.open(s.samples_path, "rb") as f:
        preview = pq.read_table(f).slice(0, 5).to_pylist()
    dups = _duplicate_ids(s.samples_path, out.fs)
    checks = [dg.AssetCheckResult(check_name="no_duplicate_ids", passed=dups == 0, metadata={"duplicate_ids": dups},
                                  description=f"{dups} duplicate ids")]
    yield from gate(staging, checks, dg.MaterializeResult(
        data_version=dg.DataVersion(s.content_hash),
        check_results=checks,
        metadata={
            "dagster/row_count": s.selected,
            "rows": s.selected,
            "quota": s.quota,
            "candidates": s.candidates,
            "seed": plan.seed,
            "stratify_key": s.stratify_key or "none",
            "rows_by_split": counts_table(s.by_split, "split"),
            "excluded_splits": counts_table(s.excluded_splits, "split"),
            "rows_by_stratum": counts_table(s.by_stratum, "stratum") if s.by_stratum else "not stratified",
            "duplicates_removed": s.duplicates_removed,
            "duplicates_within_source": s.duplicates_within_source,
            "duplicates_of_held_out": s.duplicates_of_held_out,
            "duplicates_of_other_sources": dg.MetadataValue.json(s.duplicates_of_other_sources),
            "dedup_compared_with": ", ".join(earlier) or "none (first in priority)",
            "dedup_sources_missing": ", ".join(missing) or "none",
            "duplicates_path": dg.MetadataValue.path(staging.final_path(s.duplicates_path)),
            "path": dg.MetadataValue.path(staging.final_path(s.samples_path)),
            "preview": preview_table(preview, PREVIEW_COLUMNS),
        },
    ))
