"""A scripted core for strategy tests: no model, no torch. Continuations and verdicts come from the
test; the core cuts each continuation at its first stop string (or its word budget), as the real
core does per token, and logs every call."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

from pipeline.search.base import Candidate, Verdict


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


class ScriptedCore:
    """continuations(text_so_far, stop, n) -> n raw continuations (may run past the stop string);
    prefer(a, b) -> 0 or 1 (which of two compared bodies the judge picks);
    wrong(body) -> True when the reasoning pre-check should answer 'incorrect'."""

    def __init__(self, continuations: Callable[[str, list[str], int], list[str]],
                 prefer: Callable[[str, str], int] | None = None,
                 wrong: Callable[[str], bool] | None = None, batched: bool = True):
        self.continuations = continuations
        self.prefer = prefer or (lambda a, b: 0)
        self.wrong = wrong or (lambda body: False)
        self.batched = batched
        self.stats = Counts()
        self.log: list[tuple] = []
        self.prompts: list[str] = []

    def open(self, image, question: str) -> ScriptedSession:
        return ScriptedSession(self, image, question)

    def verdicts(self, session, prompts, choices, max_new_tokens=4) -> list[Verdict]:
        self.stats.judge_calls += 1
        self.stats.judge_prompts += len(prompts)
        self.log.append(("verdicts", len(prompts)))
        self.prompts += prompts
        out = []
        options = [choices] * len(prompts) if isinstance(choices[0], str) else list(choices)
        for p, choices in zip(prompts, options):
            pair, body = compared(p), checked(p)
            if pair is not None:
                c = self.prefer(*pair)
                out.append(Verdict(c, choices[c]))
            elif body is not None:
                c = 0 if self.wrong(body) else 1
                out.append(Verdict(c, choices[c]))
            else:
                raise AssertionError(f"unexpected judge prompt: {p[:200]}")
        return out
