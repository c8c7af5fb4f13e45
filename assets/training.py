"""finetuned_model: full fine-tuning of Llama-3.2-Vision on cot_dataset with DeepSpeed, launched
through the deployment's launcher; rank 0 streams loss and throughput back over Dagster Pipes."""

import base64
import hashlib
import io
import json
import os
import time

import dagster as dg
from pydantic import Field

from assets.dataset import cot_dataset
from pipeline.shards import MANIFEST
from pipeline.train.launch import train_arguments
from resources import DataStore
from resources.launcher import TrainingLauncher, TrainingSettings
from resources.pipes_reporter import weights_digest

TRAINING_VERSION = "2"  # 2: length grouping, fused loss and AdamW, checkpointing of the vision layers


class TrainingConfig(dg.Config):
    """Run config; anything left unset takes the deployment's value (the `training` resource, which
    production sets from LLAVACOT_TRAIN_* variables)."""

    model: str | None = Field(default=None, description="Local folder or hub id; default: the deployment's "
                              "(the embedded tiny model in the demo, meta-llama/Llama-3.2-11B-Vision-Instruct otherwise).")
    epochs: int | None = None
    max_steps: int | None = Field(default=None, description="Stop after this many optimizer steps (0 or unset: epochs decide).")
    lr: float | None = None
    warmup_steps: int | None = Field(default=None, description="Linear warm-up steps (unset: 3 % of the run).")
    zero_stage: int | None = Field(default=None, description="DeepSpeed ZeRO stage: 3 (default) or 2.")
    per_device_batch_size: int | None = None
    grad_accum: int | None = None
    max_length: int | None = Field(default=None, description="Tokens per sequence; longer rows are truncated.")
    gradient_checkpointing: bool | None = Field(
        default=None, description="Activation checkpointing (text and vision layers); unset: on from 1 B parameters.")
    freeze_vision: bool | None = Field(default=None, description="Do not train the vision tower.")
    freeze_projector: bool | None = Field(default=None, description="Do not train the vision-to-text projector.")
    save_every: int | None = Field(default=None, description="Checkpoint every N optimizer steps (and at the end).")
    keep_checkpoints: int | None = Field(default=None, description="Keep the newest N checkpoints (0: all).")
    seed: int | None = None
    num_workers: int | None = Field(default=None, description="Data-loader worker processes per rank.")
    group_by_length: int | None = Field(default=None, description="Length-grouping window in micro-batches (0: off).")
    fused_loss: str | None = Field(default=None, description="auto | liger | chunked | off.")
    fused_kernels: str | None = Field(default=None, description="auto | off (Liger's fused norms and SwiGLU on a GPU).")
    compile: bool | None = Field(default=None, description="torch.compile the MLPs.")
    resume: bool = Field(default=False, description="Continue from the newest checkpoint in the output folder.")


