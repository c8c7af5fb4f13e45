"""MM-Vet: open questions graded by an LLM with a score from 0 to 1 (in steps of 0.1).

The grader is any `judge(prompt) -> str` (the teacher, passed in by the orchestration layer); its verdicts are
cached per item (`cache.Ask`), so a re-run pays nothing. The reference answer may join parts with
<AND> (all needed; partial credit for some) or alternatives with <OR> (any one is enough). A reply
that holds no score in [0, 1] is asked again, up to three times, then scores 0 (VLMEvalKit: five
tries, then 0). The capability column ("rec,ocr,spat") gives the breakdown: an item counts in
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
ATTEMPTS = 3

GRADER_PROMPT = """You grade an AI assistant's answer to a question about an image by comparing it with a reference answer.
Give a score from 0.0 (wrong) to 1.0 (fully right), in steps of 0.1.
- In the reference, parts joined by <AND> must all be present for full marks; give a share of the marks for each part that is present.
- Parts joined by <OR> are alternatives: any one of them is enough for full marks.
- Judge meaning, not wording. Extra detail is fine unless it contradicts the reference.
- For open explanations, score how much of the reference's substance the answer covers.
Reply with the number only.

Question: How many candles are on the cake?
Reference: 4
Answer: There are four candles.
Score: 1.0

Question: Which two fruits are in the bowl?
Reference: banana <AND> pear
Answer: A banana and an apple.
Score: 0.5

Question: What does the sign say?
Reference: STOP <OR> stop sign
Answer: It is a stop sign.
Score: 1.0

Question: What is the total on the receipt?
Reference: $18.40
Answer: The total is $14.
Score: 0.0

Question: Why is the poster funny?
Reference: The dog is dressed as a postman, the very person dogs are said to chase, so the poster turns the joke around.
Answer: The dog wears a uniform.
Score: 0.3

Question: {question}
Reference: {reference}
Answer: {answer}
Score:"""


def grader_prompt(question: str, reference: str, answer: str) -> str:
    ref = reference.replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
    ref = re.sub(r"\s+", " ", ref).strip()
    return GRADER_PROMPT.format(question=question.strip(), reference=ref, answer=answer.strip())


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
