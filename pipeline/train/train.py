"""Fine-tune Llama-3.2-Vision on the LLaVA-CoT shards with DeepSpeed: `python -m pipeline.train`.

Full fine-tuning (PAPER.md: lr 1e-5, 3 epochs, batch 4 per device) of `MllamaForConditionalGeneration`
with the loss on assistant tokens only, DeepSpeed ZeRO-3 (ZeRO-2 optional), checkpoints with exact
resume, and a final Hugging Face folder (weights + processor) that `from_pretrained` loads.

One host, N processes (GPUs, or CPU ranks with DS_ACCELERATOR=cpu):

    torchrun --nproc_per_node N -m pipeline.train --data DATASET_DIR --output-dir RUN_DIR
    deepspeed --num_gpus N --module pipeline.train --data DATASET_DIR --output-dir RUN_DIR

Several hosts (M nodes with N GPUs each): torchrun runs the same command on every node; the
deepspeed launcher runs once, on the first node, and starts the other nodes over ssh (pdsh):

    torchrun --nnodes M --nproc_per_node N --node_rank $NODE_RANK \\
        --rdzv_backend c10d --rdzv_endpoint $MASTER_ADDR:29500 --rdzv_id $JOB_ID \\
        -m pipeline.train --data DATASET_DIR --output-dir RUN_DIR
    deepspeed --hostfile hostfile --num_nodes M --num_gpus N \\
        --master_addr $MASTER_ADDR --master_port 29500 \\
        --module pipeline.train --data DATASET_DIR --output-dir RUN_DIR
    (hostfile: one line per node, "node1 slots=N"; DATASET_DIR and RUN_DIR on storage every node
    sees; under Slurm, `srun torchrun ...` with $MASTER_ADDR the first node of the allocation)

Alone, `python -m pipeline.train ...` is one process (world size 1). On this CPU-only machine:
`DS_ACCELERATOR=cpu torchrun --nproc_per_node 2 -m pipeline.train --data ... --model TINY_MODEL_DIR`
(backend gloo, chosen automatically on the CPU accelerator).

DATASET_DIR holds `manifest.json` and the Parquet shards it lists (pipeline/shards.py). RUN_DIR gets
`metrics.jsonl` (the default reporter), `checkpoints/step-NNNNNNN/` (DeepSpeed checkpoints with the
data position and RNG states; `checkpoints/latest` names the newest) and `final/` (the export).
`--resume` continues from the newest checkpoint exactly (model, optimizer, scheduler, RNG, data
position); give the same arguments as the first run. Metrics go through the reporter on rank 0
(pipeline/train/report.py; `--reporter module:attr` or $LLAVACOT_TRAIN_REPORTER).

Speed and memory, as a trainer should report them: every metrics line has the step time, MFU (model
FLOPs of the step's real shapes, pipeline/train/flops.py, over the GPUs' bf16 peak), peak memory and
the useful-token fraction (non-padding tokens over padded batch tokens). `--plan` prints the
per-GPU memory of the run and whether it fits, without training (pipeline/train/plan.py).
`--profile-steps A:B` profiles those steps with torch.profiler (a Chrome trace in
OUTPUT_DIR/profile/) and reports how busy the GPU was. What makes the step fast: length-grouped
batches (`--group-by-length`), torch's fused AdamW kernel instead of a JIT-built one, no host
synchronisation per micro-batch (the loss stays on the device until a metrics line needs it, and
that line is read one step later, when the next step's work is already queued), pinned memory and
asynchronous copies, a fused linear + cross-entropy for the 128k vocabulary (`--fused-loss`),
Liger's fused norms and SwiGLU on a GPU (`--fused-kernels`), optionally `--compile`. Activation
checkpointing (`--gradient-checkpointing`) covers the vision layers too; by default it is on for
models of 1 B parameters or more.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import socket
import sys
import time
import warnings
from pathlib import Path

from pipeline.train.model import DEFAULT_MODEL

DEFAULTS = {  # every default of the command line, here only
    "model": DEFAULT_MODEL,
    "split": "train",
    "zero_stage": 3,
    "epochs": 3,
    "max_steps": 0,
    "per_device_batch_size": 4,
    "grad_accum": 1,
    "lr": 1e-5,
    "weight_decay": 0.0,
    "adam_beta1": 0.9,
    "adam_beta2": 0.999,
    "adam_eps": 1e-8,
    "warmup_ratio": 0.03,
    "min_lr_ratio": 0.0,
    "max_grad_norm": 1.0,
    "max_length": 4096,
    "dtype": "auto",
    "save_every": 500,
    "keep_checkpoints": 3,  # DeepSpeed checkpoints of the 11B model are >= 128 GB each
    "seed": 42,
    "shuffle_window": 4,
    "group_by_length": 64,
    "num_workers": 2,
    "prefetch_factor": 4,
    "log_every": 1,
    "attn_implementation": "sdpa",
    "fused_loss": "auto",
    "fused_kernels": "auto",
    "backend": "auto",
}
CHECKPOINTING_FROM_PARAMETERS = 1_000_000_000  # --gradient-checkpointing's default: on from this size

CHECKPOINTS = "checkpoints"
FINAL = "final"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown; the epilog (this module's docstring: the launch commands) kept as written."""