@dg.asset(
    deps=[cot_dataset],
    group_name="training",
    code_version=f"train-{TRAINING_VERSION}",
    pool="training",  # one fine-tuning at a time across runs (the instance's pool limit)
    kinds={"pytorch", "deepspeed", "huggingface"},
    description="Full fine-tuning of Llama-3.2-Vision (MllamaForConditionalGeneration) on the Parquet "
    "shards of cot_dataset: loss on assistant tokens only, DeepSpeed ZeRO-3 (or 2), checkpoints with exact "
    "resume, a Hugging Face export. Launched by the `launcher` resource (local torchrun, DeepSpeed "
    "hostfile, Slurm or Kubernetes); loss, learning rate and throughput stream in over Dagster Pipes.",
)
def finetuned_model(context: dg.AssetExecutionContext, config: TrainingConfig, data_store: DataStore,
                    launcher: TrainingLauncher, training: TrainingSettings) -> dg.MaterializeResult:
    dataset = data_store.step("cot_dataset")
    if not dataset.exists(MANIFEST):
        raise dg.Failure(description=f"cot_dataset has no {MANIFEST} at {dataset.uri}; materialise cot_dataset first")
    with dataset.open(MANIFEST, "rb") as f:
        manifest_bytes = f.read()
    manifest = json.loads(manifest_bytes)
    out = training.output_path(data_store.root())
    model = config.model or training.model_path(data_store.root())
    options = training.options(config.model_dump(), model=model, data=dataset.uri, output_dir=out)
    run_dir = os.path.join(out, "runs", context.run_id[:8])
    started = time.monotonic()
    args = train_arguments(options) + list(training.extra_args)
    invocation, launched = launcher.launch(context, args, run_dir,
                                           extras={"dataset_manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest()})
    wall = time.monotonic() - started
    messages = invocation.get_custom_messages()
    steps = [m for m in messages if isinstance(m, dict) and m.get("event") == "metrics"]
    checkpoints = [m for m in messages if isinstance(m, dict) and m.get("event") == "checkpoint"]
    final = next((m.get("final", {}) for m in messages if isinstance(m, dict) and m.get("event") == "final"), {})
    reported = invocation.get_materialize_result()  # rank 0's final metrics and the weights' hash
    export = final.get("export")
    version = reported.data_version.value if reported.data_version else (weights_digest(export) if export else None)
    if not steps or not export:
        raise dg.Failure(description="training ended without reporting metrics or an export; see the run's stdout")
    context.log.info(f"fine-tuned {model}: {len(steps)} steps, export in {export}")

    losses = [(m["step"], m["metrics"].get("loss")) for m in steps if m["metrics"].get("loss") is not None]
    throughput = steady_rates(steps)
    png = loss_curve_png(steps)
    metadata = {
        # rank 0's final figures; paths are shown once, below, as paths, and throughput once, as the
        # steady-state rates (the final line's rates include the first step's start-up)
        **{k: v for k, v in (reported.metadata or {}).items()
           if k not in ("final/checkpoint", "final/export", "final/tokens_per_s", "final/samples_per_s")},
        "loss_curve": dg.MetadataValue.md("![loss](data:image/png;base64," + base64.b64encode(png).decode() + ")"),
        "loss/first": losses[0][1] if losses else None,
        "loss/last": losses[-1][1] if losses else None,
        "loss_points": dg.MetadataValue.json([{"step": s, "loss": v} for s, v in losses]),
        "steps": steps[-1]["step"],
        # the one throughput figure: non-padding tokens (and rows) per second over all ranks, from the
        # second step on
        "tokens_per_s": throughput["tokens_per_s"],
        "samples_per_s": throughput["samples_per_s"],
        "peak_memory_gib": max((m["metrics"].get("peak_memory_gib") or 0 for m in steps), default=None),
        "wall_time_s": round(wall, 1),
        "checkpoint": dg.MetadataValue.path(final.get("checkpoint") or (checkpoints[-1]["path"] if checkpoints else "")),
        "checkpoints_saved": len(checkpoints),
        "export": dg.MetadataValue.path(export),
        "model": model,
        "zero_stage": options["zero_stage"],
        "output_dir": dg.MetadataValue.path(out),
        "dataset_manifest": dg.MetadataValue.path(dataset.path(MANIFEST)),
        "dataset_manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        "dataset_rows": dg.MetadataValue.json({split: t["rows"] for split, t in manifest["totals"]["splits"].items()}),
        "launcher": dg.MetadataValue.json(launcher.describe()),
        "launched": launched,
    }
    return dg.MaterializeResult(metadata={k: v for k, v in metadata.items() if v is not None},
                                data_version=dg.DataVersion(version) if version else None)


def steady_rates(steps: list[dict]) -> dict[str, float | None]:
    """tokens/s and samples/s of the run without its first step (start-up: data loader, first
    gathers): each report covers the work since the previous one at its own rate, so the total
    work over the total time of those windows."""
    out: dict[str, float | None] = {}
    for count, rate in (("tokens", "tokens_per_s"), ("samples", "samples_per_s")):
        work = seconds = 0.0
        previous = None
        for m in steps:
            total, r = m["metrics"].get(count), m["metrics"].get(rate)
            if previous is not None and isinstance(total, (int, float)) and r:
                work += total - previous
                seconds += (total - previous) / r
            previous = total if isinstance(total, (int, float)) else None
        out[rate] = round(work / seconds, 2) if seconds else None
    return out


def loss_curve_png(steps: list[dict]) -> bytes:
    """Training loss per optimizer step (left axis) and the learning rate (right axis)."""
    from pipeline.plots import _pyplot

    plt = _pyplot()
    xs = [m["step"] for m in steps if m["metrics"].get("loss") is not None]
    ys = [m["metrics"]["loss"] for m in steps if m["metrics"].get("loss") is not None]
    fig, ax = plt.subplots(figsize=(6.4, 3.0), dpi=100)
    ax.plot(xs, ys, marker="o" if len(xs) <= 50 else None, markersize=3, color="#4c72b0", label="loss")
    ax.set_xlabel("optimizer step", fontsize=9)
    ax.set_ylabel("training loss", fontsize=9)
    ax.tick_params(labelsize=8)
    lr = [(m["step"], m["metrics"]["lr"]) for m in steps if isinstance(m["metrics"].get("lr"), (int, float))]
    if lr:
        ax2 = ax.twinx()
        ax2.plot([s for s, _ in lr], [v for _, v in lr], color="#dd8452", linewidth=1, label="lr")
        ax2.set_ylabel("learning rate", fontsize=9, color="#dd8452")
        ax2.tick_params(labelsize=8, colors="#dd8452")
    ax.set_title(f"loss {ys[0]:.3f} → {ys[-1]:.3f} over {xs[-1]} steps" if ys else "no loss reported", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
