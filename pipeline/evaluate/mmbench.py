"""MMBench_DEV_EN with circular evaluation.

Each question is asked once per rotation of its options (a question with k options has k copies:
copy i moves the option at letter position (q + i) mod k to position q, and the answer letter
with it). The copies share the original's group, `index % OFFSET`: the original has index n, copy i
has n + i * OFFSET (OFFSET = 1e6, times ten while an index reaches it). A group counts as correct
only when every copy in it is answered correctly. VLMEvalKit's MMBench files already hold the
copies (their image field names the original's index); a file holding only originals gets its
copies built here, the same way. Questions whose options contain option labels, or whose answer
is not one of their letters, are not rotated (a group of one), as VLMEvalKit does.

The score is the fraction of correct groups; the breakdown is over the original's category and
l2-category.
"""
from __future__ import annotations

import re
import string
from collections import defaultdict

from pipeline.evaluate import register
from pipeline.evaluate.base import Benchmark, accuracy_by, finish, judge_mc, mean, options_prompt
from pipeline.evaluate.extract import letter_by_rules, letter_by_text, scored_text
from pipeline.evaluate.tsv import Item

OFFSET = 1_000_000


def _int(index: str) -> int | None:
    return int(index) if index.lstrip("-").isdigit() else None


def rotatable(item: Item) -> bool:
    """VLMEvalKit leaves a question unrotated when an option text mentions two or more option
    labels as words ("A and B"), is itself a capital letter, or the answer is not one option letter."""
    letters = list(item.options)
    if len(letters) < 2 or letters != list(string.ascii_uppercase[: len(letters)]):
        return False
    for text in item.options.values():
        words = set(re.sub(r"[^A-Za-z ]", " ", text).split())
        if len(words & set(letters)) > 1 or text.strip() in string.ascii_uppercase:
            return False
    return len(item.answer) == 1 and item.answer in letters


def rotate(item: Item, i: int, offset: int) -> Item:
    letters = list(item.options)
    k = len(letters)
    options = {letters[q]: item.options[letters[(q + i) % k]] for q in range(k)}
    answer = letters[(letters.index(item.answer) - i) % k]
    return item.with_changes(index=str(int(item.index) + offset * i), options=options, answer=answer, group=item.index)


def with_copies(items: list[Item]) -> list[Item]:
    """Group the copies a file holds (a `g_index` column, or indices n + i * 1e6 beside an n), or
    build them when it holds only originals."""
    ints = [_int(it.index) for it in items]
    if any(v is None for v in ints):
        raise ValueError("MMBench indices must be integers (the circular groups are index % 1e6)")
    present = set(ints)
    if any("g_index" in it.extra for it in items) or any(v >= OFFSET and v % OFFSET in present for v in ints):
        for it, v in zip(items, ints):
            g = it.extra.get("g_index", "").strip()
            it.group = str(int(float(g))) if g else str(v % OFFSET)
        return items
    offset = OFFSET
    while max(ints, default=0) >= offset:
        offset *= 10
    out = []
    for it in items:
        it.group = it.index
        out.append(it)
    for it in list(out):
        if rotatable(it):
            out.extend(rotate(it, i, offset) for i in range(1, len(it.options)))
    return out


@register
class MMBenchDevEN(Benchmark):
    name = "MMBench_DEV_EN"
    description = "multiple choice, circular evaluation over rotated copies"

    def prepare(self, items: list[Item]) -> list[Item]:
        return with_copies(items)

    def prompt(self, item: Item) -> str:
        return options_prompt(item)

    def score(self, items, predictions, ask=None, scope="conclusion"):
        groups: dict[str, list[Item]] = defaultdict(list)
        for it in items:
            groups[it.group or it.index].append(it)
        records, group_records = [], []
        for g, members in groups.items():
            members.sort(key=lambda it: int(it.index))
            # rules first for every copy; one copy wrong by the rules sinks the group without a judge call
            first = []
            for it in members:
                pred = predictions.get(it.index)
                if pred is None:
                    first.append({"index": it.index, "answer": it.answer, "extracted": None, "correct": 0, "how": "missing"})
                    continue
                text = scored_text(pred, scope)
                got = letter_by_rules(text, list(it.options))
                if got.value is None:
                    got = letter_by_text(text, it.options)
                first.append({"index": it.index, "answer": it.answer, "extracted": got.value,
                              "correct": int(got.value == it.answer) if got.value is not None else None, "how": got.how})
            sunk = any(r["correct"] == 0 for r in first)
            for it, r in zip(members, first):
                if r["correct"] is None:
                    if sunk:
                        r.update(correct=0, how="skipped_group_wrong")
                    else:
                        r.update(judge_mc(it, predictions.get(it.index), ask, scope))
                        r.pop("category", None), r.pop("l2_category", None)
                r["group"] = g
                records.append(r)
            head = next((it for it in members if it.index == g), members[0])
            ok = int(all(r["correct"] == 1 for r in first))
            group_records.append({"group": g, "copies": len(members), "correct": ok,
                                  "category": head.category, "l2_category": head.l2_category})
        breakdown = {"Overall": mean(r["correct"] for r in group_records),
                     "vanilla_item_accuracy": mean(r["correct"] for r in records)}
        breakdown.update(accuracy_by(group_records, "category"))
        breakdown.update({f"l2:{k}": v for k, v in accuracy_by(group_records, "l2_category").items()})
        return finish(self.name, items, records, [r["correct"] for r in group_records], ask, breakdown)
