"""cot_dataset: the ten validated sources merged, deduplicated, split, sharded and exported."""
import base64

import dagster as dg

from assets.metadata import counts_table
from assets.validated import validated
from pipeline import SOURCES
from pipeline.dataset import DATASET_VERSION, SourceInput, assemble
from pipeline.plots import stage_lengths_png
from pipeline.shards import verify_manifest
from resources import DataStore
from resources.settings import DatasetSettings

CHECKS = [
    dg.AssetCheckSpec("manifest_verifies", asset="cot_dataset", blocking=True,
                      description="Every shard exists with the row count, size and sha256 the manifest lists."),
    dg.AssetCheckSpec("no_duplicate_ids", asset="cot_dataset", blocking=True,
                      description="No sample id appears twice across the shards."),
]


@dg.asset(
    deps=[validated],
    group_name="dataset",
    code_version=f"dataset-{DATASET_VERSION}",
    check_specs=CHECKS,
    kinds={"parquet", "huggingface"},
    description="Merge of all validated sources; duplicates (same image content and question) "
    "dropped; deterministic train/validation split by id hash; Parquet shards with embedded images "
    "(Hugging Face Image feature) + manifest.json; the LLaVA-CoT-100k JSONL + image folder export.",
)
def cot_dataset(context: dg.AssetExecutionContext, data_store: DataStore, dataset: DatasetSettings) -> dg.MaterializeResult:
    missing = [s for s in SOURCES if not data_store.step("validated", s).exists("samples.parquet")]
    if missing:
        raise dg.Failure(description=f"validated is not materialised for: {', '.join(missing)}; "
                         "materialise those partitions first (their blocking checks may have failed)")
    lineage = {"code_versions": _upstream_code_versions(context.instance)}
    inputs = [SourceInput(s, data_store.step("validated", s).path("samples.parquet"), data_store.raw(s))
              for s in SOURCES]
    out = data_store.step("cot_dataset")
    teachers = _teacher_lineage(inputs, out.fs)
    lineage.update(teachers)
    s = assemble(inputs, out, out.fs, validation_fraction=dataset.validation_fraction, seed=dataset.seed,
                 target_bytes=int(dataset.shard_target_mb * 1024 * 1024), lineage=lineage,
                 export=dataset.export_jsonl, log=context.log.info)
    problems = verify_manifest(out)
    dup = _duplicate_ids(out, s.shards)
    png = stage_lengths_png(s.stage_chars)
    per_source = {src: f"{v['train']} / {v['validation']}" for src, v in s.rows_by_source.items()}
    return dg.MaterializeResult(
        data_version=dg.DataVersion(s.content_hash),
        check_results=[
            dg.AssetCheckResult(check_name="manifest_verifies", passed=not problems,
                                metadata={"problems": dg.MetadataValue.json(problems)}),
            dg.AssetCheckResult(check_name="no_duplicate_ids", passed=dup == 0, metadata={"duplicate_ids": dup}),
        ],
        metadata={
            "dagster/row_count": sum(s.rows.values()),
            "rows_train": s.rows["train"],
            "rows_validation": s.rows["validation"],
            "rows_by_source": dg.MetadataValue.table(
                records=[dg.TableRecord({"source": k, "train": v["train"], "validation": v["validation"]})
                         for k, v in s.rows_by_source.items()],
                schema=dg.TableSchema(columns=[dg.TableColumn("source", "string"), dg.TableColumn("train", "int"),
                                               dg.TableColumn("validation", "int")]),
            ),
            "rejects_by_reason": counts_table(s.rejects_by_reason, "reason", "samples"),
            "shards": dg.MetadataValue.json(s.shards),
            "shards_rewritten": sum(1 for x in s.shards if x["rewritten"]),
            "manifest": dg.MetadataValue.path(s.manifest_path),
            "export": dg.MetadataValue.json(s.export),
            "teacher_models": ", ".join(teachers["teacher_models"]),
            "prompt_versions": ", ".join(teachers["prompt_versions"]),
            "stage_lengths": dg.MetadataValue.md(
                "![stage lengths](data:image/png;base64," + base64.b64encode(png).decode() + ")"),
            "per_source_train_validation": dg.MetadataValue.json(per_source),
            "path": dg.MetadataValue.path(out.path("data")),
        },
    )


def _teacher_lineage(inputs, fs) -> dict:
    import json

    import pyarrow.parquet as pq

    models, versions = set(), set()
    for inp in inputs:
        with fs.open(inp.validated_path, "rb") as f:
            for meta in pq.read_table(f, columns=["meta"]).column("meta").to_pylist():
                m = json.loads(meta)
                models.add(m.get("teacher_model", "unknown"))
                versions.add(m.get("prompt_version", "unknown"))
    return {"teacher_models": sorted(models), "prompt_versions": sorted(versions)}


def _duplicate_ids(out, shards) -> int:
    import pyarrow.parquet as pq

    ids = []
    for sh in shards:
        with out.open(sh["name"], "rb") as f:
            ids += pq.read_table(f, columns=["id"]).column("id").to_pylist()
    return len(ids) - len(set(ids))


UPSTREAM = ["raw_samples", "subsample", "annotations", "validated"]


def _upstream_code_versions(instance) -> dict[str, list[str]]:
    """The code versions that produced the inputs, per upstream asset, from Dagster's records."""
    out = {}
    for name in UPSTREAM:
        versions = set()
        for source in SOURCES:
            flt = dg.AssetRecordsFilter(asset_key=dg.AssetKey(name), asset_partitions=[source])
            records = instance.fetch_materializations(flt, limit=1).records
            if records:
                versions.add(records[0].asset_materialization.tags.get("dagster/code_version", "unknown"))
        out[name] = sorted(versions)
    return out
