"""Loading Llama-3.2-Vision (`MllamaForConditionalGeneration`) for training, freezing parts of it,
and making the dummy image of text-only rows inert (see pipeline/train/collator.py)."""
from __future__ import annotations

import torch

DEFAULT_MODEL = "meta-llama/Llama-3.2-11B-Vision-Instruct"

# parts that can be frozen, by their module path inside MllamaForConditionalGeneration (.model)
PARTS = {
    "vision": "vision_model",
    "projector": "multi_modal_projector",
    "language": "language_model",
}


def load_processor(name_or_path: str):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(name_or_path)


class _Zero3Config:
    """What `from_pretrained` asks of a registered DeepSpeed config (`is_zero3()`, `.config`): the
    stand-in for `transformers.integrations.HfDeepSpeedConfig` when `accelerate` (which that class
    needs) is not installed."""

    def __init__(self, config: dict) -> None:
        self.config = config

    def is_zero3(self) -> bool:
        return int(self.config.get("zero_optimization", {}).get("stage", 0)) == 3

    def is_offload(self) -> bool:
        z = self.config.get("zero_optimization", {})
        return any(z.get(k, {}).get("device", "none") not in ("none", None) for k in ("offload_param", "offload_optimizer"))


def zero3_init_context(config: dict):
    """Register a ZeRO-3 DeepSpeed config with transformers so that `from_pretrained` builds the model
    inside `deepspeed.zero.Init` (partitioned as it loads). Keep the returned object alive until the
    model is loaded (transformers holds only a weak reference)."""
    from transformers.integrations import deepspeed as hf_ds

    try:
        return hf_ds.HfDeepSpeedConfig(config)
    except Exception:  # noqa: BLE001 - accelerate missing: register the minimal stand-in instead
        shim = _Zero3Config(config)
        hf_ds.set_hf_deepspeed_config(shim)
        return shim


def load_model(name_or_path: str, dtype: torch.dtype = torch.float32, attn_implementation: str | None = "sdpa"):
    """The model from a local folder or a hub id. Under ZeRO-3 the caller first creates a
    `transformers.integrations.HfDeepSpeedConfig` (and keeps it alive): `from_pretrained` then builds
    the model inside `deepspeed.zero.Init`, partitioned across the ranks as it loads, so no rank
    ever holds the whole 11B model."""
    from transformers import MllamaForConditionalGeneration

    kwargs = {"dtype": dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    return MllamaForConditionalGeneration.from_pretrained(name_or_path, **kwargs)


def part(model, name: str) -> torch.nn.Module:
    inner = getattr(model, "model", model)
    return getattr(inner, PARTS[name])


def freeze(model, parts: list[str]) -> dict[str, int]:
    """Stop gradients for the named parts (`vision`, `projector`, `language`); returns the number of
    trainable and frozen parameters (ZeRO-3 partitioned parameters counted by their full size)."""
    for name in parts:
        for p in part(model, name).parameters():
            p.requires_grad_(False)
    numel = lambda p: getattr(p, "ds_numel", p.numel())  # noqa: E731
    return {
        "trainable": sum(numel(p) for p in model.parameters() if p.requires_grad),
        "frozen": sum(numel(p) for p in model.parameters() if not p.requires_grad),
    }


def make_dummy_images_inert(model) -> list:
    """Zero the cross-attention output of rows that carry only the collator's dummy image.

    Mllama's cross-attention layer masks the MLP output of text rows that attend to no image tile
    (`full_text_row_masked_out_mask`) but not the attention output: with every key masked, such a
    row's attention is spread evenly over the image tokens and its gated output is added to the
    residual. Rows that have a real image keep that behaviour (it is how the model was trained and
    how it runs at inference). A row with no image at all (a dummy image and no `<|image|>` token:
    its mask is zero everywhere) has its attention output multiplied by 0 here, so the layer adds
    exactly nothing, as Mllama's text-only path (which skips the layer) would; the dummy's vision
    features still take part in the computation, with exact zero gradients. Returns the hook
    handles (`.remove()` them to undo)."""
    from transformers.models.mllama.modeling_mllama import MllamaCrossAttentionDecoderLayer

    handles = []
    for layer in model.modules():
        if not isinstance(layer, MllamaCrossAttentionDecoderLayer):
            continue

        def before(module, args, kwargs):
            mask = kwargs.get("full_text_row_masked_out_mask")
            # (batch, 1, seq, 1): 1 where a text position attends to some image tile
            module.cross_attn._row_has_image = None if mask is None else mask.flatten(1).amax(dim=1)

        def after(module, args, output):
            keep = getattr(module, "_row_has_image", None)
            if keep is None:
                return output
            attn = output[0] if isinstance(output, tuple) else output
            attn = attn * keep.to(attn.dtype).view(-1, *([1] * (attn.dim() - 1)))
            return (attn, *output[1:]) if isinstance(output, tuple) else attn

        handles.append(layer.register_forward_pre_hook(before, with_kwargs=True))
        handles.append(layer.cross_attn.register_forward_hook(after))
    return handles


def count_parameters(model) -> int:
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())


