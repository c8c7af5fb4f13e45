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
    """A PIL image (or None: a text-only question) from a path, an image, or a list of them. Mllama's
    search takes one image per question: several are joined side by side into one (what a model
    given one image can still read), a fallback the caller may record."""
    if isinstance(image, (list, tuple)):
        images = [_image(i) for i in image if i is not None]
        if not images:
            return None
        if len(images) == 1:
            return images[0]
        from PIL import Image

        height = max(im.height for im in images)
        joined = Image.new("RGB", (sum(im.width for im in images) + 8 * (len(images) - 1), height), "white")
        x = 0
        for im in images:
            joined.paste(im.convert("RGB"), (x, (height - im.height) // 2))
            x += im.width + 8
        return joined
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
    if config.beam < 1:
        raise ValueError(f"beam must be at least 1, not {config.beam}")
    own_judge = not isinstance(judge, Judge)
    if own_judge:
        judge = Judge(judge, mode=config.judge)
    stats0 = core.stats.as_dict()
    jstats0 = judge.core.stats.as_dict() if judge.core is not None and judge.core is not core else None
    t0 = time.perf_counter()
    session = core.open(_image(image), question, seed=config.seed) if _takes_seed(core) else core.open(_image(image), question)
    try:
        steps = fn(session, config, judge, random.Random(config.seed))
    finally:
        session.close()
        if own_judge:
            judge.close()
    seconds = time.perf_counter() - t0
    text = session.text.strip()
    parsed = parse(text)
    stats = {k: v - stats0[k] for k, v in core.stats.as_dict().items()}
    if jstats0 is not None:
        stats.update({f"judge_{k}": v - jstats0[k] for k, v in judge.core.stats.as_dict().items()})
    return SearchResult(strategy, text, dict(parsed.stages), parsed.problem, steps, stats, seconds)


def _takes_seed(core) -> bool:
    import inspect

    try:
        return "seed" in inspect.signature(core.open).parameters
    except (TypeError, ValueError):
        return False