def build_parser() -> argparse.ArgumentParser:
    d = DEFAULTS
    p = argparse.ArgumentParser(prog="python -m pipeline.train", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=_HelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--data", required=True, help="folder (or fsspec URI) with manifest.json and the shards")
    g.add_argument("--split", default=d["split"])
    g.add_argument("--max-length", type=int, default=d["max_length"], help="tokens per sequence (truncated)")
    g.add_argument("--shuffle", action=argparse.BooleanOptionalAction, default=True,
                   help="shuffle rows each epoch (row groups, then rows within windows of row groups)")
    g.add_argument("--shuffle-window", type=int, default=d["shuffle_window"], help="row groups shuffled together")
    g.add_argument("--group-by-length", type=int, default=d["group_by_length"], metavar="K",
                   help="sort rows by length within windows of K micro-batches (less padding); 0: off")
    g.add_argument("--num-workers", type=int, default=d["num_workers"], help="DataLoader worker processes")
    g.add_argument("--prefetch-factor", type=int, default=d["prefetch_factor"], help="batches each worker prepares ahead")
    g = p.add_argument_group("model")
    g.add_argument("--model", default=d["model"], help="local folder or hub id (model + processor)")
    g.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default=d["dtype"],
                   help="auto: bf16 when the accelerator supports it, else fp32 (CPU)")
    g.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                   help="activation checkpointing of the text and vision layers; default: on for models of "
                        f"{CHECKPOINTING_FROM_PARAMETERS / 1e9:g} B parameters or more")
    g.add_argument("--random-init", action="store_true",
                   help="build the model from MODEL's config.json with random weights (no weights read): benchmarks")
    g.add_argument("--freeze-vision", action="store_true", help="do not train the vision tower")
    g.add_argument("--freeze-projector", action="store_true", help="do not train the vision-to-text projector")
    g.add_argument("--attn-implementation", default=d["attn_implementation"], help="sdpa | eager | flex_attention")
    g = p.add_argument_group("speed")
    g.add_argument("--fused-loss", choices=["auto", "liger", "chunked", "off"], default=d["fused_loss"],
                   help="linear + cross-entropy without full logits (pipeline/train/loss.py); auto: Liger on a GPU "
                        "when it works, else the chunked PyTorch version")
    g.add_argument("--fused-kernels", choices=["auto", "off"], default=d["fused_kernels"],
                   help="auto: Liger's RMSNorm, LayerNorm and SwiGLU on a GPU when liger-kernel is installed")
    g.add_argument("--fused-optimizer", action=argparse.BooleanOptionalAction, default=True,
                   help="torch.optim.AdamW(fused=True) on a GPU")
    g.add_argument("--compile", action="store_true", help="torch.compile the MLPs (pipeline/train/model.py)")
    g.add_argument("--peak-tflops", type=float, default=None,
                   help="the accelerator's bf16 peak for MFU; default: from the GPU's name (pipeline/train/flops.py)")
    g.add_argument("--profile-steps", default=None, metavar="A:B",
                   help="profile optimizer steps A to B (1-based); trace in OUTPUT_DIR/profile/, GPU-busy fraction reported")
    g.add_argument("--plan", action="store_true", help="print the per-GPU memory plan of this run and exit")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=d["epochs"])
    g.add_argument("--max-steps", type=int, default=d["max_steps"],
                   help="optimizer steps of the whole run (the schedule's length); 0: from --epochs")
    g.add_argument("--per-device-batch-size", type=int, default=d["per_device_batch_size"])
    g.add_argument("--grad-accum", type=int, default=d["grad_accum"], help="micro-batches per optimizer step")
    g.add_argument("--lr", type=float, default=d["lr"])
    g.add_argument("--weight-decay", type=float, default=d["weight_decay"])
    g.add_argument("--adam-beta1", type=float, default=d["adam_beta1"])
    g.add_argument("--adam-beta2", type=float, default=d["adam_beta2"])
    g.add_argument("--adam-eps", type=float, default=d["adam_eps"])
    g.add_argument("--warmup-ratio", type=float, default=d["warmup_ratio"])
    g.add_argument("--warmup-steps", type=int, default=None, help="overrides --warmup-ratio")
    g.add_argument("--min-lr-ratio", type=float, default=d["min_lr_ratio"], help="cosine floor, times --lr")
    g.add_argument("--max-grad-norm", type=float, default=d["max_grad_norm"])
    g.add_argument("--seed", type=int, default=d["seed"])
    g = p.add_argument_group("deepspeed")
    g.add_argument("--zero-stage", type=int, choices=[2, 3], default=d["zero_stage"],
                   help="which shipped config (pipeline/train/configs/zero{2,3}.json)")
    g.add_argument("--deepspeed-config", default=None, help="a DeepSpeed JSON instead of the shipped one")
    g.add_argument("--backend", default=d["backend"], help="torch.distributed backend; auto: the accelerator's")
    g.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    g = p.add_argument_group("checkpoints and output")
    g.add_argument("--output-dir", required=True)
    g.add_argument("--save-every", type=int, default=d["save_every"],
                   help="checkpoint every K optimizer steps (and always at the end); 0: only at the end")
    g.add_argument("--keep-checkpoints", type=int, default=d["keep_checkpoints"], help="keep the newest K; 0: all")
    g.add_argument("--no-final-checkpoint", action="store_true",
                   help="do not checkpoint at the last step (the export is still written): benchmarks, short runs")
    g.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue from the newest checkpoint in OUTPUT_DIR/checkpoints (or from this "
                        "checkpoint folder); a fresh start when there is none")
    g.add_argument("--stop-at-step", type=int, default=None,
                   help="checkpoint and stop at this step without finishing the schedule (a time-limited "
                        "allocation; continue with --resume)")
    g.add_argument("--export-dir", default=None, help=f"the Hugging Face folder; default OUTPUT_DIR/{FINAL}")
    g.add_argument("--no-export", action="store_true")
    g.add_argument("--log-every", type=int, default=d["log_every"], help="report metrics every K steps")
    g.add_argument("--reporter", default=None,
                   help="module:attr of the metrics reporter (default $LLAVACOT_TRAIN_REPORTER, else JSON lines)")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.per_device_batch_size <= 0 or args.grad_accum <= 0:
        raise SystemExit("--per-device-batch-size and --grad-accum must be positive")
    if args.max_steps < 0 or args.epochs <= 0:
        raise SystemExit("--max-steps must be >= 0 and --epochs > 0")
    if args.group_by_length < 0 or args.num_workers < 0 or args.prefetch_factor <= 0:
        raise SystemExit("--group-by-length and --num-workers must be >= 0, --prefetch-factor > 0")
    if args.profile_steps:
        try:
            a, b = (int(x) for x in args.profile_steps.split(":"))
        except ValueError:
            raise SystemExit(f"--profile-steps {args.profile_steps!r}: expected A:B, e.g. 4:6") from None
        if not 1 <= a <= b:
            raise SystemExit("--profile-steps A:B needs 1 <= A <= B")
        args.profile_range = (a, b)
    else:
        args.profile_range = None
    return args


