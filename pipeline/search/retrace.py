"""retrace: stage-wise retracing search (after the paper's later SWIRES).

A scorer rates candidates: any callable (image, question, text) -> float, where text is the answer
up to and including the candidate's stage (a reward model, a verifier...). If it also has
`batch(image, question, texts) -> list[float]`, candidates of a step are scored in one call.
Without one, the model's own correctness check is used (1.0 correct, 0.0 not).

  summary:    `beam` candidates, the best-scored is kept
  caption:    `n_captions` candidates, the best-scored is kept        <-+
  reasoning:  `n_reasonings` candidates; if the best score is below     |
              `cutoff`, go back to the caption stage (at most `max_retraces` times) --+
              once the limit is reached, the best (caption, reasoning) pair seen so far is kept
  conclusion: `beam` candidates, the best-scored is kept
"""
from __future__ import annotations

from typing import Sequence

from ..stages import CLOSE
from .base import Candidate, Step
from .registry import register
from .wellformed import well_formed


class SelfCheckScorer:
    """The generating (or judge) model's own check of the newest stage: its probability of "correct"
    against "incorrect" (between 0 and 1)."""

    def __init__(self, judge, session):
        self.judge, self.session = judge, session

    def batch(self, image, question: str, texts: Sequence[str]) -> list[float]:
        prev = self.session.text          # every text is the answer so far + one candidate
        bodies = [t[len(prev):].strip() if t.startswith(prev) else t for t in texts]
        return self.judge.check(self.session, prev, bodies, what="latest part of the answer")

    def __call__(self, image, question: str, text: str) -> float:
        return self.batch(image, question, [text])[0]


def _scores(scorer, session, cands: Sequence[Candidate]) -> list[float]:
    texts = [session.text + c.text for c in cands]
    if hasattr(scorer, "batch"):
        return [float(s) for s in scorer.batch(session.image, session.question, texts)]
    return [float(scorer(session.image, session.question, t)) for t in texts]


def _best(scores: list[float]) -> int:
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


@register("retrace")
def retrace(session, config, judge, rng):
    scorer = config.scorer or SelfCheckScorer(judge, session)
    greedy = config.greedy or None
    steps: list[Step] = []

    def pick(stage: str, n: int) -> tuple[Candidate, float, list[Candidate]]:
        cands = session.sample(n, [CLOSE[stage]], config.budget(stage), greedy=greedy)
        sc = _scores(scorer, session, cands)
        formed = [well_formed(stage, c.text, session.text) for c in cands]
        if any(formed):        # a well-formed candidate beats any score of one that is not
            sc = [s if f else float("-inf") for s, f in zip(sc, formed)]
        i = _best(sc)
        steps.append(Step(stage, [c.text for c in cands], i, scores=sc))
        return cands[i], sc[i], cands

    win, _, _ = pick("summary", config.beam)
    session.commit(win)
    after_summary = session.mark()
    best: tuple[float, Candidate, Candidate] | None = None
    retraces = 0
    while True:
        caption, _, _ = pick("caption", config.n_captions)
        session.commit(caption)
        reasoning, score, _ = pick("reasoning", config.n_reasonings)
        if best is None or score > best[0]:
            best = (score, caption, reasoning)
        if score >= config.cutoff:
            session.commit(reasoning)
            break
        if retraces >= config.max_retraces:
            session.rollback(after_summary)
            session.commit(best[1])
            session.commit(best[2])
            steps.append(Step("retrace", [], -1, scores=[best[0]],
                              note=f"limit of {config.max_retraces} retraces reached; kept the best attempt"))
            break
        retraces += 1
        steps.append(Step("retrace", [], -1, scores=[score],
                          note=f"best reasoning score {score:.3f} < cutoff {config.cutoff}: back to the caption "
                               f"({retraces}/{config.max_retraces})"))
        session.rollback(after_summary)
    win, _, _ = pick("conclusion", config.beam)
    session.commit(win)
    return steps


__all__ = ["SelfCheckScorer", "retrace"]