def vision_layers(model) -> list:
    vision = part(model, "vision")
    return list(vision.transformer.layers) + list(vision.global_transformer.layers)


def checkpoint_vision_layers(model) -> int:
    """Activation checkpointing for the vision encoder's layers, which transformers leaves out
    (`gradient_checkpointing_enable` wraps only Mllama's text layers): 40 vision layers keep
    ~0.3 GiB per image each otherwise. Each layer's forward is run under
    `torch.utils.checkpoint` (non-reentrant) in training; its own module hooks stay outside, as for
    transformers' text layers, so ZeRO-3 gathers the weights of the submodules again when the layer
    is recomputed (the layer's direct parameters, the gates of the global layers, are single values
    that ZeRO-3 keeps whole: below stage3_param_persistence_threshold). Returns the number of layers."""
    from functools import partial

    from torch.utils.checkpoint import checkpoint

    layers = vision_layers(model)
    for layer in layers:
        forward = layer.forward

        def checkpointed(*args, _forward=forward, _layer=layer, **kwargs):
            if _layer.training and torch.is_grad_enabled():
                return checkpoint(partial(_forward, **kwargs), *args, use_reentrant=False)
            return _forward(*args, **kwargs)

        layer.forward = checkpointed
    return len(layers)


def _kernel_checks(text_width: int = 64, vision_width: int = 64, mlp_width: int = 64) -> dict:
    """For each Liger kernel: a function that runs it once, forward and backward, on a few rows at
    the model's own widths on CUDA and compares it with PyTorch (a Triton compile error or a wrong
    result shows here, before training, instead of killing the run at its first step; the kernels
    are compiled for the widths the run uses)."""
    import torch.nn.functional as F

    def check(fused, reference, *shapes):
        xs = [torch.randn(*s, device="cuda", dtype=torch.bfloat16, requires_grad=True) for s in shapes]
        out = fused(*xs)
        out.float().sum().backward()
        got = [x.grad.clone() for x in xs]
        for x in xs:
            x.grad = None
        ref = reference(*xs)
        ref.float().sum().backward()
        tol = dict(rtol=3e-2, atol=3e-2)
        if not (torch.allclose(out.float(), ref.float(), **tol)
                and all(torch.allclose(a.float(), x.grad.float(), **tol) for a, x in zip(got, xs))):
            raise ValueError("differs from PyTorch")

    def rms_norm():
        from liger_kernel.transformers.rms_norm import LigerRMSNorm

        m = LigerRMSNorm(text_width, eps=1e-5).cuda().to(torch.bfloat16)
        check(m, lambda x: m.weight * (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-5)).to(x.dtype),
              (8, text_width))

    def layer_norm():
        from liger_kernel.transformers.layer_norm import LigerLayerNorm

        m = LigerLayerNorm(vision_width, eps=1e-5).cuda().to(torch.bfloat16)
        check(m, lambda x: F.layer_norm(x, (vision_width,), m.weight, m.bias, 1e-5), (8, vision_width))

    def swiglu():
        from liger_kernel.ops.swiglu import LigerSiLUMulFunction

        check(LigerSiLUMulFunction.apply, lambda a, b: F.silu(a) * b, (8, mlp_width), (8, mlp_width))

    return {"rms_norm": rms_norm, "layer_norm": layer_norm, "swiglu": swiglu}