# distributed set-up ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launcher_env() -> None:
    """torchrun and the deepspeed launcher set RANK, WORLD_SIZE, MASTER_ADDR...; a process started
    by `srun` directly (one task per GPU) has SLURM_* instead, mapped here (MASTER_ADDR must be
    exported by the batch script); a process started alone is a world of one."""
    env = os.environ
    if "RANK" in env:
        return
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        if "MASTER_ADDR" not in env:
            raise SystemExit("started by srun without a launcher: export MASTER_ADDR (and MASTER_PORT)")
        env.update({"RANK": env["SLURM_PROCID"], "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
                    "WORLD_SIZE": env["SLURM_NTASKS"]})
        env.setdefault("MASTER_PORT", "29500")
        return
    env.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"})
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    env.setdefault("MASTER_PORT", str(_free_port()))


def init_distributed(backend: str):
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    _launcher_env()
    accel = get_accelerator()
    if accel.device_name() == "cpu":
        # DeepSpeed compiles a shared-memory all-reduce kernel for CPU *inference* when its
        # communication backend starts; training never calls it, so skip the compile.
        import importlib

        ds_torch = importlib.import_module("deepspeed.comm.torch")  # the module, not deepspeed.comm's `torch`
        if hasattr(ds_torch, "build_shm_op"):
            ds_torch.build_shm_op = lambda: None
    else:
        accel.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if backend == "auto":
        backend = accel.communication_backend_name()
        if accel.device_name() == "cpu" and backend != "gloo":
            backend = "gloo"  # the CPU accelerator names "ccl", which needs oneCCL; gloo is in torch
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)
    return accel, backend


