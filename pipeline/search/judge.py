"""The judge: stage-specific comparison prompts (our own wording), the reasoning pre-check, and the
knockout that keeps one of N candidates with N-1 comparisons.

A verdict is read from the model's own probabilities, never from a parsed free-text reply (a model
fine-tuned on four-stage answers answers every prompt with `<SUMMARY>...`, so a short greedy reply
never names a choice). Two ways, chosen per model (`mode="auto"`, decided once per core by whether
the model opens its answer to a question with <SUMMARY> more often than not: a four-stage model):

  - label: the comparison prompt shows both candidates and asks for "1" or "2"; the verdict is the
    choice whose continuation the model finds more likely (models that follow instructions; a
    separate instruction-tuned judge);
  - likelihood: for four-stage models. The judge prompt is the question itself (see
    `likelihood_prompt` for why), the model's reply is the answer so far, and each candidate is
    scored by the mean log-probability of its tokens there: the candidate the model itself would
    rather write. When the generating model judges, the core already has those log-probabilities
    from decoding (`Candidate.logprob`) and the verdicts cost no forward at all; a separate judge
    model scores all candidates of a step in one call. The knockout then compares scores (same
    pairing, same N-1 comparisons). The reasoning pre-check is left out (the score is the check);
    the retracing search's self-check reads "correct"/"incorrect" inside a forced <CONCLUSION>.

Both prefer well-formed candidates: a candidate that does its step properly (closes its stage,
keeps the answer a valid four-stage prefix) always beats one that does not, before the model is
asked. Batched cores score every comparison of a round (and the reasoning pre-check of all
candidates) in one call; the naive core scores them one by one in the same order (the public code's
cost structure). The decisions are the same either way.
"""
from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from typing import Sequence

from ..stages import CLOSE, OPEN
from .base import Candidate, Core, ScoreItem, Session, Verdict
from .wellformed import well_formed

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


def likelihood_prompt(kind: str, question: str) -> str:
    """Likelihood mode's judge prompt: the question itself. A model that knows only the four-stage
    format does not follow judging instructions, and an instruction added to the question moves it
    off the one format it knows: measured on the tiny four-stage model of the tests, its preference
    for the caption that names the colour asked about fell from 60 of 60 to chance (30 of 60) when
    the stage's criteria were appended to the question. So the candidates are scored where the model
    would write them, in its own answer to the question."""
    return question


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
    dropped: list[int] = field(default_factory=list)  # candidates left out as not well-formed
    scores: dict[int, float] = field(default_factory=dict)  # likelihood mode: each candidate's score


