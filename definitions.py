"""The one Definitions object: assets, checks, jobs and resources, chosen per deployment.

LLAVACOT_DEPLOYMENT=demo (default): everything under ./data (or LLAVACOT_DATA_ROOT), the embedded
sample written on first use, demo-sized quotas. LLAVACOT_DEPLOYMENT=production: the data root and
the raw root come from LLAVACOT_DATA_ROOT / LLAVACOT_RAW_ROOT (any fsspec URI, e.g. s3://...),
the paper's quotas.

Training: the demo fine-tunes the embedded tiny Mllama (its "demo" size) for about a minute with two
CPU ranks on this host (torchrun + DeepSpeed ZeRO-2 on the CPU accelerator), long enough to answer
in four stages; production takes the launcher from
LLAVACOT_LAUNCHER and friends (resources/launcher.py: launcher_from_env) and the model from
LLAVACOT_MODEL (default meta-llama/Llama-3.2-11B-Vision-Instruct) with the paper's hyperparameters.
"""
from __future__ import annotations

import os

import dagster as dg

from jobs.quiet import quiet_warnings

quiet_warnings()  # once, here and in the CLI: the entry points of every Dagster process

from assets import dataset, evaluation, sources, training, validated  # noqa: E402
from assets.annotations import build_annotations_asset  # noqa: E402
from assets.automation import on_new_inputs  # noqa: E402
from assets.versions import with_config_versions  # noqa: E402
from jobs.annotation import reannotate_job, reannotate_schedule  # noqa: E402
from jobs.main import STAGE_JOBS, observe_sources_job  # noqa: E402
from resources import DataStore, DatasetSettings, QualityThresholds, SamplingPlan  # noqa: E402
from resources.launcher import (DEFAULT_MODEL, TrainingLauncher, TrainingSettings, launcher_from_env,  # noqa: E402
                                training_settings_from_env)
from resources.evaluation import EvaluationSettings  # noqa: E402
from resources.teacher import teacher_from_env  # noqa: E402

DEPLOYMENT = os.environ.get("LLAVACOT_DEPLOYMENT", "demo")
TINY_STEPS = 200  # the demo's fine-tuning: optimizer steps of the tiny model (~13 epochs of the sample)
# new tokens per stage: room for the demo teacher's answers (in the tiny tokenizer's tokens its
# summaries take at most 18, captions 15, reasonings 16, 90 % of conclusions 14: the sample's detailed
# descriptions up to 131), so a model that learned the format can write it whole; a model that writes
# no tags stops after the first stage
TINY_BUDGETS = {"summary": 128, "caption": 48, "reasoning": 160, "conclusion": 32}


def _resources(deployment: str) -> dict:
    if deployment == "demo":
        return {
            "data_store": DataStore(
                root_uri=os.environ.get("LLAVACOT_DATA_ROOT", "data"), embedded_sample=True
            ),
            # A 1/1000 scale of the paper's table, at least 10 per source: on the tens of rows
            # of the embedded sample the subsample really selects.
            "sampling": SamplingPlan(scale=0.001, min_quota=10),
            # The embedded sample plants bad rows of every kind on purpose (up to a third of a
            # source), so its limit is looser than production's.
            "quality": QualityThresholds(max_quarantine_rate=0.5),
            # the real client when OPENAI_API_KEY is set, else the offline template teacher
            "teacher": teacher_from_env(),
            # small shards and a larger validation share, so the tiny sample shows both splits
            "dataset": DatasetSettings(validation_fraction=0.1, shard_target_mb=1.0),
            # two CPU ranks on this host, the tiny model: a real DeepSpeed run of about a minute
            # OMP_NUM_THREADS=1 is what torchrun sets anyway; set here, torchrun does not warn about it
            "launcher": TrainingLauncher(kind="local", nproc_per_node=2, env={"OMP_NUM_THREADS": "1"}),
            "training": TrainingSettings(tiny_model=True, tiny_model_size="demo", max_steps=TINY_STEPS, lr=2e-3,
                                         warmup_steps=40, per_device_batch_size=4, zero_stage=2, max_length=512,
                                         save_every=TINY_STEPS, num_workers=0),
            # the six tiny benchmark files of the embedded sample; short stage budgets for the tiny model
            "evaluation": EvaluationSettings(write_demo_benchmarks=True, stage_budgets=TINY_BUDGETS, sentence_tokens=12),
        }
    if deployment == "production":
        return {
            "data_store": DataStore(
                root_uri=dg.EnvVar("LLAVACOT_DATA_ROOT"),
                raw_uri=dg.EnvVar("LLAVACOT_RAW_ROOT"),
            ),
            "sampling": SamplingPlan(),
            "quality": QualityThresholds(),
            "teacher": teacher_from_env(backend="openai", max_spend_usd=float(os.environ.get("LLAVACOT_MAX_SPEND_USD", "500"))),
            "dataset": DatasetSettings(),
            "launcher": launcher_from_env(),
            # LLAVACOT_MODEL, LLAVACOT_TRAIN_OUTPUT and LLAVACOT_TRAIN_<FIELD> for every training setting
            "training": training_settings_from_env(model=DEFAULT_MODEL),
            "evaluation": EvaluationSettings(benchmark_dir=os.environ.get("LLAVACOT_BENCHMARK_DIR", "")),
        }
    raise ValueError(f"LLAVACOT_DEPLOYMENT must be 'demo' or 'production', not {deployment!r}")


RESOURCES = _resources(DEPLOYMENT)
# What is evaluated: every benchmark under every strategy unless LLAVACOT_BENCHMARKS /
# LLAVACOT_STRATEGIES (comma-separated) name fewer.
EVALUATED = tuple(
    tuple(v.strip() for v in os.environ[var].split(",") if v.strip()) if os.environ.get(var) else default
    for var, default in (("LLAVACOT_BENCHMARKS", evaluation.BENCHMARKS),
                         ("LLAVACOT_STRATEGIES", evaluation.STRATEGY_KEYS))
)


def build_defs(resources: dict, evaluated: tuple = EVALUATED) -> dg.Definitions:
    """The Definitions for these resources (a deployment's; tests pass their own)."""
    assets = with_config_versions([
        sources.raw_samples,
        sources.subsample,
        build_annotations_asset(resources["teacher"].model_label()),
        validated.validated,
        dataset.cot_dataset,
        training.finetuned_model,
        *evaluation.build_evaluation(*evaluated),
    ], resources)
    assets = [a.map_asset_specs(lambda spec: spec.replace_attributes(automation_condition=on_new_inputs()))
              for a in assets]
    return dg.Definitions(
        assets=[sources.source_files, *assets],
        jobs=[observe_sources_job, *STAGE_JOBS, reannotate_job],
        schedules=[reannotate_schedule],
        sensors=[automation_sensor],
        resources=resources,
        # one process per run: steps run one after another (the heavy ones start their own workers),
        # and a run pays for one Python start-up, not one per step
        executor=dg.in_process_executor,
    )


# Evaluates the assets' automation conditions (assets/automation.py): on by default where a daemon
# serves a team, off in the demo so browsing the UI starts nothing by itself.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation", target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING if DEPLOYMENT == "production" else dg.DefaultSensorStatus.STOPPED,
    description="Observes the raw folders on a cron, then runs every asset whose inputs have new data "
    "versions or whose code or configuration changed.",
)

defs = build_defs(RESOURCES)
