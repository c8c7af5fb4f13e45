"""The training loss without the logits: the language-model head and cross-entropy in one step.

With a 128,256-token vocabulary the logits of one micro-batch are the largest activation of the
model (4 rows x 4,096 tokens: 2.1 G values; as bf16, then fp32 for the loss, then their gradient:
about 21 GB) and reading them back is pure memory traffic. A fused linear + cross-entropy computes
the loss and both gradients (of the hidden states and of the head's weight) chunk by chunk in the
forward pass and never holds more than one chunk of logits.

Implementations (`--fused-loss`):
  liger    Liger Kernel's `liger_fused_linear_cross_entropy` (Triton; CUDA only). Used by `auto` on
           a GPU when `liger-kernel` imports and passes a one-time check against plain
           cross-entropy on a small problem; otherwise `auto` falls back with a log line.
  chunked  the same algorithm in plain PyTorch (below). Hand-written because the kept library
           (Liger) needs Triton and a GPU: this is what runs on the CPU and when Liger is missing,
           with the same semantics, so a run never silently changes its loss.
  off      Mllama's own forward: full logits, then `ForCausalLMLoss`.

Semantics (the same in all three, checked by tests/pipeline/train/test_loss.py): the labels are
shifted left by one (token t predicts token t+1), -100 is ignored, the loss is the mean over the
tokens that are not ignored in the micro-batch, logits are formed in the weight's dtype and
reduced in fp32. A micro-batch without a single label gives loss 0 (Mllama's own gives NaN).

`install(model, impl)` changes one model instance for training: `model(**batch, labels=...)` then
returns an output whose `.loss` is the fused loss and whose `.logits` is None; without labels the
model behaves as before. The head's weight is used inside the head module's own call, so ZeRO-3
gathers it as usual (its forward hook runs).
"""
from __future__ import annotations

import logging
from types import MethodType

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
CHUNK_TOKENS = 1024  # rows of logits formed at once by the chunked implementation
log = logging.getLogger(__name__)


def shift_targets(labels: torch.Tensor) -> torch.Tensor:
    """labels[:, 1:] followed by one ignored position: the target of every input position."""
    return F.pad(labels[..., 1:], (0, 1), value=IGNORE_INDEX)


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of (hidden @ weight.T) against targets; the gradients are formed in the
    forward pass, chunk by chunk (Liger's algorithm), without a host synchronisation: ignored
    positions are computed and masked rather than selected, so no size depends on the data."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int):
        valid = targets != IGNORE_INDEX
        safe = torch.where(valid, targets, torch.zeros_like(targets))
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.zeros_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk):
            h, t, m = hidden[start:start + chunk], safe[start:start + chunk], valid[start:start + chunk]
            logits = (h @ weight.t()).float()
            picked = logits.gather(1, t[:, None]).squeeze(1)
            total = total + ((torch.logsumexp(logits, dim=-1) - picked) * m).sum()
            if need_h or need_w:
                d = torch.softmax(logits, dim=-1)  # d(loss sum)/d(logits) = softmax - one_hot
                d.scatter_add_(1, t[:, None], torch.full_like(picked[:, None], -1.0))
                d = (d * m[:, None]).to(weight.dtype)
                if need_h:
                    grad_h[start:start + chunk] = d @ weight
                if need_w:
                    grad_w += (d.t() @ h.to(weight.dtype)).float()
        inverse = 1.0 / valid.sum().clamp(min=1).float()
        if need_h:
            grad_h *= inverse.to(grad_h.dtype)
        if need_w:
            grad_w = (grad_w * inverse).to(weight.dtype)
        ctx.need = (need_h, need_w)
        ctx.save_for_backward(*(g for g in (grad_h, grad_w) if g is not None))
        return total * inverse

    @staticmethod
    def backward(ctx, grad_out):
        saved = list(ctx.saved_tensors)
        grads = []
        for need in ctx.need:
            if need:
                g = saved.pop(0)
                grads.append(g * grad_out.to(g.dtype))
            else:
                grads.append(None)
        return grads[0], grads[1], None, None