class Judge:
    """Judges with a core: the generating model by default, or a separate one. `mode`: auto, label
    or likelihood (see the module docstring)."""

    MODES = ("auto", "label", "likelihood")

    def __init__(self, core: Core | None = None, mode: str = "auto"):
        if mode not in self.MODES:
            raise ValueError(f"judge mode must be one of {', '.join(self.MODES)}, not {mode!r}")
        self.core = core
        self.mode = mode
        self._own: tuple[Session, Session] | None = None   # (generating session, judge's own session)

    def _ctx(self, session: Session) -> tuple[Core, Session]:
        core = self.core
        if core is None or core is getattr(session, "core", None):
            return session.core, session  # type: ignore[attr-defined]
        if self._own is None or self._own[0] is not session:
            # a separate judge encodes the question's image once per question
            if self._own is not None:
                self._own[1].close()
            self._own = (session, core.open(session.image, session.question))
        return core, self._own[1]

    def close(self) -> None:
        if self._own is not None:
            self._own[1].close()
            self._own = None

    def score(self, session: Session, items: Sequence[ScoreItem]) -> list[float]:
        core, ctx = self._ctx(session)
        return core.score(ctx, list(items)) if items else []

    def mode_for(self, session: Session) -> str:
        """label or likelihood for the judging model (auto: probed once per core, on this question)."""
        if self.mode != "auto":
            return self.mode
        core, _ = self._ctx(session)
        found = getattr(core, "judge_mode", None)
        if found is None:
            # a four-stage model opens its answer to a question with <SUMMARY> (its first token) more
            # often than not; a model that was not fine-tuned on the format does not. (Asked after a
            # judge prompt instead, a small model's reply is arbitrary: the tiny four-stage model of
            # the tests put 0.77 on "1" and nothing on <SUMMARY> there, while it opened every
            # answer to a question with <SUMMARY>.)
            first = tuple(core.tokens(OPEN["summary"])[:1]) if hasattr(core, "tokens") else OPEN["summary"]
            [tag] = self.score(session, [ScoreItem(session.question, "", first)])
            found = "likelihood" if tag > math.log(0.5) else "label"
            try:
                core.judge_mode = found
            except AttributeError:
                pass
        return found

    @property
    def batched(self) -> bool:
        return bool(getattr(self.core, "batched", True)) if self.core is not None else True

    # --- the three kinds of question ----------------------------------------------------------
    def compare(self, session: Session, kind: str, context: str, pairs: Sequence[tuple[str, str]]) -> list[Verdict]:
        """Label mode: which of each pair (bodies a, b) is better: log p("1") vs log p("2")."""
        items = []
        for a, b in pairs:
            prompt = compare_prompt(kind, session.question, context, a, b)
            items += [ScoreItem(prompt, "", PICK[0]), ScoreItem(prompt, "", PICK[1])]
        lp = self.score(session, items)
        return [Verdict(0 if lp[2 * i] >= lp[2 * i + 1] else 1, (lp[2 * i], lp[2 * i + 1]), "label")
                for i in range(len(pairs))]

    def check(self, session: Session, context: str, bodies: Sequence[str], what: str = "reasoning") -> list[float]:
        """The probability (between the two replies) that each body has no mistake. Four-stage models
        give their verdict inside a forced <CONCLUSION>."""
        reply = f"{OPEN['conclusion']}\n" if self.mode_for(session) == "likelihood" else ""
        items = []
        for body in bodies:
            prompt = precheck_prompt(session.question, context, body, what)
            items += [ScoreItem(prompt, reply, CHECK[0]), ScoreItem(prompt, reply, CHECK[1])]
        lp = self.score(session, items)
        out = []
        for i in range(len(bodies)):
            bad, good = lp[2 * i], lp[2 * i + 1]
            top = max(bad, good)
            out.append(math.exp(good - top) / (math.exp(good - top) + math.exp(bad - top)))
        return out

    def likelihoods(self, session: Session, kind: str, context: str, texts: Sequence[str | tuple[int, ...]]) -> list[float]:
        """Likelihood mode: mean log-probability per token of each candidate (text, or the token ids
        it was generated as) written after the answer so far, under the stage's judging prompt (one
        call). Per token, as a sum per text would favour short candidates."""
        prompt = likelihood_prompt(kind, session.question)
        lp = self.score(session, [ScoreItem(prompt, context, t) for t in texts])
        core, _ = self._ctx(session)

        def length(t) -> int:
            if isinstance(t, tuple):
                return max(1, len(t))
            return max(1, len(core.tokens(t)) if hasattr(core, "tokens") else len(t.split()))

        return [v / length(t) for v, t in zip(lp, texts)]

    # --- the knockout -----------------------------------------------------------------------
    def knockout(self, session: Session, kind: str, candidates: Sequence[Candidate],
                 rng: random.Random, context: str | None = None) -> "KnockoutResult":
        """Keep one candidate: rounds of pairwise comparisons (pairs drawn at random, an odd one out
        goes through), N-1 comparisons for N distinct candidates. Identical texts are judged once;
        when some candidates are well-formed for the step, only they take part."""
        texts = [c.text for c in candidates]
        if len(candidates) <= 1:
            return KnockoutResult(0)
        context = session.text if context is None else context
        first: dict[str, int] = {}
        pool = [first.setdefault(t, i) for i, t in enumerate(texts) if t not in first]
        formed = [i for i in pool if well_formed(kind, texts[i], context)]
        dropped = sorted(set(pool) - set(formed)) if formed else []
        pool = formed or pool
        if len(pool) == 1:
            return KnockoutResult(pool[0], dropped=dropped)
        mode = self.mode_for(session)
        if mode == "likelihood":
            return self._by_likelihood(session, kind, context, candidates, texts, pool, rng, dropped)
        return self._by_labels(session, kind, context, texts, pool, rng, dropped)

    def _by_likelihood(self, session, kind, context, candidates, texts, pool, rng, dropped) -> "KnockoutResult":
        core, _ = self._ctx(session)
        own = core is getattr(session, "core", None)
        if own and all(candidates[i].logprob is not None for i in pool):
            # the generating model judges: its log-probabilities from decoding are the scores
            scores = {i: candidates[i].logprob / max(1, len(candidates[i].token_ids)) for i in pool}
        else:
            # the candidates as they were generated (token ids) when the core gave them, else their text
            conts = [tuple(candidates[i].token_ids) if candidates[i].token_ids and hasattr(core, "tokens")
                     else texts[i] for i in pool]
            scores = dict(zip(pool, self.likelihoods(session, kind, context, conts)))
        result = KnockoutResult(pool[0], dropped=dropped, scores={i: round(v, 4) for i, v in scores.items()})
        while len(pool) > 1:
            order = pool[:]
            rng.shuffle(order)
            pairs = [(order[i], order[i + 1]) for i in range(0, len(order) - 1, 2)]
            bye = [order[-1]] if len(order) % 2 else []
            for a, b in pairs:
                result.comparisons.append((a, b, a if scores[a] >= scores[b] else b))
            pool = [c[2] for c in result.comparisons[-len(pairs):]] + bye
        result.winner = pool[0]
        return result

    def _by_labels(self, session, kind, context, texts, pool, rng, dropped) -> "KnockoutResult":
        bodies = [stage_body(kind, t) for t in texts]
        batched = self.batched and getattr(self._ctx(session)[0], "batched", True)
        flags: dict[int, bool] = {}

        def flagged(i: int) -> None:
            # one-by-one reasoning pre-check: per comparison, again each time a candidate comes up
            # (as the public code does). Batched cores pre-check every candidate once (below).
            flags[i] = self.check(session, context, [bodies[i]])[0] < 0.5

        result = KnockoutResult(pool[0], dropped=dropped)
        first_round = True
        while len(pool) > 1:
            order = pool[:]
            rng.shuffle(order)
            pairs = [(order[i], order[i + 1]) for i in range(0, len(order) - 1, 2)]
            bye = [order[-1]] if len(order) % 2 else []
            winners: dict[tuple[int, int], int] = {}
            if kind == "reasoning" and batched and first_round:
                # the pre-check of every candidate, one call, before the first round's comparisons
                for i, p in zip(pool, self.check(session, context, [bodies[i] for i in pool])):
                    flags[i] = p < 0.5
            first_round = False
            ask: list[tuple[int, int]] = []
            for a, b in pairs:
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
                    v = self.compare(session, kind, context, [(bodies[a], bodies[b])])[0]
                    winners[(a, b)] = a if v.choice == 0 else b
            if ask:
                for (a, b), v in zip(ask, self.compare(session, kind, context, [(bodies[a], bodies[b]) for a, b in ask])):
                    winners[(a, b)] = a if v.choice == 0 else b
            for a, b in pairs:
                result.comparisons.append((a, b, winners[(a, b)]))
            pool = [winners[p] for p in pairs] + bye
        result.winner = pool[0]
        result.flagged = sorted(i for i, f in flags.items() if f)
        return result
