"""validated[src]: annotated samples that pass every rule; rejects kept with reasons."""
import statistics

import dagster as dg
import pyarrow.compute as pc
import pyarrow.parquet as pq

from assets.annotations import ANNOTATIONS_KEY
from assets.metadata import PREVIEW_COLUMNS, conversations_markdown, counts_table, preview_table
from assets.partitions import source_partitions
from assets.staging import gate
from pipeline.publish import staged
from pipeline.validate import VALIDATE_VERSION, validate_partition
from resources import DataStore, QualityThresholds

CHECKS = [
    dg.AssetCheckSpec("validity_rate", asset="validated", blocking=True, partitions_def=source_partitions,
                      description="The share of annotated turns that pass validation is at or above the limit."),
    dg.AssetCheckSpec("no_duplicate_ids", asset="validated", blocking=True, partitions_def=source_partitions,
                      description="Every sample id appears once."),
]


@dg.asset(
    partitions_def=source_partitions,
    deps=[ANNOTATIONS_KEY],
    group_name="dataset",
    code_version=f"validate-{VALIDATE_VERSION}",
    check_specs=CHECKS,
    output_required=False,  # a failed blocking check publishes (and materialises) nothing
    kinds={"parquet"},
    description="Four-stage grammar, answer agreement (rules, then the teacher's judge verdict), no "
    "refusals, stage length bounds. Failing turns are dropped with their question and kept in "
    "rejects.parquet with a reason; blocking checks stop bad data before the dataset (the output is "
    "published only when they pass).",
)
def validated(context: dg.AssetExecutionContext, data_store: DataStore, quality: QualityThresholds):
    source = context.partition_key
    staging = staged(data_store.step("validated"), source)
    out = staging.root
    s = validate_partition(
        source,
        data_store.step("subsample", source).path("samples.parquet"),
        data_store.step("annotations", source).path("annotations.parquet"),
        out,
    )
    with out.fs.open(s.samples_path, "rb") as f:
        table = pq.read_table(f)
    dups = len(table) - len(pc.unique(table.column("id")))
    rate = s.validity_rate
    median = {k: (int(statistics.median(v)) if v else 0) for k, v in s.stage_chars.items()}
    checks = [
        dg.AssetCheckResult(
            check_name="validity_rate", passed=rate >= quality.min_validity_rate,
            metadata={"rate": round(rate, 4), "limit": quality.min_validity_rate,
                      "turns_valid": s.turns_valid, "turns_total": s.turns_total},
            description=f"{s.turns_valid} of {s.turns_total} turns valid ({rate:.1%}; limit {quality.min_validity_rate:.0%})",
        ),
        dg.AssetCheckResult(check_name="no_duplicate_ids", passed=dups == 0, metadata={"duplicate_ids": dups},
                            description=f"{dups} duplicate ids"),
    ]
    yield from gate(staging, checks, dg.MaterializeResult(
        data_version=dg.DataVersion(s.content_hash),
        check_results=checks,
        metadata={
            "dagster/row_count": s.samples_out,
            "samples_in": s.samples_in,
            "samples_out": s.samples_out,
            "turns_total": s.turns_total,
            "turns_valid": s.turns_valid,
            "validity_rate": round(rate, 4),
            "rejects_by_reason": counts_table(s.rejects_by_reason, "reason", "turns"),
            **{f"rejected/{k}": v for k, v in s.rejects_by_reason.items()},
            "median_stage_chars": dg.MetadataValue.json(median),
            "path": dg.MetadataValue.path(staging.final_path(s.samples_path)),
            "rejects_path": dg.MetadataValue.path(staging.final_path(s.rejects_path)),
            "preview": preview_table(table.slice(0, 5).to_pylist(), PREVIEW_COLUMNS[:3] + ["conversations"]),
            "samples_in_full": conversations_markdown(table.slice(0, 3).to_pylist()),
        },
    ))
