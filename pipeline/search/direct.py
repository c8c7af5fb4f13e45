"""direct: one pass, no search: the whole four-stage answer in one generation."""
from __future__ import annotations

from ..stages import CLOSE
from .registry import register


@register("direct")
def direct(session, config, judge, rng):
    from .base import Step

    [answer] = session.sample(1, [CLOSE["conclusion"]], config.total_budget, greedy=config.greedy or None)
    session.commit(answer)
    return [Step("answer", [answer.text], 0, note=answer.stop)]