# RNG state ----------------------------------------------------------------------------------------


def rng_state() -> dict:
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# checkpoints ----------------------------------------------------------------------------------------


def checkpoint_tag(step: int) -> str:
    return f"step-{step:07d}"


def rng_file(rank: int) -> str:
    return f"rng_state_rank{rank:05d}.pt"


def resolve_resume(spec: str, ckpt_dir: Path) -> tuple[str, str | None] | None:
    """(load_dir, tag) for DeepSpeed's load_checkpoint, or None to start afresh."""
    if spec == "auto":
        return (str(ckpt_dir), None) if (ckpt_dir / "latest").is_file() else None
    path = Path(spec)
    if (path / "latest").is_file():
        return str(path), None
    if path.is_dir():
        return str(path.parent), path.name
    raise SystemExit(f"--resume {spec}: no such checkpoint")


def prune_checkpoints(ckpt_dir: Path, keep: int) -> None:
    if keep <= 0:
        return
    tags = sorted(p for p in ckpt_dir.glob("step-*") if p.is_dir())
    for old in tags[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


# the run ------------------------------------------------------------------------------------------


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.plan:
        return print_plan(args)
    # DeepSpeed calls torch.distributed's old collective names; torch warns at every call
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)
    accel, backend = init_distributed(args.backend)

    import deepspeed
    import torch
    import torch.distributed as dist
    from deepspeed.utils import logger as ds_logger

    from pipeline.train import ds_config as dsc
    from pipeline.train.collator import Collator
    from pipeline.train.data import ResumableBatchSampler, ShardDataset
    from pipeline.train.model import count_parameters, freeze, load_processor, make_dummy_images_inert, zero3_init_context
    from pipeline.train.report import NullReporter, load_reporter

    ds_logger.setLevel("WARNING")
    rank, world = dist.get_rank(), dist.get_world_size()
    started = time.time()
    output_dir = Path(args.output_dir)
    ckpt_dir = output_dir / CHECKPOINTS
    export_dir = Path(args.export_dir) if args.export_dir else output_dir / FINAL
    if rank == 0:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    reporter = load_reporter(args.reporter) if rank == 0 else NullReporter()
    seed_everything(args.seed)

    # precision
    cpu = accel.device_name() == "cpu"
    bf16_ok = (not cpu) and accel.is_bf16_supported()
    if args.dtype == "bf16" and not accel.is_bf16_supported():
        raise SystemExit("--dtype bf16: this accelerator does not support bf16")
    bf16 = args.dtype == "bf16" or (args.dtype == "auto" and bf16_ok)
    dtype = torch.bfloat16 if bf16 else torch.float32

    # data and schedule
    processor = load_processor(args.model)
    dataset = ShardDataset(args.data, args.split, cache_row_groups=args.shuffle_window + 1)
    lengths = dataset.row_lengths(processor.tokenizer) if args.group_by_length else None
    sampler = ResumableBatchSampler(dataset.group_rows, args.per_device_batch_size, rank=rank, world_size=world,
                                    seed=args.seed, shuffle=args.shuffle, window=args.shuffle_window,
                                    epochs=None if args.max_steps else args.epochs, lengths=lengths,
                                    group_batches=args.group_by_length)
    if args.max_steps:
        total_steps = args.max_steps
    else:
        total_steps = max(1, args.epochs * sampler.batches_per_epoch // args.grad_accum)
    warmup = args.warmup_steps if args.warmup_steps is not None else math.ceil(args.warmup_ratio * total_steps)
    warmup = max(0, min(warmup, total_steps))

    # model and DeepSpeed
    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(args.model)
    hidden = model_config.text_config.hidden_size
    config = dsc.fill(dsc.load(args.deepspeed_config, args.zero_stage), dsc.auto_values(
        micro_batch=args.per_device_batch_size, grad_accum=args.grad_accum, world_size=world,
        max_grad_norm=args.max_grad_norm, bf16=bf16, lr=args.lr, betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_eps, weight_decay=args.weight_decay, cpu=cpu, hidden_size=hidden))
    stage = dsc.zero_stage(config)
    hf_ds_config = zero3_init_context(config) if stage == 3 else None  # noqa: F841 - alive while loading
    device = torch.device("cpu") if cpu else torch.device(accel.device_name(), int(os.environ.get("LOCAL_RANK", "0")))
    model, speed = build_model(args, model_config, dtype, device)
    counts = freeze(model, frozen_parts(args))
    make_dummy_images_inert(model)
    scheduler = None
    if "scheduler" not in config:
        factor = dsc.warmup_cosine(total_steps, warmup, args.min_lr_ratio)
        scheduler = lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, factor)  # noqa: E731
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = None
    if "optimizer" not in config:
        optimizer = make_optimizer(trainable, args, fused=args.fused_optimizer and not cpu)
        speed["optimizer"] = "torch AdamW (fused kernel)" if optimizer.defaults.get("fused") else "torch AdamW"
    else:
        speed["optimizer"] = f"DeepSpeed {config['optimizer'].get('type')} (from the DeepSpeed config)"
    engine, _, _, lr_scheduler = deepspeed.initialize(
        model=model, model_parameters=trainable, optimizer=optimizer, config=config, lr_scheduler=scheduler)
    device = engine.device

    # resume
    step, micro, resumed_from = 0, 0, None
    if args.resume:
        step, micro, resumed_from = resume(args, engine, ckpt_dir, total_steps, rank, world, sampler)
    sampler.start = micro
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=Collator(processor, max_length=args.max_length),
        num_workers=args.num_workers, persistent_workers=args.num_workers > 0,
        prefetch_factor=args.prefetch_factor if args.num_workers > 0 else None,
        pin_memory=device.type == "cuda",
        # its own generator: creating the loader's iterator must not draw from the global RNG,
        # which a resumed run has just restored
        generator=torch.Generator().manual_seed(args.seed))

    stop_at = min(total_steps, args.stop_at_step) if args.stop_at_step else total_steps
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else accel.device_name()
    from pipeline.train.flops import peak_tflops

    peak = peak_tflops(device_name, args.peak_tflops)
    run_config = {
        **{k: v for k, v in vars(args).items() if k not in ("local_rank", "profile_range")},
        "world_size": world, "backend": backend, "accelerator": accel.device_name(), "device_name": device_name,
        "param_dtype": str(dtype).replace("torch.", ""), "zero_stage": stage, "total_steps": total_steps,
        "warmup_steps": warmup, "rows": len(dataset), "batches_per_epoch_per_rank": sampler.batches_per_epoch,
        "steps_per_epoch": sampler.batches_per_epoch / args.grad_accum,
        "parameters": count_parameters(model), **{f"parameters_{k}": v for k, v in counts.items()},
        "resumed_from": resumed_from, "start_step": step, "peak_tflops_per_device": peak, "speed": speed,
        "deepspeed_config": config,
    }
    reporter.open(run_config)
    if rank == 0:
        print("speed settings: " + ", ".join(f"{k}: {v}" for k, v in speed.items()), file=sys.stderr, flush=True)
    from pipeline.train.loop import TrainLoop

    loop = TrainLoop(args, engine, lr_scheduler, reporter, sampler, model_config, dtype, device, peak, world,
                     rank, ckpt_dir, step, micro, total_steps, stop_at, resumed_from is not None, output_dir)
    try:
        final = loop.run(loader)
        if loop.step >= total_steps:
            if loop.last_saved != loop.step and loop.step > 0 and not args.no_final_checkpoint:
                final["checkpoint"] = loop.save(loop.step)
            if not args.no_export:
                export(engine, stage, processor, export_dir, rank, run_config)
                final["export"] = str(export_dir)
            final["finished"] = True
        else:
            final["finished"] = False  # stopped early (--stop-at-step): continue with --resume
        final["wall_s"] = time.time() - started
    except BaseException as exc:
        reporter.close({"step": loop.step, "finished": False, "error": f"{type(exc).__name__}: {exc}",
                        "wall_s": time.time() - started})
        raise
    reporter.close(final)
    dist.barrier()
    # torch asks for this before exit: left to the interpreter's teardown, gloo's threads can abort
    # a rank ("terminate called without an active exception") after a run that succeeded
    dist.destroy_process_group()
    return final