def chunked_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                                 chunk: int = CHUNK_TOKENS) -> torch.Tensor:
    return ChunkedLinearCrossEntropy.apply(hidden, weight, targets, chunk)


def plain_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The reference: full logits in the weight's dtype, fp32 cross-entropy, mean over targets."""
    logits = (hidden @ weight.t()).float()
    return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="mean")


def liger_linear_cross_entropy():
    """Liger's fused linear cross-entropy, or None when it cannot be imported."""
    try:
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy
    except Exception as exc:  # noqa: BLE001 - an optional GPU package: report why and fall back
        log.warning("fused loss: liger-kernel unavailable (%s: %s)", type(exc).__name__, exc)
        return None

    def fn(hidden, weight, targets):
        return liger_fused_linear_cross_entropy(hidden, weight, targets, ignore_index=IGNORE_INDEX, reduction="mean")

    return fn


def _agrees_with_plain(fn, device: torch.device, dtype: torch.dtype) -> bool:
    """One small problem through `fn` and through the reference: same loss and gradients."""
    g = torch.Generator(device="cpu").manual_seed(0)
    h = torch.randn(300, 64, generator=g).to(device, dtype).requires_grad_()
    w = (torch.randn(1000, 64, generator=g) * 0.05).to(device, dtype).requires_grad_()
    t = torch.randint(0, 1000, (300,), generator=g)
    t[::7] = IGNORE_INDEX
    t = t.to(device)
    loss = fn(h, w, t)
    loss.backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    ref = plain_linear_cross_entropy(h, w, t)
    ref.backward()
    tol = dict(rtol=2e-2, atol=2e-3) if dtype != torch.float32 else dict(rtol=1e-4, atol=1e-5)
    return all(torch.allclose(a.float(), b.float(), **tol) for a, b in ((loss, ref), (gh, h.grad), (gw, w.grad)))


def resolve(impl: str, device: torch.device, dtype: torch.dtype):
    """(name, function) for `--fused-loss impl`; `auto` picks Liger on CUDA when it works, else
    the chunked PyTorch implementation. `off` gives (\"off\", None)."""
    if impl == "off":
        return "off", None
    if impl not in ("auto", "liger", "chunked"):
        raise ValueError(f"unknown fused loss {impl!r}")
    if impl in ("auto", "liger") and device.type == "cuda":
        fn = liger_linear_cross_entropy()
        if fn is not None:
            try:
                if _agrees_with_plain(fn, device, dtype):
                    return "liger", fn
                log.warning("fused loss: liger disagrees with plain cross-entropy on a check problem")
            except Exception as exc:  # noqa: BLE001 - e.g. a Triton compile error: fall back, said aloud
                log.warning("fused loss: liger failed its check (%s: %s)", type(exc).__name__, exc)
        if impl == "liger":
            raise SystemExit("--fused-loss liger: liger-kernel is not usable here (see the warning above)")
    elif impl == "liger":
        raise SystemExit("--fused-loss liger needs a CUDA device")
    return "chunked", chunked_linear_cross_entropy


def install(model, fn) -> None:
    """Make `model(..., labels=...)` compute its loss with `fn(hidden, weight, targets)` (see the
    module docstring). `model` is a MllamaForConditionalGeneration."""
    head = model.lm_head
    plain_head = head.forward

    def head_forward(self, hidden, targets=None):
        if targets is None:
            return plain_head(hidden)
        return fn(hidden.reshape(-1, hidden.shape[-1]), self.weight, targets.reshape(-1))

    head.forward = MethodType(head_forward, head)
    plain_forward = model.forward

    def forward(self, *args, labels=None, **kwargs):
        if labels is None:
            return plain_forward(*args, **kwargs)
        from transformers.modeling_outputs import CausalLMOutputWithPast

        kwargs.pop("logits_to_keep", None)
        kwargs["use_cache"] = False
        outputs = self.model(*args, **kwargs)
        loss = self.lm_head(outputs.last_hidden_state, targets=shift_targets(labels))
        return CausalLMOutputWithPast(loss=loss, logits=None)

    model.forward = MethodType(forward, model)
