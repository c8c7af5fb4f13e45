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
import warnings

import dagster as dg

# observable source assets are "beta" in Dagster 1.x; the warning says nothing a user can act on
warnings.filterwarnings("ignore", category=dg.BetaWarning)

from assets import dataset, evaluation, sources, training, validated
from assets.annotations import build_annotations_asset
from jobs.annotation import raw_data_sensor, reannotate_job, reannotate_schedule
from jobs.main import dataset_job, evaluation_job, main_job, observe_sources_job, report_job
from resources import DataStore, DatasetSettings, QualityThresholds, SamplingPlan
from resources.launcher import (DEFAULT_MODEL, TrainingLauncher, TrainingSettings, launcher_from_env,
                                training_settings_from_env)
from resources.evaluation import EvaluationSettings
from resources.teacher import teacher_from_env

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
            "launcher": TrainingLauncher(kind="local", nproc_per_node=2),
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

defs = dg.Definitions(
    assets=[
        sources.source_files,
        sources.raw_samples,
        sources.subsample,
        build_annotations_asset(RESOURCES["teacher"].model_label()),
        validated.validated,
        dataset.cot_dataset,
        training.finetuned_model,
        evaluation.benchmark_scores,
        evaluation.benchmark_report,
    ],
    jobs=[main_job, dataset_job, evaluation_job, report_job, observe_sources_job, reannotate_job],
    schedules=[reannotate_schedule],
    sensors=[raw_data_sensor],
    resources=RESOURCES,
)
