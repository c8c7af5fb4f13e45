"""DeepSpeed configuration: the shipped JSON files (configs/zero3.json, configs/zero2.json) with their
"auto" values filled from the training arguments, the way the Hugging Face Trainer fills them.

What "auto" becomes (`auto_values`):
  train_micro_batch_size_per_gpu   --per-device-batch-size
  gradient_accumulation_steps      --grad-accum
  train_batch_size                 micro batch x accumulation x world size
  gradient_clipping                --max-grad-norm
  bf16.enabled                     --dtype (auto: bf16 when the accelerator supports it, else fp32)
  optimizer.params.lr/betas/eps/weight_decay   --lr, --adam-beta1/2, --adam-eps, --weight-decay
                                   (only in a config of your own that has an "optimizer" entry)
  optimizer.params.torch_adam      true on the CPU accelerator, false elsewhere (idem)
  zero_optimization.reduce_bucket_size              32 hidden^2
  zero_optimization.stage3_prefetch_bucket_size     16 hidden^2
  zero_optimization.stage3_param_persistence_threshold  10 hidden
(hidden: the language model's hidden size; 4096 for Llama-3.2-11B-Vision). The buckets are larger
than the Hugging Face Trainer's (hidden^2 and 0.9 hidden^2): with 32 MB buckets an 11B model's
gradients are reduced in ~650 pieces, each with its own host-side bookkeeping and a bounded number
in flight, which keeps the host, not the GPU, the limit of the backward pass; 1 GB buckets cost 1 GB.
The shipped configs turn DeepSpeed's throughput timer off ("timers"): it synchronises the device at
every forward and every step, so the host would wait for each step before queuing the next (the
trainer times steps itself, with CUDA events).

The optimizer. The shipped configs have no "optimizer" entry: the trainer builds
`torch.optim.AdamW` itself (its fused CUDA kernel on a GPU; see pipeline/train/train.py) and hands
it to DeepSpeed, which wraps it for ZeRO. DeepSpeed's own FusedAdam is a CUDA extension compiled
just in time on first use (minutes, and a compiler on every node); torch's is in the wheel. A
config of your own with an "optimizer" entry is used as it is.

The learning-rate schedule (linear warmup, then cosine decay) is a `torch.optim.lr_scheduler.LambdaLR`
given to `deepspeed.initialize`, not a "scheduler" entry: DeepSpeed's WarmupCosineLR spends its first
step at learning rate 0. A config that has its own "scheduler" entry keeps it (and ours is not used).
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

CONFIG_DIR = Path(__file__).with_name("configs")
SHIPPED = {2: CONFIG_DIR / "zero2.json", 3: CONFIG_DIR / "zero3.json"}


def load(path: str | Path | None = None, zero_stage: int = 3) -> dict:
    """The config at `path`, or the shipped one for `zero_stage`."""
    with open(path or SHIPPED[zero_stage], encoding="utf-8") as f:
        return json.load(f)


def auto_values(*, micro_batch: int, grad_accum: int, world_size: int, max_grad_norm: float, bf16: bool,
                lr: float, betas: tuple[float, float], eps: float, weight_decay: float, cpu: bool,
                hidden_size: int) -> dict:
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": micro_batch * grad_accum * world_size,
        "gradient_clipping": max_grad_norm,
        "bf16.enabled": bf16,
        "fp16.enabled": False,
        "optimizer.params.lr": lr,
        "optimizer.params.betas": list(betas),
        "optimizer.params.eps": eps,
        "optimizer.params.weight_decay": weight_decay,
        "optimizer.params.torch_adam": cpu,
        **{f"zero_optimization.{k}": v for k, v in bucket_sizes(hidden_size).items()},
    }


def bucket_sizes(hidden_size: int) -> dict[str, int]:
    """ZeRO's bucket sizes (elements) for a language model of this hidden size."""
    return {"reduce_bucket_size": 32 * hidden_size * hidden_size,
            "stage3_prefetch_bucket_size": 16 * hidden_size * hidden_size,
            "stage3_param_persistence_threshold": 10 * hidden_size}


def fill(config: dict, values: dict) -> dict:
    """A copy of `config` with every "auto" replaced by `values[dotted.path]`; an "auto" without a
    value is an error (DeepSpeed itself would reject it later, less clearly)."""
    out = copy.deepcopy(config)
    missing = []

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, path + ".")
            elif value == "auto":
                if path in values:
                    node[key] = values[path]
                else:
                    missing.append(path)

    walk(out, "")
    if missing:
        raise ValueError(f"no value for \"auto\" at {', '.join(missing)}")
    return out


def zero_stage(config: dict) -> int:
    return int(config.get("zero_optimization", {}).get("stage", 0))


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float = 0.0):
    """The learning-rate factor at optimizer step s (0-based): linear warmup reaching 1 at step
    `warmup_steps - 1` (the first step already trains), then cosine decay to `min_ratio` at
    `total_steps`."""

    def factor(s: int) -> float:
        if s < warmup_steps:
            return (s + 1) / warmup_steps
        progress = min(1.0, (s - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