def frozen_parts(args) -> list[str]:
    return [name for name, on in (("vision", args.freeze_vision), ("projector", args.freeze_projector)) if on]


def print_plan(args) -> dict:
    """`--plan`: the per-GPU memory of this run (world size from $WORLD_SIZE, GPU memory from the
    local GPU, else 80 GiB), printed; exits 0 when it fits, 1 when not."""
    import torch
    from transformers import AutoConfig

    from pipeline.train import plan as planning

    config = AutoConfig.from_pretrained(args.model)
    gpu = torch.cuda.is_available()
    memory = torch.cuda.get_device_properties(0).total_memory / planning.GiB if gpu else 80.0
    world = int(os.environ.get("WORLD_SIZE", "1"))
    checkpointing = args.gradient_checkpointing
    if checkpointing is None:
        checkpointing = planning.count_parameters(config) >= CHECKPOINTING_FROM_PARAMETERS
    shape = planning.RunShape(world_size=world, per_device_batch_size=args.per_device_batch_size,
                              seq_len=args.max_length, zero_stage=args.zero_stage, gradient_checkpointing=checkpointing,
                              fused_loss=args.fused_loss != "off", param_bytes=4 if args.dtype == "fp32" else 2,
                              frozen=tuple(frozen_parts(args)), gpu_memory_gib=memory, gpu=True)
    p = planning.plan(config, shape)
    print(planning.render(p))
    raise SystemExit(0 if p.fits else 1)


