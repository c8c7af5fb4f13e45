"""sentence_beam: the knockout one sentence at a time (the paper's baseline): N candidates for the
next sentence (each ends at a full stop or at the end of the conclusion), the judged winner is
appended, until the conclusion closes, the answer's token budget is spent, or `max_sentences`."""
from __future__ import annotations

from ..stages import CLOSE
from .base import Step
from .registry import register

SENTENCE_END = "."


@register("sentence_beam")
def sentence_beam(session, config, judge, rng):
    steps: list[Step] = []
    spent = 0
    while CLOSE["conclusion"] not in session.text and len(steps) < config.max_sentences:
        budget = min(config.sentence_tokens, config.total_budget - spent)
        if budget <= 0:
            break
        cands = session.sample(config.beam, [SENTENCE_END, CLOSE["conclusion"]], budget,
                               greedy=config.greedy or None)
        ko = judge.knockout(session, "sentence", cands, rng)
        win = cands[ko.winner]
        session.commit(win)
        spent += len(win.token_ids)
        steps.append(Step("sentence", [c.text for c in cands], ko.winner, ko.comparisons, note=win.stop))
        if win.stop == "eos" or not win.token_ids:
            break
    return steps
