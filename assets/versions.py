"""Each asset's code version names its logic and the resource configuration it reads.

Dagster marks an asset stale when its code version differs from the one its latest materialisation
recorded. Dagster cannot know which resource fields a function reads, so this table says it (the
one hand-written part): a setting that an asset does not read never re-runs it (an evaluation
setting leaves the sources alone), and one it does read re-runs it and what depends on its data.
Values are hashed; secrets (the API key) are never read, and an environment variable (EnvVar) counts
by its value, so a new OPENAI_BASE_URL is a new teacher.

    code version = "<logic version>|cfg:<hash of the fields read>"
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

import dagster as dg

WHERE = ["root_uri", "raw_uri"]  # every asset reads and writes under the data store's roots
# The fields that decide what the teacher answers; limits, prices, spending caps and the cache
# folder change how fast or how much, not what.
TEACHER_IDENTITY = ["backend", "base_url", "model", "judge_model", "temperature", "max_tokens", "detail",
                    "max_attempts"]
ALL = "*"

READS: dict[str, dict[str, Sequence[str] | str]] = {
    "raw_samples": {"data_store": WHERE, "quality": ["max_quarantine_rate", "max_quarantine_rate_by_source",
                                                     "expected_reasons"]},
    "subsample": {"data_store": WHERE, "sampling": ALL},
    "annotations": {"data_store": WHERE, "teacher": TEACHER_IDENTITY},
    "validated": {"data_store": WHERE, "quality": ["min_validity_rate"]},
    "cot_dataset": {"data_store": WHERE, "dataset": ALL},
    # the world size sets the global batch, so it is part of what training computes
    "finetuned_model": {"data_store": WHERE, "training": ALL, "launcher": ["nproc_per_node", "nnodes"]},
    "benchmark_scores": {"data_store": WHERE, "evaluation": ALL, "teacher": TEACHER_IDENTITY},
    "benchmark_report": {"data_store": WHERE},
}
CONFIG_MARK = "|cfg:"


def _value(resource, field: str):
    value = getattr(resource, field, None)
    if isinstance(value, dg.EnvVar):
        value = value.get_value()
    return value


def config_digest(asset: str, resources: Mapping[str, object]) -> str:
    """A short hash of the resource fields `asset` reads (READS), as configured now."""
    read = {}
    for key, fields in READS.get(asset, {}).items():
        resource = resources.get(key)
        if resource is None:
            continue
        names = sorted(type(resource).model_fields) if fields == ALL else list(fields)
        read[key] = {f: _value(resource, f) for f in names if f != "api_key"}
        if key == "teacher" and hasattr(resource, "effective_backend"):
            read[key]["backend"] = resource.effective_backend()
    text = json.dumps(read, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def with_config_versions(assets: Sequence, resources: Mapping[str, object]) -> list:
    """The assets with `|cfg:<digest>` appended to each code version (the asset named by the first
    part of its key: benchmark_scores/<benchmark>/<strategy> reads what benchmark_scores reads)."""

    def version(spec: dg.AssetSpec) -> dg.AssetSpec:
        name = spec.key.path[0]
        if name not in READS:
            return spec
        base = (spec.code_version or "").split(CONFIG_MARK)[0]
        return spec.replace_attributes(code_version=f"{base}{CONFIG_MARK}{config_digest(name, resources)}")

    return [a.map_asset_specs(version) if isinstance(a, dg.AssetsDefinition) and a.is_materializable else a
            for a in assets]


def describe_change(recorded: str | None, current: str | None) -> str:
    """Why a code version differs, in words: the logic, the configuration it reads, or both."""
    old_logic, _, old_cfg = (recorded or "").partition(CONFIG_MARK)
    new_logic, _, new_cfg = (current or "").partition(CONFIG_MARK)
    if old_logic != new_logic and old_cfg != new_cfg:
        return "code and configuration changed"
    if old_logic != new_logic:
        return "code changed"
    return "configuration changed"