def build_model(args, model_config, dtype, device):
    """The model with this run's speed and memory settings; returns it and what was applied."""
    import torch

    from pipeline.train import loss as fused_loss
    from pipeline.train.model import (checkpoint_vision_layers, compile_blocks, count_parameters, fused_kernels,
                                      load_model, random_model)

    if args.random_init:
        model = random_model(model_config, dtype=dtype, attn_implementation=args.attn_implementation, device=device)
    else:
        model = load_model(args.model, dtype=dtype, attn_implementation=args.attn_implementation)
    model.config.use_cache = False
    model.config.text_config.use_cache = False
    speed: dict = {}
    checkpointing = args.gradient_checkpointing
    if checkpointing is None:
        checkpointing = count_parameters(model) >= CHECKPOINTING_FROM_PARAMETERS
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        checkpoint_vision_layers(model)
    speed["gradient_checkpointing"] = bool(checkpointing)
    cuda = device.type == "cuda"
    speed["fused_kernels"] = fused_kernels(model) if (cuda and args.fused_kernels == "auto") else []
    name, fn = fused_loss.resolve(args.fused_loss, device, dtype)
    if fn is not None:
        fused_loss.install(model, fn)
    speed["fused_loss"] = name
    speed["compiled_modules"] = 0
    if args.compile:
        try:
            speed["compiled_modules"] = compile_blocks(model)
        except Exception as exc:  # noqa: BLE001 - an optional speed-up: say why and train without it
            print(f"--compile: not applied ({type(exc).__name__}: {exc})", file=sys.stderr)
    speed["attention"] = args.attn_implementation
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls that remain (norm statistics, the loss)
    return model, speed


