"""Dollars: a per-model price table (USD per million tokens: input, output, cached input), the
Batch API discount, prices from the environment, and token estimates for the cost estimate.

Every model a run will call (generation and judge) must have a price before the first request
(`PriceTable.require`): a missing price stops the run at start-up with a message that says how
to give one, never after an answer was paid for.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

BATCH_DISCOUNT = 0.5  # the Batch API bills input, cached input and output at half the online price


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens. `cached_input` is what the provider bills for prompt tokens served
    from its prompt cache (`usage.prompt_tokens_details.cached_tokens`); None: no discount."""

    input: float
    output: float
    cached_input: float | None = None

    @classmethod
    def of(cls, value) -> "Price":
        """From a Price, or a [input, output] / [input, output, cached_input] sequence, or a
        {"input": .., "output": .., "cached_input": ..} mapping."""
        if isinstance(value, Price):
            return value
        if isinstance(value, dict):
            unknown = set(value) - {"input", "output", "cached_input"}
            if unknown or not {"input", "output"} <= set(value):
                raise ValueError(f"a price needs 'input' and 'output' (and optionally 'cached_input'), not {value!r}")
            value = [value["input"], value["output"], value.get("cached_input")]
        values = list(value)
        if len(values) not in (2, 3):
            raise ValueError("a price is [USD/1M input, USD/1M output] or [.., .., USD/1M cached input], "
                             f"not {value!r}")
        numbers = [None if v is None else float(v) for v in values]
        if any(v is not None and (v < 0 or math.isnan(v)) for v in numbers) or numbers[0] is None or numbers[1] is None:
            raise ValueError(f"prices must be numbers >= 0, not {value!r}")
        return cls(*numbers)


# List prices of the online API (USD per 1M tokens: input, output, cached input). Dated names are
# listed on their own: a snapshot can be priced differently from its alias (gpt-4o-2024-05-13 is).
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4o": Price(2.50, 10.00, 1.25),
    "gpt-4o-2024-05-13": Price(5.00, 15.00),
    "gpt-4o-2024-08-06": Price(2.50, 10.00, 1.25),
    "gpt-4o-2024-11-20": Price(2.50, 10.00, 1.25),
    "gpt-4o-mini": Price(0.15, 0.60, 0.075),
    "gpt-4o-mini-2024-07-18": Price(0.15, 0.60, 0.075),
    "gpt-4.1": Price(2.00, 8.00, 0.50),
    "gpt-4.1-2025-04-14": Price(2.00, 8.00, 0.50),
    "gpt-4.1-mini": Price(0.40, 1.60, 0.10),
    "gpt-4.1-mini-2025-04-14": Price(0.40, 1.60, 0.10),
    "offline-template": Price(0.0, 0.0, 0.0),
}

# Environment variables that price models the table does not know (a vLLM/SGLang model, a new
# snapshot) without editing code:
ENV_PRICE_IN = "LLAVACOT_TEACHER_PRICE_IN"  # USD per 1M input tokens of the teacher model
ENV_PRICE_OUT = "LLAVACOT_TEACHER_PRICE_OUT"  # USD per 1M output tokens of the teacher model
ENV_PRICE_CACHED_IN = "LLAVACOT_TEACHER_PRICE_CACHED_IN"  # optional: USD per 1M cached input tokens
ENV_PRICES = "LLAVACOT_TEACHER_PRICES"  # JSON: {"model": [in, out] or [in, out, cached_in], ...}

HOW_TO_PRICE = (
    f"give its price in USD per million tokens: the teacher resource's `prices` "
    f"({{\"<model>\": [input, output]}}, optionally a third number for cached input), or the environment "
    f"({ENV_PRICE_IN} and {ENV_PRICE_OUT} for the teacher model, {ENV_PRICES} as JSON for any model); "
    f"0 and 0 for a self-hosted server"
)


class UnknownPrice(KeyError):
    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else "unknown price"


def prices_from_env(model: str, environ=os.environ) -> dict[str, Price]:
    """The prices the environment gives: the JSON map, and the teacher model's IN/OUT pair."""
    out: dict[str, Price] = {}
    raw = environ.get(ENV_PRICES, "").strip()
    if raw:
        try:
            table = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"{ENV_PRICES} is not valid JSON: {exc}") from None
        if not isinstance(table, dict):
            raise ValueError(f"{ENV_PRICES} must be a JSON object of model -> [input, output(, cached input)]")
        out.update({str(k): Price.of(v) for k, v in table.items()})
    pin, pout = environ.get(ENV_PRICE_IN, "").strip(), environ.get(ENV_PRICE_OUT, "").strip()
    if pin or pout:
        if not (pin and pout):
            raise ValueError(f"set both {ENV_PRICE_IN} and {ENV_PRICE_OUT} (USD per million tokens), not one")
        cached = environ.get(ENV_PRICE_CACHED_IN, "").strip() or None
        out[model] = Price.of([pin, pout, cached])
    return out


@dataclass(frozen=True)
class PriceTable:
    prices: dict[str, Price]
    batch_discount: float = BATCH_DISCOUNT

    @classmethod
    def default(cls, overrides: dict | None = None, batch_discount: float = BATCH_DISCOUNT) -> "PriceTable":
        return cls({**DEFAULT_PRICES, **{k: Price.of(v) for k, v in (overrides or {}).items()}}, batch_discount)

    def price(self, model: str) -> Price:
        try:
            return self.prices[model]
        except KeyError:
            raise UnknownPrice(f"no price for model {model!r}: {HOW_TO_PRICE}") from None

    def require(self, models) -> None:
        """Raise UnknownPrice, naming every model without a price, before anything is sent."""
        missing = sorted({m for m in models if m and m not in self.prices})
        if missing:
            names = ", ".join(repr(m) for m in missing)
            raise UnknownPrice(f"no price for model{'s' if len(missing) > 1 else ''} {names}: nothing was sent. "
                               f"To run, {HOW_TO_PRICE}")

    def cost(self, model: str, input_tokens: int, output_tokens: int, batch: bool = False,
             cached_tokens: int = 0) -> float:
        p = self.price(model)
        cached = min(max(int(cached_tokens or 0), 0), input_tokens)
        cached_rate = p.input if p.cached_input is None else p.cached_input
        usd = ((input_tokens - cached) * p.input + cached * cached_rate + output_tokens * p.output) / 1e6
        return usd * (self.batch_discount if batch else 1.0)


def usage_tokens(body: dict) -> tuple[int, int, int]:
    """(prompt, completion, cached prompt) tokens from a chat completion's `usage`; a count that
    is missing or not a number reads 0 (it runs before the answer is stored: it must not fail)."""
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    details = usage.get("prompt_tokens_details") if isinstance(usage.get("prompt_tokens_details"), dict) else {}

    def count(value) -> int:
        try:
            return max(0, int(value or 0))
        except (TypeError, ValueError):
            return 0

    return count(usage.get("prompt_tokens")), count(usage.get("completion_tokens")), count(details.get("cached_tokens"))


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
