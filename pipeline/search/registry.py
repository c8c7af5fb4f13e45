"""Strategies by name. A strategy is a function (session, config, judge, rng) -> list[Step] that
drives an open session until its answer is complete; `run` does the rest (opening, timing, parsing,
accounting). Adding a strategy is one new file with `@register("name")`."""
from __future__ import annotations

import importlib
import random
import time
from pathlib import Path
from typing import Any, Callable

from ..stages import parse
from .base import SearchConfig, SearchResult, Step
from .judge import Judge

Strategy = Callable[[Any, SearchConfig, Judge, random.Random], "list[Step]"]
STRATEGIES: dict[str, Strategy] = {}
_MODULES = ("direct", "best_of_n", "sentence_beam", "stage_beam", "retrace")


def register(name: str):
    def deco(fn: Strategy) -> Strategy:
        STRATEGIES[name] = fn
        return fn
    return deco


def strategies() -> dict[str, Strategy]:
    for m in _MODULES:
        importlib.import_module(f"{__package__}.{m}")
    return STRATEGIES


def get(name: str) -> Strategy:
    found = strategies()
    if name not in found:
        raise KeyError(f"unknown strategy {name!r}; known: {', '.join(sorted(found))}")
    return found[name]


def _image(image):
    if isinstance(image, (str, Path)):
        from PIL import Image

        with Image.open(image) as im:
            return im.convert("RGB")
    return image


def run(strategy: str, core, image, question: str, config: SearchConfig | None = None,
        judge: Judge | Any | None = None) -> SearchResult:
    """Answer `question` about `image` (a PIL image or a path) with `strategy` on `core`.
    `judge`: None (the same model), a `Judge`, or another core (a separate judge model)."""
    fn = get(strategy)
    config = config or SearchConfig()
    if not isinstance(judge, Judge):
        judge = Judge(judge, max_new_tokens=config.judge_tokens)
    stats0 = core.stats.as_dict()
    jstats0 = judge.core.stats.as_dict() if judge.core is not None and judge.core is not core else None
    t0 = time.perf_counter()
    session = core.open(_image(image), question)
    steps = fn(session, config, judge, random.Random(config.seed))
    seconds = time.perf_counter() - t0
    text = session.text.strip()
    parsed = parse(text)
    stats = {k: v - stats0[k] for k, v in core.stats.as_dict().items()}
    if jstats0 is not None:
        stats.update({f"judge_{k}": v - jstats0[k] for k, v in judge.core.stats.as_dict().items()})
    return SearchResult(strategy, text, dict(parsed.stages), parsed.problem, steps, stats, seconds)
