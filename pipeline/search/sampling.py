"""Next-token choice on the device: greedy, or temperature + top-k + top-p (nucleus) sampling.

No host round trip and no `torch.multinomial` (which on a host tensor cost 16 ms a token over a
128k vocabulary): a sample is drawn by the exponential race, argmax(p / E) with E ~ Exp(1) drawn
from a per-session `torch.Generator` on the model's device, which picks index i with probability
p_i, is reproducible for a seed, and keeps the whole step on the device."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.6
    top_p: float = 0.9
    top_k: int = 0            # 0: no top-k cut
    greedy: bool = False


def filtered_probs(logits: torch.Tensor, s: Sampling) -> torch.Tensor:
    """Probabilities after temperature, top-k and top-p; float32, (rows, vocab)."""
    logits = logits.float() / max(s.temperature, 1e-5)
    vocab = logits.shape[-1]
    if 0 < s.top_k < vocab:
        kth = torch.topk(logits, s.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if s.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        outside = (probs.cumsum(-1) - probs) >= s.top_p      # the smallest set reaching top_p stays
        sorted_logits = sorted_logits.masked_fill(outside, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return torch.softmax(logits, dim=-1)


def choose(logits: torch.Tensor, s: Sampling, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Token ids (rows,) on the logits' device. `noise`: Exp(1) draws of the logits' shape (from
    `exponential_noise`); needed unless greedy."""
    if s.greedy:
        return torch.argmax(logits, dim=-1)
    probs = filtered_probs(logits, s)
    return torch.argmax(probs / noise, dim=-1)


def exponential_noise(shape, generator: torch.Generator, device) -> torch.Tensor:
    # clamped: an exact 0 would turn a zero-probability token into 0/0
    return torch.empty(shape, device=device, dtype=torch.float32).exponential_(generator=generator).clamp_min_(1e-20)