def make_optimizer(params, args, fused: bool):
    import torch

    kwargs = dict(lr=args.lr, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_eps,
                  weight_decay=args.weight_decay)
    if fused:
        try:
            return torch.optim.AdamW(params, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError) as exc:  # e.g. a parameter off the GPU
            print(f"fused AdamW unavailable ({exc}); using the multi-tensor one", file=sys.stderr)
    return torch.optim.AdamW(params, **kwargs)


def resume(args, engine, ckpt_dir: Path, total_steps: int, rank: int, world: int, sampler):
    """(step, micro-batches, folder) of the checkpoint `--resume` names, loaded into the engine; RNG
    states restored; (0, 0, None) when there is none."""
    import torch

    target = resolve_resume(args.resume, ckpt_dir)
    if target is None:
        if rank == 0:
            print(f"--resume: no checkpoint in {ckpt_dir}; starting afresh", file=sys.stderr)
        return 0, 0, None
    load_path, client = engine.load_checkpoint(target[0], tag=target[1], load_optimizer_states=True,
                                               load_lr_scheduler_states=True)
    if load_path is None:
        raise SystemExit(f"--resume: DeepSpeed could not load a checkpoint from {target}")
    step, micro = int(client["step"]), int(client["micro_batches"])
    if client.get("total_steps") != total_steps and rank == 0:
        print(f"warning: the checkpoint's run had {client.get('total_steps')} steps, this one has "
              f"{total_steps}: the learning-rate schedule does not continue exactly", file=sys.stderr)
    if client.get("data") != _data_signature(args, world, sampler):
        # samples seen so far, mapped onto the new layout: training continues, not exactly
        old = client.get("data") or {}
        seen = micro * old.get("world_size", world) * old.get("per_device_batch_size", args.per_device_batch_size)
        micro = seen // (world * args.per_device_batch_size) // args.grad_accum * args.grad_accum
        if rank == 0:
            print(f"warning: resuming with a different data layout ({old} -> "
                  f"{_data_signature(args, world, sampler)}): the data order does not continue exactly",
                  file=sys.stderr)
    folder = Path(load_path) if Path(load_path).is_dir() else Path(load_path).parent  # a file in it
    rng_path = folder / rng_file(rank)
    if rng_path.is_file():
        set_rng_state(torch.load(rng_path, weights_only=False))
    else:  # a rank that did not exist when the checkpoint was written
        seed_everything(args.seed + 1_000_003 * step + rank)
    return step, micro, str(folder)


def _data_signature(args, world: int, sampler) -> dict:
    """What the data position depends on: resuming with the same values continues exactly."""
    return {"world_size": world, "per_device_batch_size": args.per_device_batch_size, "seed": args.seed,
            "shuffle": args.shuffle, "shuffle_window": args.shuffle_window, "rows": sampler.num_rows,
            "grad_accum": args.grad_accum, "group_by_length": args.group_by_length}


def export(engine, stage: int, processor, out_dir: Path, rank: int, run_config: dict) -> None:
    """The trained weights (gathered from all ranks under ZeRO-3: DeepSpeed's 16-bit consolidation,
    which under fp32 training keeps fp32) and the processor, as a Hugging Face folder. Written next
    to `out_dir` and renamed into place."""
    import torch.distributed as dist

    if stage == 3:
        state = engine._zero3_consolidated_16bit_state_dict()  # collective: every rank takes part
    else:
        state = engine.module.state_dict() if rank == 0 else None
    if rank == 0:
        tmp = out_dir.with_name(f".tmp-{out_dir.name}")
        shutil.rmtree(tmp, ignore_errors=True)
        module = engine.module
        module.config.use_cache = True
        module.config.text_config.use_cache = True
        module.save_pretrained(tmp, state_dict=state, safe_serialization=True)
        processor.save_pretrained(tmp)
        (tmp / "training.json").write_text(json.dumps(
            {k: v for k, v in run_config.items() if k != "deepspeed_config"}, indent=1, default=str) + "\n")
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(tmp, out_dir)
    dist.barrier()


if __name__ == "__main__":
    main()
