"""Tunable policy, as resources so each deployment (demo, production) sets its own."""
from __future__ import annotations

import dagster as dg
from pydantic import Field

from pipeline.sampling import DEFAULT_EXCLUDE_SPLITS, DEFAULT_STRATIFY, QuotaPlan


class SamplingPlan(dg.ConfigurableResource):
    """Per-source quotas: the paper's table x `scale` (at least `min_quota`), or an override."""

    scale: float = Field(default=1.0, description="Multiplies the paper's per-source quotas.")
    min_quota: int = Field(default=1, description="No source gets fewer than this many samples.")
    overrides: dict[str, int] = Field(default_factory=dict, description="Exact quota per source.")
    seed: int = Field(default=0, description="Seed of the hash rank: same seed, same selection.")
    stratify: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_STRATIFY),
        description="Source -> meta key to stratify by (e.g. clevr: question_family_index).",
    )
    exclude_splits: list[str] = Field(default_factory=lambda: list(DEFAULT_EXCLUDE_SPLITS))

    def plan(self) -> QuotaPlan:
        return QuotaPlan(scale=self.scale, min_quota=self.min_quota, overrides=dict(self.overrides), seed=self.seed)


class QualityThresholds(dg.ConfigurableResource):
    """Limits the blocking asset checks enforce."""

    max_quarantine_rate: float = Field(
        default=0.25, description="Largest share of a source's rows that may be quarantined."
    )
    max_quarantine_rate_by_source: dict[str, float] = Field(default_factory=dict)
    expected_reasons: list[str] = Field(
        default_factory=lambda: ["no_image"],
        description="Reasons that are filters by design (ScienceQA has text-only problems), not "
        "data errors: reported, but not counted against the rate.",
    )

    min_validity_rate: float = Field(
        default=0.9, description="Smallest share of a source's annotated turns that must pass validation."
    )

    def limit(self, source: str) -> float:
        return self.max_quarantine_rate_by_source.get(source, self.max_quarantine_rate)


class DatasetSettings(dg.ConfigurableResource):
    """How the dataset is split and sharded."""

    validation_fraction: float = Field(default=0.02, description="Share of samples in the validation split.")
    seed: int = Field(default=0, description="Seed of the split hash.")
    shard_target_mb: float = Field(default=256.0, description="Target size of a Parquet shard.")
    export_jsonl: bool = Field(default=True, description="Also write the LLaVA-CoT-100k JSONL + image folder.")
