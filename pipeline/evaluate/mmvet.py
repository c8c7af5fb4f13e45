"""MM-Vet: open questions graded by an LLM with a score from 0 to 1 (in steps of 0.1).

The grader is any `judge(prompt) -> str` (the teacher, passed in by the orchestration layer); its verdicts are
cached per item (`cache.Ask`), so a re-run pays nothing. The reference answer may join parts with
<AND> (all needed; partial credit for some) or alternatives with <OR> (any one is enough). A reply
that holds no score in [0, 1] is asked again, up to five times as VLMEvalKit does, then scores 0.
The grading prompt follows MM-Vet's protocol (few-shot rows of a question / ground truth /
prediction / correctness table; the grader completes the last correctness). The capability column ("rec,ocr,spat") gives the breakdown: an item counts in
every capability it lists (rec, ocr, know, gen, spat, math) and in its combination.

Total = mean score x 100. Without a grader and without cached verdicts the items are scored by
the rule-based agreement instead (1 when it agrees, else 0) and marked `rules_no_grader`: a
stand-in for offline runs, not the published protocol.
"""
from __future__ import annotations

import re
from collections import defaultdict

from pipeline.agreement import agree
from pipeline.evaluate import register
from pipeline.evaluate.base import Benchmark, finish, mean
from pipeline.evaluate.extract import numbers_in, scored_text

CAPABILITIES = ("rec", "ocr", "know", "gen", "spat", "math")
ATTEMPTS = 5  # VLMEvalKit asks the grader up to five times

# MM-Vet's grading protocol, in our own words: the grader sees a few graded examples laid out as
# rows of a table (question | ground truth | prediction | correctness) and completes the
# correctness of the last row, a number from 0.0 to 1.0 in steps of 0.1; <AND> in a ground truth
# means every part is needed for full marks, <OR> that any one alternative is enough. The examples
# cover the cases the protocol distinguishes: exact and paraphrased matches, partial credit on
# <AND>, an <OR> alternative, a wrong number, and a long open answer judged on its substance.
GRADER_PROMPT = """Rate how correct an AI model's prediction is, compared with the ground truth, for a question about an image.
The ground truth may join parts with <AND>: the prediction is fully right only if it contains every part, and earns a share for each part it contains. It may list alternatives with <OR>: any one of them makes the prediction fully right.
Correctness is one of 0.0 (completely wrong), 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9 or 1.0 (completely right). Judge meaning rather than wording; extra detail is fine unless it contradicts the ground truth.
Fill in only the correctness of the last row.

| Question | Ground truth | Prediction | Correctness |
| --- | --- | --- | --- |
| How many candles are on the cake? | 4 | There are four candles. | 1.0 |
| How many candles are on the cake? | 4 | 6 | 0.0 |
| Which two fruits are in the bowl? | banana <AND> pear | A banana and an apple. | 0.5 |
| Which two fruits are in the bowl? | banana <AND> pear | pear, banana | 1.0 |
| What does the sign say? | STOP <OR> stop sign | It is a stop sign. | 1.0 |
| What is the total on the receipt? | $18.40 | The total is $14. | 0.0 |
| Why is the poster funny? | The dog is dressed as a postman, the very person dogs are said to chase, so the poster turns the joke around. | The dog wears a uniform. | 0.3 |
| Why is the poster funny? | The dog is dressed as a postman, the very person dogs are said to chase, so the poster turns the joke around. | It is funny because dogs usually chase mail carriers, and here the dog is the mail carrier. | 0.9 |
| {question} | {reference} | {answer} | """


def _cell(text: str) -> str:
    """One table cell: a single line, no column separator."""
    return re.sub(r"\s+", " ", text.replace("|", "/")).strip()


def grader_prompt(question: str, reference: str, answer: str) -> str:
    ref = reference.replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
    return GRADER_PROMPT.format(question=_cell(question), reference=_cell(ref), answer=_cell(answer))


def parse_grade(reply: str | None) -> float | None:
    """The first number in the reply when it lies in [0, 1]; None otherwise."""
    nums = numbers_in(reply or "")
    if nums and 0.0 <= nums[0] <= 1.0:
        return round(nums[0], 3)
    return None


def rule_grade(answer: str, reference: str) -> float:
    """Rule-based stand-in: <OR> alternatives, any agrees -> 1; <AND> parts -> the share that agree."""
    if "<OR>" in reference:
        return float(any(agree(answer, p.strip()).decision == "agree" for p in reference.split("<OR>") if p.strip()))
    parts = [p.strip() for p in reference.split("<AND>") if p.strip()]
    if not parts:
        return 0.0
    return sum(agree(answer, p).decision == "agree" for p in parts) / len(parts)


def capabilities_of(item) -> str:
    return (item.extra.get("capability") or item.category or "").strip()


@register
class MMVet(Benchmark):
    name = "MMVet"
    description = "open answers graded 0-1 by an LLM; mean x 100; per capability"

    def score(self, items, predictions, ask=None, scope="conclusion"):
        if ask is not None:  # first grading requests of all items at once (threads, when ask.workers > 1)
            texts = {it.index: scored_text(predictions[it.index], scope) for it in items if it.index in predictions}
            ask.prefetch([(it.index, "mmvet_grade", grader_prompt(it.question, it.answer, texts[it.index]))
                          for it in items if texts.get(it.index)])
        records = []
        for it in items:
            rec = {"index": it.index, "answer": it.answer, "capability": capabilities_of(it)}
            pred = predictions.get(it.index)
            if pred is None:
                records.append({**rec, "score": 0.0, "how": "missing"})
                continue
            text = scored_text(pred, scope)
            if not text:
                records.append({**rec, "score": 0.0, "how": "empty"})
                continue
            prompt = grader_prompt(it.question, it.answer, text)
            grade, how, replies = None, "grader_unparsed", []
            for attempt in range(ATTEMPTS):
                purpose = "mmvet_grade" if attempt == 0 else f"mmvet_grade#{attempt}"
                reply = ask(it.index, purpose, prompt) if ask is not None else None
                if reply is None:
                    how = "rules_no_grader"
                    break
                replies.append(reply[:200])
                grade = parse_grade(reply)
                if grade is not None:
                    how = "grader"
                    break
            if how == "rules_no_grader":
                grade = rule_grade(text, it.answer)
            records.append({**rec, "score": float(grade or 0.0), "how": how, "replies": replies})
        breakdown = {"Overall": mean(r["score"] for r in records)}
        per: dict[str, list[float]] = defaultdict(list)
        combos: dict[str, list[float]] = defaultdict(list)
        for r in records:
            caps = r["capability"]
            for c in CAPABILITIES:
                if c in caps:
                    per[c].append(r["score"])
            if caps:
                combos[caps.replace(",", "_").replace(" ", "")].append(r["score"])
        breakdown.update({c: mean(per[c]) for c in CAPABILITIES if per[c]})
        breakdown.update({f"combo:{k}": mean(v) for k, v in sorted(combos.items())})
        return finish(self.name, items, records, [r["score"] for r in records], ask, breakdown)
