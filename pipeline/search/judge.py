"""The judge: stage-specific comparison prompts (our own wording), the reasoning pre-check, and the
knockout that keeps one of N candidates with N-1 comparisons.

Batched cores run every comparison of a knockout round as one call, and the reasoning pre-check of
all candidates as one call; the naive core runs them one by one in the same order (the public code's
cost structure). The decisions are the same either way: the same pairing, the same prompts, greedy
verdicts.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Sequence

from ..stages import CLOSE, OPEN
from .base import Candidate, Core, Session, Verdict

PICK = ("1", "2")
CHECK = ("incorrect", "correct")   # index 0 = a mistake was found

# what a better candidate looks like, per kind of step
CRITERIA = {
    "summary": (
        "the opening summary of an answer",
        "The better summary sets out the plan: what to look at in the image and which steps lead to the "
        "answer. It stays at the level of the approach and does not already work through details, "
        "formulas or the final answer.",
    ),
    "caption": (
        "a description of the image",
        "The better description reports everything in the image that matters for the question, with "
        "specific, correct details (objects, numbers, text, positions) rather than general remarks, and "
        "makes fewer mistakes about what is actually shown.",
    ),
    "reasoning": (
        "a piece of step-by-step reasoning",
        "The better reasoning gets from the facts already stated to an answer in sound steps that can be "
        "checked one by one, with fewer logical or arithmetic slips.",
    ),
    "conclusion": (
        "the final conclusion of an answer",
        "The better conclusion gives an answer that follows from the reasoning already written and "
        "actually answers the question. A conclusion that declines, refuses or avoids answering is "
        "always the worse one.",
    ),
    "answer": (
        "a complete answer",
        "The better answer is correct, supported by what the image shows and by sound reasoning, and "
        "answers exactly what was asked.",
    ),
    "sentence": (
        "the next sentence of an answer",
        "The better sentence continues the text written so far correctly and moves the answer forward.",
    ),
}

# every judge prompt of a question starts the same way (question, then the answer so far), so a
# batch of them, pre-checks and comparisons alike, shares that prefix and it is encoded once
HEADER = "You are checking an answer to a question about the image.\n\nQuestion: {question}\n\nAnswer so far:\n{context}"

PRECHECK = (
    "Task: check the {what} below for mistakes. Take what the answer says about the image as true and "
    "judge only the {what} itself; redo any calculation it makes.\n\n{What} to check:\n{body}\n\n"
    "Reply with one word: correct if you find no mistake, incorrect if you find one."
)


def stage_body(kind: str, text: str) -> str:
    """The part of a candidate the judge reads: a stage's body without its tags."""
    if kind in OPEN:
        m = re.search(re.escape(OPEN[kind]) + r"(.*?)" + re.escape(CLOSE[kind]), text, re.S)
        if m:
            return m.group(1).strip()
        return text.replace(OPEN[kind], "").strip()
    return text.strip()


def _header(question: str, context: str) -> str:
    return HEADER.format(question=question, context=context.strip() or "(nothing yet)")


def compare_prompt(kind: str, question: str, context: str, a: str, b: str) -> str:
    what, criterion = CRITERIA[kind]
    return "\n\n".join([
        _header(question, context),
        f"Task: compare two candidates for {what}. {criterion}",
        f"Candidate 1:\n{a}", f"Candidate 2:\n{b}",
        "Which candidate is better? Reply with the number 1 or 2 only."])


def precheck_prompt(question: str, context: str, body: str, what: str = "reasoning") -> str:
    """The correctness check: of a reasoning candidate (the knockout's pre-check), or of any newest
    part of an answer (the retracing search's default scorer)."""
    return _header(question, context) + "\n\n" + PRECHECK.format(what=what, What=what[:1].upper() + what[1:],
                                                                  body=body)


@dataclass
class KnockoutResult:
    winner: int                                       # index into the candidates given
    comparisons: list[tuple[int, int, int]] = field(default_factory=list)
    flagged: list[int] = field(default_factory=list)  # reasoning candidates the pre-check found wrong


