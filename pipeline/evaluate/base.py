"""What every benchmark provides: load its TSV into `Item`s with the model's prompt, and score
predictions by its published rule into a `Score` (0-100, with a breakdown and per-item records)."""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping

from pipeline.evaluate.cache import Ask
from pipeline.evaluate.extract import extract_option, scored_text
from pipeline.evaluate.tsv import Item, read_items


@dataclass
class Score:
    benchmark: str
    value: float  # the headline number, 0-100
    n_items: int  # rows of the benchmark file
    n_units: int  # what `value` averages over: items, or circular groups (MMBench)
    missing: int  # items without a prediction; they count as wrong
    breakdown: dict[str, float] = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)  # per item: index, extracted, correct, how, ...
    how: dict[str, int] = field(default_factory=dict)  # how answers were extracted (rule -> count)
    judge_calls: int = 0
    judge_hits: int = 0  # verdicts read from the cache
    well_formed: int = 0  # predictions that are well-formed four-stage answers (set by run.score_run)

    def as_dict(self, records: bool = False) -> dict:
        d = asdict(self)
        if not records:
            d.pop("records")
        return d


class Benchmark:
    name: str = ""
    description: str = ""

    def load(self, path: str, storage_options: dict | None = None, skip_no_image: bool = True) -> list[Item]:
        """The benchmark's items with their prompts. Rows without an image are left out when the
        file has images at all, as VLMEvalKit does (`skip_noimg`)."""
        items = read_items(path, self.name, storage_options)
        if skip_no_image and any(it.has_image for it in items):
            items = [it for it in items if it.has_image]
        items = self.prepare(items)
        for it in items:
            it.prompt = self.prompt(it)
        return items

    def prepare(self, items: list[Item]) -> list[Item]:
        return items

    def prompt(self, item: Item) -> str:
        return item.question

    def score(self, items: list[Item], predictions: Mapping[str, str], ask: Ask | None = None,
              scope: str = "conclusion") -> Score:
        raise NotImplementedError


def mean(xs: Iterable[float]) -> float:
    xs = list(xs)
    return 100.0 * sum(xs) / len(xs) if xs else 0.0


def accuracy_by(records: list[dict], key: str, value_key: str = "correct") -> dict[str, float]:
    groups: dict[str, list[float]] = defaultdict(list)
    for r in records:
        k = r.get(key)
        if k:
            groups[k].append(float(r[value_key]))
    return {k: mean(v) for k, v in sorted(groups.items())}


def finish(name: str, items: list[Item], records: list[dict], units: list[float], ask: Ask | None,
           breakdown: dict[str, float], value: float | None = None) -> Score:
    missing = sum(1 for r in records if r.get("how") == "missing")
    return Score(
        benchmark=name, value=mean(units) if value is None else value, n_items=len(items), n_units=len(units),
        missing=missing, breakdown=breakdown, records=records, how=dict(Counter(r.get("how", "") for r in records)),
        judge_calls=ask.calls if ask else 0, judge_hits=ask.hits if ask else 0,
    )


def options_prompt(item: Item, instruction: str = "Answer with the letter of the correct option.") -> str:
    """The multiple-choice question as the model sees it (our wording)."""
    parts = []
    if item.hint:
        parts.append(f"Hint: {item.hint}")
    parts.append(f"Question: {item.question}")
    if item.options:
        parts.append("Options:\n" + "\n".join(f"{k}. {v}" for k, v in item.options.items()))
        parts.append(instruction)
    return "\n".join(parts)


def judge_mc(item: Item, prediction: str | None, ask: Ask | None, scope: str) -> dict:
    """One multiple-choice item: extract the chosen letter and compare with the answer letter."""
    rec = {"index": item.index, "answer": item.answer, "category": item.category, "l2_category": item.l2_category}
    if prediction is None:
        return {**rec, "extracted": None, "correct": 0, "how": "missing"}
    text = scored_text(prediction, scope)
    got = extract_option(text, item.options, item.question, ask.for_item(item.index) if ask else None)
    return {**rec, "extracted": got.value, "correct": int(got.value is not None and got.value == item.answer.strip().upper()),
            "how": got.how}


class MultipleChoice(Benchmark):
    """Plain multiple choice: accuracy over items; breakdown by category and l2-category."""

    def prompt(self, item: Item) -> str:
        return options_prompt(item)

    def score(self, items, predictions, ask=None, scope="conclusion") -> Score:
        records = [judge_mc(it, predictions.get(it.index), ask, scope) for it in items]
        breakdown = {"Overall": mean(r["correct"] for r in records)}
        breakdown.update(accuracy_by(records, "category"))
        breakdown.update({f"l2:{k}": v for k, v in accuracy_by(records, "l2_category").items()})
        return finish(self.name, items, records, [r["correct"] for r in records], ask, breakdown)
