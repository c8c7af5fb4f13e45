"""What every strategy sees: the session/core interface, the configuration and the result.

No torch here: strategies are written against these protocols, so a scripted core (tests) or the
real generation core (`core.py`) can sit behind them.

A *core* owns a (model, processor) pair. `core.open(image, question)` returns a *session*: the
question's encoded prefix plus the answer text committed so far. A session can
  - `sample(n, stop, max_new_tokens, greedy)`: n continuations of the committed text, each ending at
    the first of its stop strings (or end of text, or the token budget);
  - `commit(candidate)`: append a continuation;
  - `mark()` / `rollback(mark)`: go back to an earlier commit point (retracing search).
  - `close()`: give back what the session holds on the core.
`core.score(session, items)` returns, for each `ScoreItem` (a judge prompt about the session's
image, a forced start of the reply, a continuation), the model's log-probability of the
continuation: what the judge reads its verdicts from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from ..stages import STAGES

# per-stage token budgets (new tokens per candidate); generous for a real model
DEFAULT_BUDGETS = {"summary": 128, "caption": 256, "reasoning": 512, "conclusion": 128}


@dataclass
class Candidate:
    text: str                     # the new text (special tokens skipped)
    token_ids: list[int] = field(default_factory=list)  # the new tokens (an end-of-text token dropped)
    stop: str = "budget"          # which stop string ended it, or "eos", or "budget"
    logprob: float | None = None  # the model's log-probability of token_ids (untempered), when the core kept it


@dataclass
class Verdict:
    choice: int                   # index into the choices offered
    scores: tuple[float, ...] = ()  # the model's log-probability of each choice (or its candidate's score)
    how: str = ""                 # "label" (the choices' words) or "likelihood" (the candidates themselves)


@dataclass(frozen=True)
class ScoreItem:
    """A continuation to score: `prompt` (the user turn, about the question's image), `reply` (the
    forced start of the model's answer: text, or token ids) and `continuation` (text or token ids)."""
    prompt: str
    reply: str | tuple[int, ...] = ""
    continuation: str | tuple[int, ...] = ""


class Session(Protocol):
    image: Any
    question: str

    @property
    def text(self) -> str: ...
    def sample(self, n: int, stop: Sequence[str], max_new_tokens: int,
               greedy: bool | None = None) -> list[Candidate]: ...
    def commit(self, candidate: Candidate) -> None: ...
    def mark(self) -> int: ...
    def rollback(self, mark: int) -> None: ...
    def close(self) -> None: ...


class Core(Protocol):
    batched: bool                 # False: the naive cost structure (one call per candidate / comparison)
    stats: Any

    def open(self, image: Any, question: str) -> Session: ...
    def score(self, session: Session, items: Sequence[ScoreItem]) -> list[float]: ...


# (image, question, text of the answer up to and including the candidate stage) -> score
Scorer = Callable[[Any, str, str], float]


@dataclass
class SearchConfig:
    beam: int = 4                         # N: candidates per step
    budgets: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_BUDGETS))
    greedy: bool = False                  # False: temperature / top-p sampling (the core's settings)
    judge: str = "auto"                   # how verdicts are read: auto | label | likelihood (see judge.py)
    give_up_without_tags: bool = True     # stage_beam: a model that writes no stage tag is not searched
                                          # stage by stage (False: every stage runs, e.g. to measure cost)
    seed: int = 0                         # pairing of the knockout
    sentence_tokens: int = 64             # sentence_beam: budget of one sentence
    max_sentences: int = 64               # sentence_beam: at most this many steps
    # retrace (SWIRES-like)
    scorer: Scorer | None = None
    n_captions: int = 3
    n_reasonings: int = 3
    cutoff: float = 0.5
    max_retraces: int = 2

    @property
    def total_budget(self) -> int:
        return sum(self.budgets.get(s, DEFAULT_BUDGETS[s]) for s in STAGES)

    def budget(self, stage: str) -> int:
        return self.budgets.get(stage, DEFAULT_BUDGETS[stage])


@dataclass
class Step:
    """One step of a search, for the trace: what was sampled and what won."""
    kind: str                             # a stage name, "answer", "sentence", "retrace", ...
    candidates: list[str]
    winner: int
    comparisons: list[tuple[int, int, int]] = field(default_factory=list)  # (a, b, winner)
    scores: list[float] | None = None
    note: str = ""


@dataclass
class SearchResult:
    strategy: str
    text: str
    stages: dict[str, str]
    problem: str | None                   # stages.parse problem code, None when well-formed
    steps: list[Step] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def conclusion(self) -> str:
        return self.stages.get("conclusion", "")


class StopScanner:
    """Per-row stop detection that looks only at new tokens: each row keeps the last few characters
    it produced (as many as the longest stop string needs), the new token's text is appended and
    only that window is searched. Cost per token: O(longest stop string), independent of how long
    the sequence is. `piece(token_id)` gives a token's text (cached by the core)."""

    def __init__(self, stops: Sequence[str], piece: Callable[[int], str], eos: Sequence[int] = ()):
        self.stops = [s for s in stops if s]
        self.keep = max((len(s) for s in self.stops), default=1) - 1
        self.piece = piece
        self.eos = set(eos)
        self.tails: dict[int, str] = {}

    def feed(self, row: int, token: int) -> str | None:
        """None to go on, else why the row ends: "eos" or the stop string just completed."""
        if token in self.eos:
            return "eos"
        if not self.stops:
            return None
        piece = self.piece(token)
        if not piece:
            return None
        window = self.tails.get(row, "") + piece
        for s in self.stops:
            if s in window:
                return s
        self.tails[row] = window[-self.keep:] if self.keep else ""
        return None