class Judge:
    """Judges with a core: the generating model by default, or a separate (model, processor)."""

    def __init__(self, core: Core | None = None, max_new_tokens: int = 4):
        self.core = core
        self.max_new_tokens = max_new_tokens
        self._own: tuple[Session, Session] | None = None   # (generating session, judge's own session)

    def _ctx(self, session: Session) -> tuple[Core, Session]:
        core = self.core
        if core is None or core is getattr(session, "core", None):
            return session.core, session  # type: ignore[attr-defined]
        if self._own is None or self._own[0] is not session:
            # a separate judge encodes the question's image once per question
            self._own = (session, core.open(session.image, session.question))
        return core, self._own[1]

    def verdicts(self, session: Session, prompts: Sequence[str], choices) -> list[Verdict]:
        """choices: one tuple for all prompts, or one per prompt."""
        core, ctx = self._ctx(session)
        if not prompts:
            return []
        if core.batched:
            return core.verdicts(ctx, list(prompts), choices, self.max_new_tokens)
        options = [choices] * len(prompts) if choices and isinstance(choices[0], str) else list(choices)
        return [core.verdicts(ctx, [p], o, self.max_new_tokens)[0] for p, o in zip(prompts, options)]

    @property
    def batched(self) -> bool:
        return bool(getattr(self.core, "batched", True)) if self.core is not None else True

    def knockout(self, session: Session, kind: str, candidates: Sequence[Candidate],
                 rng: random.Random, context: str | None = None) -> KnockoutResult:
        """Keep one candidate: rounds of pairwise comparisons (pairs drawn at random, an odd one out
        goes through), N-1 comparisons for N distinct candidates. Identical texts are judged once."""
        texts = [c.text for c in candidates]
        if len(candidates) <= 1:
            return KnockoutResult(0)
        context = session.text if context is None else context
        bodies = [stage_body(kind, t) for t in texts]
        first: dict[str, int] = {}
        pool = [first.setdefault(t, i) for i, t in enumerate(texts) if t not in first]
        core, _ = self._ctx(session)
        batched = core.batched
        flags: dict[int, bool] = {}

        def flagged(i: int) -> None:
            # one-by-one reasoning pre-check: per comparison, again each time a candidate comes up
            # (as the public code does). Batched cores pre-check every candidate once (below).
            flags[i] = self.verdicts(session, [precheck_prompt(session.question, context, bodies[i])],
                                     CHECK)[0].choice == 0

        result = KnockoutResult(pool[0])
        first_round = True
        while len(pool) > 1:
            order = pool[:]
            rng.shuffle(order)
            pairs = [(order[i], order[i + 1]) for i in range(0, len(order) - 1, 2)]
            bye = [order[-1]] if len(order) % 2 else []
            winners: dict[tuple[int, int], int] = {}
            if kind == "reasoning" and batched and first_round:
                # the pre-check of every candidate, one call, before the first round's comparisons
                got = self.verdicts(session, [precheck_prompt(session.question, context, bodies[i]) for i in pool],
                                    CHECK)
                for i, v in zip(pool, got):
                    flags[i] = v.choice == 0
            first_round = False
            ask: list[tuple[int, int]] = []
            for a, b in pairs:
                if (a, b) in winners:
                    continue
                if kind == "reasoning":
                    if not batched:
                        flagged(a)
                    if flags[a]:
                        winners[(a, b)] = b
                        continue
                    if not batched:
                        flagged(b)
                    if flags[b]:
                        winners[(a, b)] = a
                        continue
                if batched:
                    ask.append((a, b))
                else:
                    v = self.verdicts(session, [compare_prompt(kind, session.question, context,
                                                               bodies[a], bodies[b])], PICK)[0]
                    winners[(a, b)] = a if v.choice == 0 else b
            if ask:
                prompts = [compare_prompt(kind, session.question, context, bodies[a], bodies[b]) for a, b in ask]
                for (a, b), v in zip(ask, self.verdicts(session, prompts, PICK)):
                    winners[(a, b)] = a if v.choice == 0 else b
            for a, b in pairs:
                result.comparisons.append((a, b, winners[(a, b)]))
            pool = [winners[p] for p in pairs] + bye
        result.winner = pool[0]
        result.flagged = sorted(i for i, f in flags.items() if f)
        return result
