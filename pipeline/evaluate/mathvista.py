"""MathVista_MINI (testmini, 1,000 questions): the answer is extracted from the prediction, by
rules first and by the LLM only when they cannot, then compared by the answer's type.

Columns beyond the common ones: question_type (multi_choice | free_form), answer_type (integer |
float | text | list), precision (decimal places of a float answer), choices (a Python list of the
option texts), answer_option (the answer's letter, when given), unit, task, skills.

- multi_choice: the shared option rule (a lone letter, a unique option text, the LLM); the letter
  maps to its option text, which must equal the answer (or the letter the answer_option column).
- integer: the extracted number must be a whole number equal to the answer ("1,000" = 1000;
  3.7 is not 3).
- float: both rounded to `precision` decimals must agree ("3.50" = 3.5 at precision 1; so does
  3.54, as in MathVista's own scorer).
- list: the same numbers in the same order ("[2007, 2008]").
- text: equal after normalising case, punctuation and articles.
Score: accuracy over items; breakdown by task, skill, question type and answer type.
"""
from __future__ import annotations

import ast
import re

from pipeline.agreement import normalise
from pipeline.evaluate import register
from pipeline.evaluate.base import Benchmark, accuracy_by, finish, mean
from pipeline.evaluate.extract import (Extracted, extract_option, list_by_rules, number_by_rules, numbers_in,
                                       scored_text, to_number)
from pipeline.evaluate.tsv import Item, is_missing

EXTRACT_PROMPT = """Read a question and a model's response to it. Write down only the final answer the response commits to, in the form the question asks for: a whole number, a decimal number, a list such as [3, 5], or a short phrase. Write NONE if the response gives no final answer.

Question: How many red blocks are on the table?
Response: Counting from the left there are two red blocks, then one more behind the box, so three in all.
Final answer: 3

Question: What is the ratio of the left bar to the right bar? Give a number with two decimals.
Response: The left bar reaches 3 and the right one 4, which gives a ratio of 0.75.
Final answer: 0.75

Question: In which two years was rainfall lowest? Answer with a list.
Response: The driest years on the chart are 1998 and, once again, 2003.
Final answer: [1998, 2003]

Question: What is the name of the largest planet shown?
Response: Of the planets drawn, Jupiter is clearly the biggest one.
Final answer: Jupiter

Question: {question}
Response: {response}
Final answer:"""


def choices_of(item: Item) -> list[str]:
    raw = item.extra.get("choices", "")
    if not is_missing(raw):
        try:
            val = ast.literal_eval(raw.strip())
            if isinstance(val, (list, tuple)):
                return [str(v) for v in val]
        except (ValueError, SyntaxError):
            pass
    return list(item.options.values())


def precision_of(item: Item) -> int:
    p = item.extra.get("precision", "")
    if not is_missing(p):
        try:
            return int(float(p))
        except ValueError:
            pass
    m = re.search(r"\.(\d+)$", item.answer.strip())
    return len(m.group(1)) if m else 0


def _same_number(value: float, answer: float, answer_type: str, precision: int) -> bool:
    if answer_type == "integer":
        return abs(value - round(value)) < 1e-9 and int(round(value)) == int(round(answer))
    return round(value, precision) == round(answer, precision)


def compare(extracted: object, item: Item) -> bool:
    atype = (item.extra.get("answer_type") or "text").strip().lower()
    if extracted is None:
        return False
    if atype in ("integer", "float"):
        target = to_number(item.answer)
        return target is not None and isinstance(extracted, float) and _same_number(extracted, target, atype, precision_of(item))
    if atype == "list":
        target = numbers_in(item.answer)
        if not isinstance(extracted, list) or len(extracted) != len(target):
            return False
        kind = "integer" if all(abs(t - round(t)) < 1e-9 for t in target) else "float"
        return all(_same_number(a, b, kind, precision_of(item) or 2) for a, b in zip(extracted, target))
    return normalise(str(extracted)) == normalise(item.answer)


