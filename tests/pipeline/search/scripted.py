"""A scripted core for strategy tests: no model, no torch. Continuations and verdicts come from the
test; the core cuts each continuation at its first stop string (or its word budget), as the real
core does per token, and logs every call."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

from pipeline.search.base import Candidate
from pipeline.stages import OPEN


@dataclass
class Counts:
    generate_calls: int = 0
    judge_calls: int = 0
    judge_prompts: int = 0
    forward_calls: int = 0
    forward_tokens: int = 0
    vision_calls: int = 0

    def as_dict(self):
        return dict(self.__dict__)


def compared(prompt: str) -> tuple[str, str] | None:
    m = re.search(r"Candidate 1:\n(.*?)\n\nCandidate 2:\n(.*?)\n\nWhich candidate", prompt, re.S)
    return (m.group(1), m.group(2)) if m else None


def checked(prompt: str) -> str | None:
    m = re.search(r"(?:Reasoning|Latest part of the answer) to check:\n(.*?)\n\nReply with one word", prompt, re.S)
    return m.group(1) if m else None


class ScriptedSession:
    def __init__(self, core: "ScriptedCore", image, question: str):
        self.core, self.image, self.question = core, image, question
        self._text = ""
        self._marks: list[int] = []

    @property
    def text(self) -> str:
        return self._text

    def sample(self, n: int, stop: Sequence[str], max_new_tokens: int, greedy=None) -> list[Candidate]:
        self.core.stats.generate_calls += 1
        raw = self.core.continuations(self._text, list(stop), n)
        self.core.log.append(("sample", tuple(stop), n, max_new_tokens))
        assert len(raw) == n
        out = []
        for r in raw:
            r = " ".join(r.split(" ")[:max_new_tokens])          # words stand for tokens
            hits = [(r.find(s) + len(s), s) for s in stop if s in r]
            text, s = (r[: min(hits)[0]], min(hits)[1]) if hits else (r, "budget")
            out.append(Candidate(text, list(range(len(text.split(" ")))), s))
        return out

    def commit(self, c: Candidate) -> None:
        self.core.log.append(("commit", c.text))
        self._text += c.text

    def mark(self) -> int:
        self._marks.append(len(self._text))
        return len(self._marks) - 1

    def rollback(self, mark: int) -> None:
        self.core.log.append(("rollback", mark))
        self._text = self._text[: self._marks[mark]]
        del self._marks[mark + 1:]

    def close(self) -> None:
        self.core.log.append(("close",))


class ScriptedCore:
    """continuations(text_so_far, stop, n) -> n raw continuations (may run past the stop string);
    prefer(a, b) -> 0 or 1 (which of two compared bodies the judge picks);
    wrong(body) -> True when the reasoning pre-check should answer 'incorrect';
    likes(text) -> a candidate's log-probability in likelihood mode (default: prefer's order);
    judge_mode: what the judge reads ("label" or "likelihood"; None: let the judge probe, which sees
    a four-stage model when `four_stage`)."""

    def __init__(self, continuations: Callable[[str, list[str], int], list[str]],
                 prefer: Callable[[str, str], int] | None = None,
                 wrong: Callable[[str], bool] | None = None, batched: bool = True,
                 likes: Callable[[str], float] | None = None, judge_mode: str | None = "label",
                 four_stage: bool = False):
        self.continuations = continuations
        self.prefer = prefer or (lambda a, b: 0)
        self.wrong = wrong or (lambda body: False)
        self.likes = likes
        self.batched = batched
        self.four_stage = four_stage
        if judge_mode is not None:
            self.judge_mode = judge_mode
        self.stats = Counts()
        self.log: list[tuple] = []
        self.prompts: list[str] = []

    def open(self, image, question: str) -> ScriptedSession:
        return ScriptedSession(self, image, question)

    def score(self, session, items) -> list[float]:
        self.stats.judge_calls += 1
        prompts = list(dict.fromkeys(it.prompt for it in items))
        self.stats.judge_prompts += len(prompts)
        self.log.append(("verdicts", len(prompts)))
        self.prompts += prompts
        return [self._score(it) for it in items]

    def _score(self, item) -> float:
        p, cont = item.prompt, item.continuation
        if cont == OPEN["summary"]:                                    # the judge's probe
            return -0.1 if self.four_stage else -10.0
        pair, body = compared(p), checked(p)
        if pair is not None:
            return 0.0 if cont == str(1 + self.prefer(*pair)) else -5.0
        if body is not None:
            return 0.0 if (cont == "incorrect") == self.wrong(body) else -5.0
        if item.reply is not None and pair is None and body is None:  # likelihood mode: the candidate itself
            n = max(1, len(cont.split()))
            if self.likes is not None:
                return self.likes(cont) * n
            m = re.search(r"q=(\d+)", cont)
            return (float(m.group(1)) if m else -1.0) * n
        raise AssertionError(f"unexpected judge prompt: {p[:200]}")
