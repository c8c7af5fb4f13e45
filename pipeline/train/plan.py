"""Will a training run fit? Per-GPU memory of `python -m pipeline.train`, before launching it.

    python -m pipeline.train.plan                         # the paper's recipe: 11B, 8 x 80 GB, batch 4,
                                                          # ZeRO-3, checkpointing, 4,096 tokens
    python -m pipeline.train.plan --model DIR --world-size 2 --gpu-memory-gib 24 --no-gradient-checkpointing
    python -m pipeline.train --plan ...                   # the same for the trainer's own arguments

What a rank holds (N parameters, N_t of them trained, W ranks, p bytes per parameter: 2 in bf16):
  weights              N p       (ZeRO-3: / W)
  gradients            N_t p     (ZeRO-2 and 3: / W)
  optimizer states     N_t x 12  fp32 master copy + Adam's two moments (/ W; fp32 training: 8, no copy)
  step gradients       N_t x 4   the fp32 gradients DeepSpeed forms for the update (/ W; ZeRO-3: one
                                 sub-group at a time); after the backward pass, so they take the
                                 activations' place, not their sum
  ZeRO buffers         the reduce bucket and (ZeRO-3) the prefetch bucket of gathered weights
  activations          what autograd saves between forward and backward, per text token and per
                       image, MEASURED on one layer of each kind (self-attention, cross-attention,
                       vision encoder) built at the model's own widths on the meta device (shapes
                       only: no memory, no compute), with saved-tensor hooks; attention is counted
                       as the fused GPU kernels keep it (inputs, output, log-sum-exp and a converted
                       mask), not as the attention matrix the meta device's math path would keep.
                       With activation checkpointing a layer keeps only its input, plus one layer's
                       activations while it is recomputed.
  logits and loss      full logits (bf16 and the fp32 copy, both gradients) or, with the fused
                       loss, one chunk of them
  runtime              CUDA context, cuBLAS workspaces, NCCL buffers: a fixed 2 GiB on a GPU

The total is compared with the GPU's memory less the headroom (default 10 %). The worst case is
planned: every row padded to --max-length (a batch is padded to its longest row).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

GiB = 1024 ** 3
RUNTIME_BYTES = 2 * GiB

# Llama-3.2-11B-Vision(-Instruct)'s config.json, the fields that set its shapes.
LLAMA_32_11B_VISION = {
    "vision_config": {
        "hidden_size": 1280, "intermediate_size": 5120, "attention_heads": 16, "num_hidden_layers": 32,
        "num_global_layers": 8, "image_size": 560, "patch_size": 14, "max_num_tiles": 4, "num_channels": 3,
        "intermediate_layers_indices": [3, 7, 15, 23, 30], "vision_output_dim": 7680,
        "supported_aspect_ratios": [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]],
    },
    "text_config": {
        "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8,
        "num_hidden_layers": 40, "cross_attention_layers": [3, 8, 13, 18, 23, 28, 33, 38], "vocab_size": 128256,
        "max_position_embeddings": 131072, "rope_theta": 500000.0, "rms_norm_eps": 1e-5,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192},
    },
    "image_token_index": 128256,
}


def mllama_config(preset: dict = LLAMA_32_11B_VISION, text_layers: int | None = None,
                  cross_attention_layers: list[int] | None = None, vision_layers: int | None = None,
                  global_layers: int | None = None):
    """A MllamaConfig with the preset's widths, optionally fewer layers (the GPU benchmark's model)."""
    import copy

    from transformers import MllamaConfig

    p = copy.deepcopy(preset)
    v, t = p["vision_config"], p["text_config"]
    if vision_layers is not None:
        v["num_hidden_layers"] = vision_layers
        v["intermediate_layers_indices"] = [i for i in v["intermediate_layers_indices"] if i < vision_layers] \
            or [vision_layers - 1]
        v["vision_output_dim"] = v["hidden_size"] * (1 + len(v["intermediate_layers_indices"]))
    if global_layers is not None:
        v["num_global_layers"] = global_layers
    if text_layers is not None:
        t["num_hidden_layers"] = text_layers
        t["cross_attention_layers"] = cross_attention_layers if cross_attention_layers is not None else \
            [i for i in t["cross_attention_layers"] if i < text_layers]
    return MllamaConfig(vision_config=v, text_config=t, image_token_index=p["image_token_index"])


@dataclass
class RunShape:
    world_size: int = 8
    per_device_batch_size: int = 4
    seq_len: int = 4096               # tokens per row (the padded length: plan for --max-length)
    images_per_row: int = 1
    zero_stage: int = 3               # 0: no ZeRO (plain data parallel); 1, 2, 3
    gradient_checkpointing: bool = True
    fused_loss: bool = True
    param_bytes: int = 2              # bf16
    frozen: tuple[str, ...] = ()
    gpu_memory_gib: float = 80.0
    headroom: float = 0.10
    gpu: bool = True                  # counts the runtime's fixed memory
    reduce_bucket: int = 0            # elements; 0: ds_config's default for this model
    prefetch_bucket: int = 0
    sub_group_size: int = 1_000_000_000


@dataclass
class Plan:
    shape: RunShape
    parameters: int
    trainable: int
    parts: dict[str, float] = field(default_factory=dict)        # bytes
    per_token: dict[str, float] = field(default_factory=dict)    # activation bytes per text token
    per_image: dict[str, float] = field(default_factory=dict)    # activation bytes per image
    peak: float = 0.0
    capacity: float = 0.0

    @property
    def headroom_fraction(self) -> float:
        return 1.0 - self.peak / self.capacity if self.capacity else float("nan")

    @property
    def fits(self) -> bool:
        return self.peak <= (1.0 - self.shape.headroom) * self.capacity


# ------------------------------------------------------------------------------ activation measurement


class _FusedAttentionSaves(__import__("torch").autograd.Function):
    """Stands in for a fused attention kernel during measurement: keeps what flash/efficient
    attention keeps for backward (q, k, v, output, fp32 log-sum-exp, and the mask as an additive
    bias when there is one) and returns an output of the right shape."""

    @staticmethod
    def forward(ctx, q, k, v, bias):
        import torch

        out = torch.empty_like(q)
        lse = torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)
        ctx.save_for_backward(q, k, v, out, lse, *([bias] if bias is not None else []))
        return out

    @staticmethod
    def backward(ctx, grad):  # never run: measurement only
        raise RuntimeError("measurement only")


def _measuring_attention(module, query, key, value, attention_mask, **kwargs):
    import torch
    from transformers.integrations.sdpa_attention import repeat_kv, use_gqa_in_sdpa

    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1 and not use_gqa_in_sdpa(attention_mask, key, value):
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    bias = None
    if attention_mask is not None:
        # a boolean mask is converted to an additive one by the kernel (a new tensor per call); a
        # float mask is used as it is (shared by the layers: counted once by the caller)
        bias = attention_mask if attention_mask.dtype != torch.bool else \
            torch.empty(attention_mask.shape, dtype=query.dtype, device=query.device)
    out = _FusedAttentionSaves.apply(query, key, value, bias)
    return out.transpose(1, 2).contiguous(), None


def saved_bytes(fn, exclude=()) -> int:
    """Bytes of the distinct storages autograd saves while running `fn()`, less those of `exclude`."""
    import torch

    skip = {t.untyped_storage()._cdata for t in exclude}
    seen: dict[int, int] = {}

    def pack(t):
        key = t.untyped_storage()._cdata
        if key not in skip:
            seen[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def measure_layers(config, seq_len: int, images_per_row: int = 1, dtype=None) -> dict[str, int]:
    """Saved bytes of one row through one layer of each kind, at `config`'s widths (meta device)."""
    import torch
    from transformers import AttentionInterface
    from transformers.models.mllama import modeling_mllama as mm

    dtype = dtype or torch.bfloat16
    AttentionInterface.register("llavacot_measure", _measuring_attention)
    t = config.text_config.__class__.from_dict(config.text_config.to_dict())
    v = config.vision_config.__class__.from_dict(config.vision_config.to_dict())
    t._attn_implementation = v._attn_implementation = "llavacot_measure"
    patches = (v.image_size // v.patch_size) ** 2 + 1
    vision_seq = v.max_num_tiles * (patches + (8 - patches % 8) % 8)
    vision_tokens = images_per_row * v.max_num_tiles * patches
    s, d = seq_len, t.hidden_size
    out = {}
    with torch.device("meta"):
        x = torch.empty(1, s, d, dtype=dtype, requires_grad=True)
        pos = torch.arange(s)[None]
        cos, sin = mm.MllamaRotaryEmbedding(t)(x, pos)
        causal = torch.ones(1, 1, s, s, dtype=torch.bool)  # padded rows: a boolean 4-D mask
        layer = mm.MllamaSelfAttentionDecoderLayer(t, 0).to(dtype)
        out["text_self_layer"] = saved_bytes(
            lambda: layer(x, attention_mask=causal, position_embeddings=(cos, sin), position_ids=pos), exclude=(x,))
        states = torch.empty(1, vision_tokens, d, dtype=dtype, requires_grad=True)
        xmask = torch.zeros(1, 1, s, vision_tokens, dtype=dtype)
        rowmask = torch.ones(1, 1, s, 1, dtype=dtype)
        cross = mm.MllamaCrossAttentionDecoderLayer(t, 1).to(dtype)
        out["text_cross_layer"] = saved_bytes(
            lambda: cross(x, cross_attention_states=states, cross_attention_mask=xmask, attention_mask=causal,
                          full_text_row_masked_out_mask=rowmask, position_embeddings=(cos, sin)),
            exclude=(x, states, xmask, rowmask))
        out["cross_attention_mask"] = xmask.numel() * xmask.element_size()
        h = torch.empty(1, vision_seq, v.hidden_size, dtype=dtype, requires_grad=True)
        vmask = torch.zeros(1, 1, vision_seq, vision_seq, dtype=dtype)
        for name, gated in (("vision_layer", False), ("vision_global_layer", True)):
            vl = mm.MllamaVisionEncoderLayer(v, is_gated=gated).to(dtype)
            out[name] = saved_bytes(lambda: vl(h, attention_mask=vmask), exclude=(h, vmask))
        out["vision_mask"] = vmask.numel() * vmask.element_size()
        out["text_layer_input"] = s * d * x.element_size()
        out["vision_layer_input"] = vision_seq * v.hidden_size * h.element_size()
        out["projector"] = v.max_num_tiles * patches * (v.vision_output_dim + d) * h.element_size() * images_per_row
    return out


# ------------------------------------------------------------------------------ the plan


def count_parameters(config) -> int:
    import torch
    from transformers import MllamaForConditionalGeneration

    with torch.device("meta"):
        return sum(p.numel() for p in MllamaForConditionalGeneration(config).parameters())


def trainable_parameters(config, frozen: tuple[str, ...]) -> int:
    import torch
    from transformers import MllamaForConditionalGeneration

    from pipeline.train.model import PARTS

    with torch.device("meta"):
        model = MllamaForConditionalGeneration(config)
    skip = {id(p) for name in frozen for p in getattr(model.model, PARTS[name]).parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def plan(config, shape: RunShape, parameters: int | None = None, trainable: int | None = None,
         layers: dict[str, int] | None = None) -> Plan:
    """The per-rank memory of a run of `config` shaped by `shape` (see the module docstring)."""
    import torch

    from pipeline.train import ds_config as dsc

    n = parameters if parameters is not None else count_parameters(config)
    nt = trainable if trainable is not None else (n if not shape.frozen else trainable_parameters(config, shape.frozen))
    w, pb, z = shape.world_size, shape.param_bytes, shape.zero_stage
    mixed = pb < 4
    dtype = {2: torch.bfloat16, 4: torch.float32}[pb]
    m = layers or measure_layers(config, shape.seq_len, shape.images_per_row, dtype)
    t, v = config.text_config, config.vision_config
    hidden = t.hidden_size
    buckets = dsc.bucket_sizes(hidden)
    reduce = shape.reduce_bucket or buckets["reduce_bucket_size"]
    prefetch = shape.prefetch_bucket or buckets["stage3_prefetch_bucket_size"]

    parts = {
        "weights": n * pb / (w if z >= 3 else 1),
        "gradients": nt * pb / (w if z >= 2 else 1),
        "optimizer states": nt * ((12 if mixed else 8) / (w if z >= 1 else 1)),
        "ZeRO buffers": pb * (reduce + (prefetch if z >= 3 else 0)) if z >= 1 else 0,
    }
    step_grads = 0.0
    if mixed and z >= 1:
        step_grads = 4 * (min(nt / w, shape.sub_group_size) if z >= 3 else nt / w)

    # activations of one row and one image, then of the micro-batch
    cross_n = len(t.cross_attention_layers)
    self_n = t.num_hidden_layers - cross_n
    vis_n = v.num_hidden_layers + v.num_global_layers
    # activations kept from forward to backward (`stored`), and the working set of one layer being
    # recomputed in backward (`working`, with checkpointing), per row and per image
    if shape.gradient_checkpointing:
        row = t.num_hidden_layers * m["text_layer_input"]
        image = vis_n * m["vision_layer_input"]
        row_working = max(m["text_self_layer"], m["text_cross_layer"])
        image_working = max(m["vision_layer"], m["vision_global_layer"])
    else:
        row = self_n * m["text_self_layer"] + cross_n * m["text_cross_layer"]
        image = v.num_hidden_layers * m["vision_layer"] + v.num_global_layers * m["vision_global_layer"]
        row_working = image_working = 0
    image += m["vision_mask"] + m["projector"] + m["vision_layer_input"]  # the mask, projector, tower output
    row += m["cross_attention_mask"]
    if "vision" in shape.frozen:  # no backward through the tower: nothing of it is kept
        image, image_working = m["projector"], 0
    b, k = shape.per_device_batch_size, shape.images_per_row
    stored = b * (row + k * image)
    working = max(b * row_working, b * k * image_working)
    # logits: full (bf16 + the fp32 copy the loss keeps; in backward their two gradients), or one
    # chunk plus the gradients the fused loss forms in its forward pass
    s, vocab = shape.seq_len, t.vocab_size
    from pipeline.train.loss import CHUNK_TOKENS

    if shape.fused_loss:
        logits = min(CHUNK_TOKENS, b * s) * vocab * (pb + 8) + vocab * hidden * (4 + pb) + b * s * hidden * pb
    else:
        logits = b * s * vocab * (2 * pb + 8)
    parts["activations"] = stored + working
    parts["logits and loss"] = logits
    parts["runtime"] = RUNTIME_BYTES if shape.gpu else 0
    static = parts["weights"] + parts["gradients"] + parts["optimizer states"] + parts["ZeRO buffers"] + parts["runtime"]
    # the logits' peak (start of backward) and a recomputed layer's (later) do not coincide
    peak = static + max(stored + max(working, logits), step_grads)
    parts["step gradients (after backward)"] = step_grads
    p = Plan(shape=shape, parameters=n, trainable=nt, parts=parts, peak=peak, capacity=shape.gpu_memory_gib * GiB)
    p.per_token = {"text (all layers, kept)": row / s, "text self-attention layer": m["text_self_layer"] / s,
                   "text cross-attention layer": m["text_cross_layer"] / s}
    p.per_image = {"vision (all layers, kept)": image, "vision layer": m["vision_layer"],
                   "vision global layer": m["vision_global_layer"]}
    return p


def render(p: Plan) -> str:
    s = p.shape
    zero = f"ZeRO-{s.zero_stage}" if s.zero_stage else "no ZeRO"
    lines = [
        f"per-GPU memory plan: {p.parameters / 1e9:.2f} B parameters ({p.trainable / 1e9:.2f} B trained), "
        f"{s.world_size} GPU(s) x {s.gpu_memory_gib:g} GiB, {zero}, batch {s.per_device_batch_size} x "
        f"{s.seq_len} tokens, {s.images_per_row} image(s) a row, "
        f"checkpointing {'on' if s.gradient_checkpointing else 'off'}, fused loss {'on' if s.fused_loss else 'off'}, "
        f"{'bf16' if s.param_bytes == 2 else 'fp32'}",
    ]
    for name, value in p.parts.items():
        lines.append(f"  {name:<34}{value / GiB:9.2f} GiB")
    lines.append(f"  {'peak':<34}{p.peak / GiB:9.2f} GiB  (weights, gradients, optimizer, buffers, runtime, and "
                 f"the kept activations with the larger of logits and a recomputed layer, or the step's gradients)")
    per_token = ", ".join(f"{k} {v / 1024:,.1f} KiB" for k, v in p.per_token.items())
    per_image = ", ".join(f"{k} {v / GiB * 1024:,.1f} MiB" for k, v in p.per_image.items())
    lines.append(f"  activations per text token: {per_token}")
    lines.append(f"  activations per image: {per_image}")
    verdict = "FITS" if p.fits else "DOES NOT FIT"
    lines.append(f"{verdict}: {p.peak / GiB:.1f} of {s.gpu_memory_gib:g} GiB, headroom {100 * p.headroom_fraction:.1f} % "
                 f"(required {100 * s.headroom:.0f} %)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m pipeline.train.plan", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="", help="a local model folder (its config.json); default: "
                    "Llama-3.2-11B-Vision's shapes")
    ap.add_argument("--world-size", type=int, default=8)
    ap.add_argument("--gpu-memory-gib", type=float, default=80.0)
    ap.add_argument("--per-device-batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=4096, help="tokens per row (the worst case: padded to it)")
    ap.add_argument("--zero-stage", type=int, choices=[0, 1, 2, 3], default=3)
    ap.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--fused-loss", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--freeze", nargs="*", default=[], choices=["vision", "projector"])
    ap.add_argument("--headroom", type=float, default=0.10)
    return ap


def shape_from_args(args, world_size: int, gpu: bool = True) -> RunShape:
    return RunShape(world_size=world_size, per_device_batch_size=args.per_device_batch_size, seq_len=args.max_length,
                    zero_stage=args.zero_stage, gradient_checkpointing=bool(args.gradient_checkpointing),
                    fused_loss=bool(args.fused_loss) and args.fused_loss != "off",
                    param_bytes=2 if args.dtype == "bf16" else 4, frozen=tuple(args.freeze),
                    gpu_memory_gib=args.gpu_memory_gib, headroom=args.headroom, gpu=gpu)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.model:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(args.model)
    else:
        config = mllama_config()
    p = plan(config, shape_from_args(args, args.world_size))
    print(render(p))
    return 0 if p.fits else 1


if __name__ == "__main__":
    sys.exit(main())