def _typed_by_rules(text: str, atype: str) -> Extracted:
    if atype in ("integer", "float"):
        return number_by_rules(text)
    if atype == "list":
        return list_by_rules(text)
    t = text.strip().rstrip(".").strip()
    return Extracted(t, "text") if t and len(t.split()) <= 6 else Extracted(None, "long_text")


@register
class MathVistaMini(Benchmark):
    name = "MathVista_MINI"
    description = "answer extraction (rules, then LLM), typed comparison; accuracy"

    def prompt(self, item: Item) -> str:
        q = item.question
        choices = choices_of(item) if self._is_mc(item) else []
        if choices and "choices" not in q.lower():
            q += "\nChoices:\n" + "\n".join(f"({chr(65 + i)}) {c}" for i, c in enumerate(choices))
        return q

    @staticmethod
    def _is_mc(item: Item) -> bool:
        return (item.extra.get("question_type") or "").strip() == "multi_choice"

    def score(self, items, predictions, ask=None, scope="conclusion"):
        records = []
        for it in items:
            atype = (it.extra.get("answer_type") or "text").strip().lower()
            rec = {"index": it.index, "answer": it.answer, "answer_type": atype,
                   "question_type": (it.extra.get("question_type") or "").strip(), "task": it.extra.get("task", ""),
                   "skills": it.extra.get("skills", "")}
            pred = predictions.get(it.index)
            if pred is None:
                records.append({**rec, "extracted": None, "correct": 0, "how": "missing"})
                continue
            text = scored_text(pred, scope)
            one_ask = ask.for_item(it.index) if ask is not None else None
            if self._is_mc(it):
                choices = choices_of(it)
                options = {chr(65 + i): c for i, c in enumerate(choices)}
                got = extract_option(text, options, it.question, one_ask)
                letter = got.value
                answer_letter = (it.extra.get("answer_option") or "").strip().upper()
                ok = letter is not None and (normalise(options[letter]) == normalise(it.answer) or letter == answer_letter)
                records.append({**rec, "extracted": letter, "correct": int(ok), "how": got.how})
                continue
            got = _typed_by_rules(text, atype) if text else Extracted(None, "empty")
            # the LLM when the rules found nothing; for a text answer also when the short text the
            # rules took is not the answer as it stands ("It is Jupiter." for "Jupiter")
            undecided = got.value is None or (atype == "text" and not compare(got.value, it))
            if undecided and text and one_ask is not None:
                reply = one_ask("mathvista_extract", EXTRACT_PROMPT.format(question=it.question.strip(), response=text))
                if reply is not None and reply.strip().upper() != "NONE":
                    r = _typed_by_rules(reply, atype)
                    if r.value is not None:
                        got = Extracted(r.value, "llm")
                    elif got.value is None:
                        got = Extracted(None, "llm_none")
            records.append({**rec, "extracted": got.value, "correct": int(compare(got.value, it)), "how": got.how})
        breakdown = {"Overall": mean(r["correct"] for r in records)}
        breakdown.update({f"task:{k}": v for k, v in accuracy_by(records, "task").items()})
        skills: dict[str, list[int]] = {}
        for r in records:
            for s in _skills(r["skills"]):
                skills.setdefault(s, []).append(r["correct"])
        breakdown.update({f"skill:{k}": mean(v) for k, v in sorted(skills.items())})
        breakdown.update({f"question_type:{k}": v for k, v in accuracy_by(records, "question_type").items()})
        breakdown.update({f"answer_type:{k}": v for k, v in accuracy_by(records, "answer_type").items()})
        return finish(self.name, items, records, [r["correct"] for r in records], ask, breakdown)


def _skills(raw: str) -> list[str]:
    if is_missing(raw):
        return []
    try:
        val = ast.literal_eval(raw.strip())
        if isinstance(val, (list, tuple)):
            return [str(v) for v in val]
    except (ValueError, SyntaxError):
        pass
    return [raw.strip()]
