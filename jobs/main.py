"""The main job: the whole asset graph. Partitioned assets run once per source partition."""
import dagster as dg

from assets.sources import source_files

# Observation of the raw folders runs as its own job: an observable source asset is observed for
# all partitions at once, while the main job runs one source partition per run.
observe_sources_job = dg.define_asset_job(
    "observe_sources", selection=dg.AssetSelection.assets(source_files.key),
    description="Fingerprint every raw source folder (the data versions of source_files).",
)

PER_SOURCE = ["raw_samples", "subsample", "annotations", "validated"]
WHOLE_DATASET = ["cot_dataset", "finetuned_model"]

main_job = dg.define_asset_job(
    "main",
    selection=dg.AssetSelection.assets(*PER_SOURCE),
    description="Every per-source asset, one source partition per run (the first part of the main command).",
)

dataset_job = dg.define_asset_job(
    "dataset",
    selection=dg.AssetSelection.assets(*WHOLE_DATASET),
    description="The assets over the whole dataset, after every source partition (the second part): "
    "the dataset, then fine-tuning on it.",
)


evaluation_job = dg.define_asset_job(
    "evaluation",
    selection=dg.AssetSelection.assets("benchmark_scores"),
    description="One benchmark under one decoding strategy per run (benchmark x strategy partitions).",
)

report_job = dg.define_asset_job(
    "report",
    selection=dg.AssetSelection.assets("benchmark_report"),
    description="The table and plot over every benchmark score.",
)
