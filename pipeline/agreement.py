"""Does a conclusion agree with the standard answer? Rules first; an LLM judge only when they
cannot decide. Shared by the teacher (before paying for a judge call) and by validation.

Each rule returns a `Verdict`: agree, disagree, or undecided, with the reason it decided.

A refusal is the model declining the task: the opening of its answer or its conclusion says so
(`declines`), or its conclusion gives no answer at all (`non_answer`). A hedge inside the
reasoning ("I cannot read the exact value, but ...") is not one: the answer that follows counts.
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass

# Refusal phrasing anywhere in a text (free-text extraction in evaluation uses this broad test).
REFUSAL = re.compile(
    r"\b(i'?m sorry|i am sorry|i apologi[sz]e|i can(?:'|no)?t (?:help|assist|determine|answer|identify|provide)"
    r"|i cannot (?:help|assist|determine|answer|identify|provide)|i'?m (?:unable|not able) to"
    r"|i am (?:unable|not able) to|as an ai\b|unable to (?:determine|answer|assist|identify))",
    re.IGNORECASE,
)

_NOT = r"(?:can(?:no|['\u2019])?t|cannot|(?:won['\u2019]?t|will not)(?:\s+be able to)?|am (?:unable|not able) to|['\u2019]?m (?:unable|not able) to|must decline to)"
# what a model declines to do ("determine", "tell", "see" are left to _NON_ANSWER: they often open
# a hedge that goes on to give the answer)
_TASK = (r"(?:help|assist|comply|fulfil|fulfill|provide|identify|answer|respond|do|process|support|engage|share"
         r"|describe|discuss|analy[sz]e|access|complete|continue|create|write|generate|give|make|offer)")
# The model declining the task, as the first words of a reply or of its conclusion.
_DECLINE = re.compile(
    r"^(?:(?:unfortunately|regrettably|apologies)\W+)?(?:"
    r"(?:i['\u2019]?m|i am|we['\u2019]?re|we are)\s+(?:very\s+|so\s+|really\s+|truly\s+)?sorry"
    r"|sorry(?![-\w])"
    r"|i\s+apologi[sz]e"
    r"|as an ai\b"
    r"|(?:i|we)\s+(?:must|have to|need to)\s+(?:decline|refuse)"
    rf"|(?:i|we)\s*{_NOT}\s+(?:\w+\s+){{0,2}}{_TASK}\b"
    r")",
    re.IGNORECASE,
)
# A conclusion that gives no answer ("It cannot be determined from the image.").
_NON_ANSWER = re.compile(
    r"^(?:(?:the\s+)?(?:answer|value|number)\s+)?(?:"
    rf"(?:i|we)\s*{_NOT}\s+(?:\w+\s+){{0,2}}(?:determine|tell|answer|identify|say|know|read|see|be sure)\b"
    r"|(?:it\s+)?(?:is\s+|['\u2019]s\s+)?(?:not\s+possible|impossible|unclear|unknown|not\s+clear)\b(?:\s+(?:to|from|how|whether|what|which|because))?"
    r"|(?:it|this|that|the\s+\w+)\s+(?:cannot|can['\u2019]?t|could\s+not|couldn['\u2019]?t)\s+be\s+(?:determined|told|answered|identified|known|read|seen)"
    r"|(?:there\s+is\s+)?(?:not\s+enough|insufficient|no)\s+(?:information|data|details|context)\b"
    r"|(?:unable|impossible)\s+to\s+(?:determine|tell|answer|identify|say)\b"
    r"|n/?a\.?$"
    r")",
    re.IGNORECASE,
)
_LEAD = re.compile(r"^[\s\"'\u201c\u2018*_#>`-]+")

_LETTER = re.compile(
    r"^\s*(?:the\s+)?(?:correct\s+)?(?:answer|option|choice)?\s*(?:is|:)?\s*[\(\[]?([A-Z])[\)\]\.:]?(?:\s|$)",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:e[-+]?\d+)?", re.IGNORECASE)
_ARTICLES = {"a", "an", "the"}


@dataclass(frozen=True)
class Verdict:
    decision: str  # "agree" | "disagree" | "undecided"
    rule: str
    detail: str = ""

    @property
    def decided(self) -> bool:
        return self.decision != "undecided"


def is_refusal(text: str) -> bool:
    """Refusal phrasing anywhere in `text` (a broad test for short free-text answers)."""
    return bool(REFUSAL.search(text or ""))


def _opening(text: str) -> str:
    return _LEAD.sub("", (text or "")[:400])


def declines(text: str) -> bool:
    """Whether `text` opens by declining the task ("I'm sorry, but I can't help with that.")."""
    return bool(_DECLINE.match(_opening(text)))


def non_answer(conclusion: str) -> bool:
    """Whether a conclusion says no answer can be given ("It cannot be determined.")."""
    return bool(_NON_ANSWER.match(_opening(conclusion)))


def normalise(text: str) -> str:
    text = (text or "").lower().strip()
    text = text.translate(str.maketrans({c: " " for c in string.punctuation if c not in "%."}))
    text = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", text)  # keep decimal points only
    words = [w for w in text.split() if w not in _ARTICLES]
    return " ".join(words)


def numbers(text: str) -> list[float]:
    out = []
    for m in _NUMBER.finditer(text or ""):
        try:
            out.append(float(m.group(0).replace(",", "")))
        except ValueError:
            continue
    return out


def _as_number(answer: str) -> float | None:
    s = (answer or "").strip().rstrip("%").replace(",", "").lstrip("$").strip()
    try:
        return float(s)
    except ValueError:
        return None


def _list_like(answer: str) -> list[float] | None:
    s = (answer or "").strip()
    if s.startswith("[") and s.endswith("]"):
        nums = numbers(s)
        return nums or None
    return None


def option_letter(conclusion: str, n_options: int) -> str | None:
    m = _LETTER.match(conclusion or "")
    if not m:
        return None
    rest = (conclusion or "")[m.end(1):]
    if m.group(1).islower() and rest[:1].isspace() and rest.strip() and not m.group(0).strip()[:-1].strip():
        return None  # "a picture of ...": the article, not option (a)
    letter = m.group(1).upper()
    return letter if ord(letter) - ord("A") < n_options else None


def close(a: float, b: float, rel_tol: float) -> bool:
    return abs(a - b) <= rel_tol * max(abs(a), abs(b)) or abs(a - b) < 1e-9


def agree(conclusion: str, answer: str, options: list[str] | None = None, rel_tol: float = 0.01) -> Verdict:
    """Rule-based agreement between a conclusion and the standard answer."""
    if not (conclusion or "").strip():
        return Verdict("disagree", "empty", "the conclusion is empty")
    if declines(conclusion):
        return Verdict("disagree", "refusal", "the conclusion declines to answer")
    verdict = _agree_by_rules(conclusion, answer, options or [], rel_tol)
    if verdict.decision == "undecided" and non_answer(conclusion):
        # after the rules: "I cannot read it exactly, but it is 42" still gives an answer, right or wrong
        return Verdict("disagree", "refusal", "the conclusion gives no answer")
    return verdict


def _agree_by_rules(conclusion: str, answer: str, options: list[str], rel_tol: float) -> Verdict:

    if options:
        want = (answer or "").strip().upper().rstrip(".")
        if len(want) == 1 and want.isalpha():
            got = option_letter(conclusion, len(options))
            if got:
                return Verdict("agree" if got == want else "disagree", "option_letter", f"{got} vs {want}")
            norm = normalise(conclusion)
            hits = [i for i, o in enumerate(options) if normalise(o) and normalise(o) == norm]
            if not hits:
                hits = [i for i, o in enumerate(options) if normalise(o) and re.search(rf"\b{re.escape(normalise(o))}\b", norm)]
            if len(hits) == 1:
                got = chr(ord("A") + hits[0])
                return Verdict("agree" if got == want else "disagree", "option_text", f"{got} vs {want}")
            return Verdict("undecided", "option", "no single option letter or option text found")

    listed = _list_like(answer)
    if listed is not None:
        got = numbers(conclusion)
        if len(got) == len(listed):
            same = sorted(got) == sorted(listed) or all(close(a, b, rel_tol) for a, b in zip(sorted(got), sorted(listed)))
            return Verdict("agree" if same else "disagree", "number_list", f"{got} vs {listed}")
        return Verdict("undecided", "number_list", f"{len(got)} numbers for {len(listed)}")

    target = _as_number(answer)
    if target is not None:
        got = numbers(conclusion)
        if any(close(g, target, rel_tol) for g in got):
            return Verdict("agree", "number", f"{target} found")
        if len(got) == 1:
            return Verdict("disagree", "number", f"{got[0]} vs {target}")
        return Verdict("undecided", "number", f"{len(got)} numbers in the conclusion")

    want_n, got_n = normalise(answer), normalise(conclusion)
    if want_n and want_n == got_n:
        return Verdict("agree", "text_exact")
    if want_n in ("yes", "no"):
        first = got_n.split(" ", 1)[0] if got_n else ""
        if first in ("yes", "no"):
            return Verdict("agree" if first == want_n else "disagree", "yes_no", f"{first} vs {want_n}")
    if want_n and len(want_n.split()) <= 3 and re.search(rf"\b{re.escape(want_n)}\b", got_n) and len(got_n.split()) <= 12:
        return Verdict("agree", "text_contains", "the short answer stands in a short conclusion")
    return Verdict("undecided", "text", "needs a judge")
