"""Dollars: a per-model price table (USD per million tokens), the batch discount, estimates."""
from __future__ import annotations

import math
from dataclasses import dataclass

# USD per 1M tokens (input, output), list prices of the online API. Override per deployment.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-2024-08-06": (2.50, 10.00),
    "gpt-4o-2024-11-20": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "offline-template": (0.0, 0.0),
}
BATCH_DISCOUNT = 0.5


class UnknownPrice(KeyError):
    pass


@dataclass(frozen=True)
class PriceTable:
    prices: dict[str, tuple[float, float]]

    @classmethod
    def default(cls, overrides: dict[str, tuple[float, float]] | None = None) -> "PriceTable":
        return cls({**DEFAULT_PRICES, **{k: tuple(v) for k, v in (overrides or {}).items()}})

    def cost(self, model: str, input_tokens: int, output_tokens: int, batch: bool = False) -> float:
        if model not in self.prices:
            raise UnknownPrice(
                f"no price for model {model!r}: add it to the teacher's `prices` "
                f"(USD per million input and output tokens; 0 for a self-hosted server)"
            )
        pin, pout = self.prices[model]
        usd = (input_tokens * pin + output_tokens * pout) / 1e6
        return usd * (BATCH_DISCOUNT if batch else 1.0)


def image_tokens(width: int, height: int, detail: str = "auto") -> int:
    """Input tokens of one image for GPT-4o-class models: 85 at low detail; at high detail the
    image is fitted into 2048x2048, its short side scaled to 768, and each 512-px tile costs 170
    on top of the base 85. `auto` is counted as high (the upper bound, for budgets)."""
    if detail == "low":
        return 85
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        s = 2048 / max(w, h)
        w, h = w * s, h * s
    if min(w, h) > 768:
        s = 768 / min(w, h)
        w, h = w * s, h * s
    tiles = math.ceil(w / 512) * math.ceil(h / 512)
    return 85 + 170 * tiles


def text_tokens(text: str) -> int:
    """A deliberately generous estimate (about 4 characters a token for English, more for CJK)."""
    if not text:
        return 0
    ascii_chars = len(text) if text.isascii() else len(text.encode("ascii", "ignore"))  # C speed
    return math.ceil(ascii_chars / 4 + (len(text) - ascii_chars) * 1.0) + 4
