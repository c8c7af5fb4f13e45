"""HallusionBench: yes/no questions in sets; each set has figures (the original, and edited ones
that flip the answer) and questions asked about each figure.

Three accuracies (percent):
- aAcc: over all questions;
- fAcc: over figures: a figure counts when every question about it is answered correctly;
- qAcc: over questions: a question counts when it is answered correctly for every figure it is
  asked about (the question "pair").
The headline is their mean, as the OpenVLM leaderboard reports it.

Where a question's set, figure and question ids come from: the `set_id`, `figure_id` and
`question_id` columns when the file has them, else the index, which VLMEvalKit writes as
`<category>_<subcategory>_<visual input>_<set>_<figure>_<question>` (fields 3, 4, 5 split on "_").
Groups are keyed by category, l2-category (the subcategory), set and figure (or question).
Answers are "Yes"/"No" (1/0 accepted). A prediction is read as yes or no by VLMEvalKit's word rule,
then by the LLM; otherwise it is wrong.
"""
from __future__ import annotations

from collections import defaultdict

from pipeline.evaluate import register
from pipeline.evaluate.base import Benchmark, finish, mean
from pipeline.evaluate.extract import extract_yes_no, scored_text
from pipeline.evaluate.tsv import Item, is_missing


def yes_no_answer(answer: str) -> str:
    a = answer.strip().lower()
    return {"yes": "Yes", "1": "Yes", "true": "Yes", "no": "No", "0": "No", "false": "No"}.get(a, answer.strip())


def ids_of(item: Item) -> tuple[str, str, str]:
    """(set_id, figure_id, question_id) of an item."""
    cols = [item.extra.get(k, "") for k in ("set_id", "figure_id", "question_id")]
    if all(not is_missing(c) for c in cols):
        return tuple(str(c).strip() for c in cols)  # type: ignore[return-value]
    parts = item.index.split("_")
    if len(parts) < 6:
        raise ValueError(f"HallusionBench index {item.index!r}: expected <cat>_<subcat>_<visual>_<set>_<figure>_<question>"
                         " or set_id/figure_id/question_id columns")
    return parts[-3], parts[-2], parts[-1]


def _category(item: Item) -> str:
    return item.category or item.index.split("_")[0]


def three_accuracies(records: list[dict]) -> dict[str, float]:
    """aAcc, fAcc and qAcc of per-question records holding category, l2_category, set_id,
    figure_id, question_id and correct."""
    figures: dict[tuple, list[int]] = defaultdict(list)
    questions: dict[tuple, list[int]] = defaultdict(list)
    for r in records:
        base = (r["category"], r["l2_category"], r["set_id"])
        figures[base + (r["figure_id"],)].append(r["correct"])
        questions[base + (r["question_id"],)].append(r["correct"])
    return {
        "aAcc": mean(r["correct"] for r in records),
        "fAcc": mean(float(all(v)) for v in figures.values()),
        "qAcc": mean(float(all(v)) for v in questions.values()),
    }


@register
class HallusionBench(Benchmark):
    name = "HallusionBench"
    description = "yes/no; mean of aAcc (question), fAcc (figure) and qAcc (question pair)"

    def score(self, items, predictions, ask=None, scope="conclusion"):
        records = []
        for it in items:
            set_id, figure_id, question_id = ids_of(it)
            rec = {"index": it.index, "answer": yes_no_answer(it.answer), "category": _category(it),
                   "l2_category": it.l2_category, "set_id": set_id, "figure_id": figure_id, "question_id": question_id}
            pred = predictions.get(it.index)
            if pred is None:
                records.append({**rec, "extracted": None, "correct": 0, "how": "missing"})
                continue
            got = extract_yes_no(scored_text(pred, scope), it.question, ask.for_item(it.index) if ask is not None else None)
            records.append({**rec, "extracted": got.value, "correct": int(got.value == rec["answer"]), "how": got.how})
        acc = three_accuracies(records)
        breakdown = {"Overall": (acc["aAcc"] + acc["fAcc"] + acc["qAcc"]) / 3, **acc}
        for key, label in (("category", "category"), ("l2_category", "l2")):
            for value in sorted({r[key] for r in records if r[key]}):
                sub = three_accuracies([r for r in records if r[key] == value])
                breakdown.update({f"{label}:{value}:{k}": v for k, v in sub.items()})
        return finish(self.name, items, records, [r["correct"] for r in records], ask, breakdown, value=breakdown["Overall"])
