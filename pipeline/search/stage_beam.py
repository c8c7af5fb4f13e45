"""stage_beam: the paper's stage-level beam search. For each of the four stages: N candidates, each
ending at that stage's closing tag (one batched generation on the efficient core); a knockout with
the stage's own judging criteria (reasoning: a correctness pre-check first) among the candidates
that close their stage properly (all of them when none does); the winner is appended and the next
stage begins.

It stops early when the winner ended the text (end of text before the last stage: nothing more is
asked of the model), and when the model writes no stage tag at all in the first stage (a model not
trained on the format): the rest of the answer is then one plain continuation, as `direct` would
write it, instead of three more rounds of searching text that has no stages."""
from __future__ import annotations

from ..stages import CLOSE, STAGES
from .base import Step
from .registry import register
from .wellformed import any_tag


@register("stage_beam")
def stage_beam(session, config, judge, rng):
    steps: list[Step] = []
    spent = 0
    for stage in STAGES:
        cands = session.sample(config.beam, [CLOSE[stage]], config.budget(stage), greedy=config.greedy or None)
        ko = judge.knockout(session, stage, cands, rng)
        win = cands[ko.winner]
        session.commit(win)
        spent += len(win.token_ids)
        note = f"stop={win.stop}" + (f" flagged={ko.flagged}" if ko.flagged else "") + \
            (f" not_well_formed={ko.dropped}" if ko.dropped else "")
        steps.append(Step(stage, [c.text for c in cands], ko.winner, ko.comparisons, note=note))
        if win.stop == "eos":
            steps[-1].note += " (the winner ended the text)"
            break
        if config.give_up_without_tags and stage == STAGES[0] and not any(any_tag(c.text) for c in cands):
            rest = session.sample(1, [CLOSE["conclusion"]], max(config.total_budget - spent, 1), greedy=config.greedy or None)[0]
            session.commit(rest)
            steps.append(Step("answer", [rest.text], 0, note="the model writes no stage tags: finished in one pass"))
            break
    return steps
