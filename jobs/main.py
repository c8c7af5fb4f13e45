"""The stages of the main command, one job each, in dependency order.

`llavacot run` (and the UI's "Materialize all") materialise the whole graph in this order; each
stage's job is what the command submits, so its runs show on that job's page. The per-source stage
runs once per source partition; the others are unpartitioned. Between stages the command asks
Dagster again what is stale, so a stage whose inputs kept their data versions does not run.
"""
from __future__ import annotations

from dataclasses import dataclass

import dagster as dg


@dataclass(frozen=True)
class Stage:
    name: str
    selection: dg.AssetSelection
    description: str
    partitioned: bool = False


STAGES = [
    Stage("sources", dg.AssetSelection.assets("raw_samples", "subsample", "annotations", "validated"),
          "Every per-source asset for one source partition: rows, subsample, teacher annotations, validation.",
          partitioned=True),
    Stage("dataset", dg.AssetSelection.assets("cot_dataset"),
          "The ten validated sources merged, deduplicated, split, sharded and exported."),
    Stage("training", dg.AssetSelection.assets("finetuned_model"),
          "Fine-tuning on the dataset (the `training` pool: one at a time)."),
    Stage("evaluation", dg.AssetSelection.key_prefixes(["benchmark_scores"]),
          "Every benchmark under every decoding strategy, in one run (one model load)."),
    Stage("report", dg.AssetSelection.assets("benchmark_report"),
          "The table and plot over every benchmark score."),
]
STAGE_JOBS = [dg.define_asset_job(s.name, selection=s.selection, description=s.description) for s in STAGES]

# Observation of the raw folders runs as its own job: an observable source asset is observed for
# all partitions at once, while the sources stage runs one source partition per run.
observe_sources_job = dg.define_asset_job(
    "observe_sources", selection=dg.AssetSelection.assets("source_files"),
    description="Fingerprint every raw source folder (the data versions of source_files).",
)
