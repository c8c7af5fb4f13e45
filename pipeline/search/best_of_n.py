"""best_of_n: N whole answers, one knockout on the whole answers (the paper's baseline)."""
from __future__ import annotations

from ..stages import CLOSE
from .base import Step
from .registry import register


@register("best_of_n")
def best_of_n(session, config, judge, rng):
    cands = session.sample(config.beam, [CLOSE["conclusion"]], config.total_budget, greedy=config.greedy or None)
    ko = judge.knockout(session, "answer", cands, rng)
    session.commit(cands[ko.winner])
    return [Step("answer", [c.text for c in cands], ko.winner, ko.comparisons)]
