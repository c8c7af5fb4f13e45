"""stage_beam: the paper's stage-level beam search. For each of the four stages: N candidates, each
ending at that stage's closing tag (one batched generation on the efficient core); a knockout with
the stage's own judging criteria (reasoning: a correctness pre-check first); the winner is appended
and the next stage begins."""
from __future__ import annotations

from ..stages import CLOSE, STAGES
from .base import Step
from .registry import register


@register("stage_beam")
def stage_beam(session, config, judge, rng):
    steps: list[Step] = []
    for stage in STAGES:
        cands = session.sample(config.beam, [CLOSE[stage]], config.budget(stage), greedy=config.greedy or None)
        ko = judge.knockout(session, stage, cands, rng)
        session.commit(cands[ko.winner])
        steps.append(Step(stage, [c.text for c in cands], ko.winner, ko.comparisons,
                          note=f"stop={cands[ko.winner].stop}" + (f" flagged={ko.flagged}" if ko.flagged else "")))
    return steps