def fused_kernels(model) -> list[str]:
    """Liger Kernel's fused RMSNorm, LayerNorm and SwiGLU MLP for this model instance (CUDA only),
    each after a check on a small problem: the names of what was applied; a kernel that cannot be
    imported, fails its check or cannot be applied is left out with a warning (the plain module stays)."""
    import logging

    log = logging.getLogger(__name__)
    try:
        from liger_kernel.transformers import apply_liger_kernel_to_mllama
    except Exception as exc:  # noqa: BLE001 - optional GPU package
        log.warning("fused kernels: liger-kernel unavailable (%s: %s); plain modules kept", type(exc).__name__, exc)
        return []
    done = []
    text, vision = model.config.text_config, model.config.vision_config
    checks = _kernel_checks(text.hidden_size, vision.hidden_size, text.intermediate_size)
    for name, check in checks.items():
        flags = {"rope": False, "cross_entropy": False, "fused_linear_cross_entropy": False,
                 "rms_norm": False, "layer_norm": False, "swiglu": False, name: True}
        try:
            check()
            apply_liger_kernel_to_mllama(model=model, **flags)
            done.append(name)
        except Exception as exc:  # noqa: BLE001 - keep the plain module, say so
            log.warning("fused kernels: liger %s not applied (%s: %s)", name, type(exc).__name__, exc)
    return done


def compile_blocks(model) -> int:
    """`torch.compile` on the MLP of every text and vision layer (elementwise work fused around the
    matrix products). Compiling whole layers or the model would take ZeRO-3's parameter hooks and
    the data-dependent masks into the graph; the MLPs are pure functions of their input and weights.
    Returns the number of modules compiled."""
    inner = getattr(model, "model", model)
    mlps = [layer.mlp for layer in inner.language_model.layers] + [layer.mlp for layer in vision_layers(model)]
    for mlp in mlps:
        mlp.forward = torch.compile(mlp.forward, dynamic=True)
    return len(mlps)


def random_model(config, dtype: torch.dtype = torch.float32, attn_implementation: str | None = "sdpa",
                 device: torch.device | None = None):
    """A model of `config`'s shapes with random weights, built directly on `device` (a 3.5 B model
    never passes through host memory) and partitioned as it is built under ZeRO-3 (transformers'
    `_from_config` enters `deepspeed.zero.Init` when a ZeRO-3 config is registered). For benchmarks:
    nothing is read but the config. The cross-attention gates are opened (a trained model's are;
    at 0 the image path would not matter)."""
    from transformers import MllamaForConditionalGeneration
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    kwargs = {"dtype": dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if device is not None and device.type != "cpu" and not is_deepspeed_zero3_enabled():
        with torch.device(device):
            model = MllamaForConditionalGeneration._from_config(config, **kwargs)
    else:
        model = MllamaForConditionalGeneration._from_config(config, **kwargs)
    gates = [p for n, p in model.named_parameters() if n.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate"))]
    _fill(gates, 0.5)
    return model


def _fill(params: list, value: float) -> None:
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        import deepspeed

        with deepspeed.zero.GatheredParameters(params, modifier_rank=0):
            with torch.no_grad():
                for p in params:
                    p.fill_(value)
        return
    with torch.no_grad():
        for p in params:
            p.fill_(value)
