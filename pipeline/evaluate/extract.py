"""Reading an answer out of a prediction: the part that is scored, option letters, yes/no, numbers.

Rules decide first; an LLM (through `Ask`, which caches) is asked only when the rules cannot; when
there is no LLM either, the item is wrong. Every extraction says how it decided (`how`), so a
report can show how many answers needed the LLM.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

from pipeline.agreement import is_refusal, normalise
from pipeline.stages import parse

# ask(purpose, prompt) -> the LLM's reply, or None when no LLM is available (see cache.Ask)
AskFn = Callable[[str, str], "str | None"]

_TAG = re.compile(r"</?(?:SUMMARY|CAPTION|REASONING|CONCLUSION)>")
_CONCLUSION = re.compile(r"<CONCLUSION>(.*?)(?:</CONCLUSION>|$)", re.S)


@dataclass(frozen=True)
class Extracted:
    value: object  # a letter, "Yes"/"No", a number, a list, a text; None when nothing was found
    how: str  # which rule decided: "letter", "option_text", "number", "llm", "none", ...


def scored_text(prediction: str | None, scope: str = "conclusion") -> str:
    """The part of a prediction that is scored. `scope="conclusion"` (the default): the text of the
    <CONCLUSION> stage; an unclosed <CONCLUSION> (generation cut short) counts up to the end; a
    text without any stage tag is scored whole; a tagged text that never reached its conclusion
    has no answer (""). `scope="full"`: the whole text."""
    text = prediction or ""
    if scope == "full":
        return text.strip()
    if scope != "conclusion":
        raise ValueError(f"scope must be 'conclusion' or 'full', not {scope!r}")
    parsed = parse(text)
    if "conclusion" in parsed.stages:
        return parsed.stages["conclusion"]
    m = _CONCLUSION.search(text)
    if m:
        return _TAG.sub(" ", m.group(1)).strip()
    if _TAG.search(text):
        return ""
    return text.strip()


# -- option letters -------------------------------------------------------------------------

_DECOR = re.compile(r"[*_`\"']")
_WHOLE = re.compile(r"^(?:option|choice)?\s*[\(\[]?\s*([A-Za-z])\s*[\)\]]?\s*[.:]?$", re.I)
_LEADING = re.compile(r"^[\(\[]?([A-Z])(?:[\)\]]|[.:](?=\s)|\s+-\s)\s*\S")
_PHRASE = re.compile(  # key words in any case; the letter itself a capital
    r"\b(?i:answer|option|choice)\s*(?i:is|would be|should be|:)?\s*(?i:option|choice)?\s*[:\-]?\s*"
    r"[\(\[]?([A-Z])(?![A-Za-z])")
# a stated final answer ("the answer is C", "Answer: (c)", "final answer: C"): the last one decides,
# whatever options were discussed before it. A lower-case letter counts when nothing but
# punctuation or the end follows it ("the answer is c."), not when a word does ("the answer is a dog").
_FINAL_LETTER = re.compile(
    r"(?i:\b(?:final\s+|correct\s+|right\s+|best\s+)?answer\s*(?:is|would be|should be|will be|=|:)|\bi\s+(?:choose|pick|select))"
    r"\s*(?i:option|choice)?\s*[:\-]?\s*[\(\[]?\s*([A-Za-z])(?![A-Za-z])")
# an echoed option line ("A. cat", "(B) dog") at the start of a line: a restated option list, not a choice
_OPTION_LINE = re.compile(r"^\s*[\(\[]?([A-Z])[\)\].:]\s+\S.*$", re.M)
_LONE = re.compile(r"(?<![A-Za-z0-9'])([A-Z])(?![A-Za-z0-9'])")


_NOT_AFTER_ARTICLE = {"because", "since", "as", "which", "and", "or", "is", "was", "for", "so", "since", "seems", "fits"}


def _article(t: str, start: int, end: int) -> bool:
    """Is the capital at t[start:end] the word "A" or "I" of a sentence ("A dog", "I think"),
    not an option? Unbracketed and followed by a lower-case word."""
    if t[start:end] not in ("A", "I") or t[max(0, start - 1):start] in ("(", "["):
        return False
    m = re.match(r"\s+([a-z]+)", t[end:end + 24])
    return m is not None and m.group(1) not in _NOT_AFTER_ARTICLE


def _echoed_options(t: str, allowed: set[str]) -> bool:
    """Does the text restate the option list (two or more lines "A. ...", "B. ...")?"""
    return len({m.group(1) for m in _OPTION_LINE.finditer(t) if m.group(1) in allowed}) >= 2


def letter_by_rules(text: str, letters: list[str]) -> Extracted:
    """An option letter stated in `text`, or `Extracted(None, ...)`:
    1. the whole text is a letter ("B", "(B)", "B.", "**B**", "Option B");
    2. a stated final answer ("the answer is C", "Answer: c", "I choose B"): the last one, so a
       conclusion after a discussion of every option reads as its conclusion;
    3. the text opens with a letter and a separator ("B. dog", "(B) dog", "B: dog"), unless it
       opens by restating the option list;
    4. a phrase names one letter ("option B");
    5. exactly one capital option letter stands alone in the text, outside a restated option
       list ("A" followed by a lower-case word is the article, not an option)."""
    allowed = set(letters)
    t = _DECOR.sub("", text or "").strip()
    if not t:
        return Extracted(None, "empty")
    m = _WHOLE.match(t)
    if m and m.group(1).upper() in allowed:
        return Extracted(m.group(1).upper(), "letter")
    finals = [m.group(1).upper() for m in _FINAL_LETTER.finditer(t)
              if m.group(1).upper() in allowed and not _article(t, m.start(1), m.end(1))
              and not (m.group(1).islower() and re.match(r"\s+[a-z]", t[m.end(1):]))]
    if finals:
        return Extracted(finals[-1], "letter_final")
    echoed = _echoed_options(t, allowed)
    if echoed:
        t = _OPTION_LINE.sub(" ", t).strip()
    m = _LEADING.match(t)
    if m and m.group(1) in allowed:
        return Extracted(m.group(1), "letter")
    named = {m.group(1) for m in _PHRASE.finditer(t) if m.group(1) in allowed and not _article(t, m.start(1), m.end(1))}
    if len(named) == 1:
        return Extracted(named.pop(), "letter_phrase")
    if len(named) > 1:
        return Extracted(None, "ambiguous_letters")
    lone = set()
    for m in _LONE.finditer(t):
        c = m.group(1)
        if c not in allowed:
            continue
        if _article(t, m.start(1), m.end(1)):
            continue
        lone.add(c)
    if len(lone) == 1:
        return Extracted(lone.pop(), "letter_lone")
    return Extracted(None, "ambiguous_letters" if lone else "no_letter")


# words that turn an option's mention into its exclusion ("everything except the dog")
_NEGATED = re.compile(r"(?:\b(?:except|excluding|besides|but not|other than|rather than|instead of|not|no|never|"
                      r"isn t|is not|aren t|are not|without)\s+(?:\w+\s+){0,2})$")


def letter_by_text(text: str, options: dict[str, str]) -> Extracted:
    """The option whose text the answer states, when exactly one does (an option whose text lies
    inside another matched option's text, "red" in "dark red", yields to the longer one). A long
    answer (more than twice the words of all options together, at least 12) is not searched: in a
    paragraph, option texts turn up by accident."""
    said = normalise(text)
    if not said:
        return Extracted(None, "empty")
    norm = {k: normalise(v) for k, v in options.items() if normalise(v)}
    exact = [k for k, v in norm.items() if v == said]
    if len(exact) == 1:
        return Extracted(exact[0], "option_text")
    budget = max(12, 2 * sum(len(v.split()) for v in norm.values()))
    if len(said.split()) > budget:
        return Extracted(None, "too_long_for_text_match")
    hits, negated = [], []
    for k, v in norm.items():
        found = [m.start() for m in re.finditer(rf"(?<![\w.]){re.escape(v)}(?![\w])", said)]
        if not found:
            continue
        # an option named only after "except", "not", "other than"... is excluded, not chosen
        (negated if all(_NEGATED.search(said[:p]) for p in found) else hits).append(k)
    hits = [k for k in hits if not any(k2 != k and norm[k] != norm[k2] and norm[k] in norm[k2] for k2 in hits)]
    if len(hits) == 1:
        return Extracted(hits[0], "option_text")
    if negated and not hits:
        return Extracted(None, "negated_option_text")
    return Extracted(None, "ambiguous_text" if hits or negated else "no_option_text")


def mc_prompt(question: str, options: dict[str, str], answer_text: str) -> str:
    """Our wording of the matching request (the LLM fallback for multiple choice)."""
    opts = "\n".join(f"{k}. {v}" for k, v in options.items())
    return (
        "A model answered a multiple-choice question. Decide which single option its answer picks.\n"
        "Reply with that option's letter and nothing else. Reply Z if the answer picks no option, "
        "picks more than one, or says it cannot tell.\n\n"
        "Example\nQuestion: What is the animal on the sofa?\nOptions:\nA. a dog\nB. a cat\nC. a rabbit\n"
        "Answer: It looks like a small kitten curled up.\nLetter: B\n\n"
        "Example\nQuestion: How many cups are there?\nOptions:\nA. 2\nB. 3\nC. 4\n"
        "Answer: Either two or three, it is hard to say.\nLetter: Z\n\n"
        f"Question: {question}\nOptions:\n{opts}\nAnswer: {answer_text}\nLetter:"
    )


def extract_option(text: str, options: dict[str, str], question: str = "", ask: AskFn | None = None) -> Extracted:
    """The multiple-choice rule shared by every benchmark: a lone option letter, then a unique
    option text, then the LLM (when `ask` is given), else nothing (the item is wrong)."""
    letters = list(options)
    if not (text or "").strip():
        return Extracted(None, "empty")
    # an apology or hedge before a stated answer ("I'm sorry, but it is B") is still an answer:
    # the rules read it first, and a refusal the rules cannot read still goes to the judge
    got = letter_by_rules(text, letters)
    if got.value is not None:
        return got
    by_text = letter_by_text(text, options)
    if by_text.value is not None:
        return by_text
    if ask is None:
        return Extracted(None, "refusal" if is_refusal(text) else "unmatched")
    reply = ask("mc_extract", mc_prompt(question, options, text))
    if reply is None:
        return Extracted(None, "refusal" if is_refusal(text) else "unmatched")
    r = letter_by_rules(reply, letters)
    if r.value is not None:
        return Extracted(r.value, "llm")
    return Extracted(None, "llm_none")


# -- yes / no -------------------------------------------------------------------------------


def yes_no_by_rules(text: str) -> Extracted:
    """"Yes" when the word yes appears and no does not, "No" the other way round (VLMEvalKit's
    rule for yes/no benchmarks), else nothing."""
    words = set(re.sub(r"[^\w\s]", " ", (text or "").lower()).split())
    if "yes" in words and "no" not in words:
        return Extracted("Yes", "yes_no")
    if "no" in words and "yes" not in words:
        return Extracted("No", "yes_no")
    return Extracted(None, "both" if "yes" in words else "neither")


def yes_no_prompt(question: str, answer_text: str) -> str:
    return (
        "A model answered a yes-or-no question. Does its answer amount to yes or to no?\n"
        "Reply with one word: Yes, No, or Unknown (if it says neither, or both).\n\n"
        "Example\nQuestion: Is the light green?\nAnswer: The light shows green, so cars may go.\nReply: Yes\n\n"
        "Example\nQuestion: Are there more than three birds?\nAnswer: I can only see two birds.\nReply: No\n\n"
        f"Question: {question}\nAnswer: {answer_text}\nReply:"
    )


def extract_yes_no(text: str, question: str = "", ask: AskFn | None = None) -> Extracted:
    if not (text or "").strip():
        return Extracted(None, "empty")
    got = yes_no_by_rules(text)
    if got.value is not None or ask is None:
        return got
    reply = ask("yes_no_extract", yes_no_prompt(question, text))
    if reply is None:
        return got
    r = yes_no_by_rules(reply)
    return Extracted(r.value, "llm" if r.value is not None else "llm_none")


# -- numbers --------------------------------------------------------------------------------

_NUM = (r"[-+−]?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?")
_FRAC_TEX = re.compile(r"([-+−]?)\\[dt]?frac\{\s*(" + _NUM + r")\s*\}\{\s*(" + _NUM + r")\s*\}")
_FRACTION = re.compile(r"(?<![\d.,/])(" + _NUM + r")\s*/\s*(" + _NUM + r")(?![\d/])")
_NUMBER = re.compile(r"(?<![\w.])" + _NUM + r"(?![\d])")
_FINAL = re.compile(r"(?:answer\s*(?:is|:)|=|≈|is approximately|equals)\s*[$€£]?\s*"
                    r"(" + _NUM + r"(?:\s*/\s*" + _NUM + r")?)", re.I)


def to_number(token: str) -> float | None:
    """A number from one token: "1,000" -> 1000, "3.50" -> 3.5, "1/2" -> 0.5, "−4" -> -4."""
    s = (token or "").strip().replace("−", "-").replace(" ", "")
    try:
        if "/" in s:
            a, b = s.split("/", 1)
            return float(Fraction(a.replace(",", "")) / Fraction(b.replace(",", "")))
        return float(s.replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


def numbers_in(text: str) -> list[float]:
    """Every number in `text`, in order: LaTeX fractions and a/b fractions as one value each."""
    t = (text or "").replace("−", "-")
    found: list[tuple[int, float]] = []
    taken: list[tuple[int, int]] = []
    for m in _FRAC_TEX.finditer(t):
        v = to_number(f"{m.group(2)}/{m.group(3)}")
        if v is not None:
            found.append((m.start(), -v if m.group(1) in ("-", "−") else v))
            taken.append(m.span())
    for m in _FRACTION.finditer(t):
        if any(a <= m.start() < b for a, b in taken):
            continue
        v = to_number(f"{m.group(1)}/{m.group(2)}")
        if v is not None:
            found.append((m.start(), v))
            taken.append(m.span())
    for m in _NUMBER.finditer(t):
        if any(a <= m.start() < b for a, b in taken):
            continue
        v = to_number(m.group(0))
        if v is not None:
            found.append((m.start(), v))
    return [v for _, v in sorted(found)]


_LONE_NUMBER = re.compile(
    r"^\s*[$€£]?\s*(" + _NUM + r"(?:\s*/\s*" + _NUM + r")?)\s*"
    r"(?:%|[A-Za-z°µ]+(?:\^?[23²³])?(?:\s*/\s*[A-Za-z]+)?(?:\s[A-Za-z]+)?)?\s*\.?\s*$")


def number_by_rules(text: str) -> Extracted:
    """1. the text is a number, perhaps with a currency sign, a unit or a percent sign ("1,000",
    "3.50 cm", "$4", "50%", "1/2"); 2. a final statement ("the answer is 7", "x = 7"), the last
    one; 3. exactly one distinct number in the text."""
    t = (text or "").strip()
    if not t:
        return Extracted(None, "empty")
    tex = _FRAC_TEX.fullmatch(t.strip("$ ."))
    if tex:
        return Extracted(numbers_in(t)[0], "number")
    m = _LONE_NUMBER.match(t)
    if m:
        v = to_number(m.group(1))
        if v is not None:
            return Extracted(v, "number")
    finals = [to_number(m.group(1)) for m in _FINAL.finditer(t)]
    finals = [v for v in finals if v is not None]
    if finals:
        return Extracted(finals[-1], "number_final")
    nums = numbers_in(t)
    if len(set(nums)) == 1:
        return Extracted(nums[0], "number_single")
    return Extracted(None, "several_numbers" if nums else "no_number")


def list_by_rules(text: str) -> Extracted:
    """A list answer: the numbers inside the last [...] of the text, else every number in it."""
    t = text or ""
    brackets = re.findall(r"\[([^\[\]]*)\]", t)
    nums = numbers_in(brackets[-1]) if brackets else numbers_in(t)
    return Extracted(nums, "list") if nums else Extracted(None, "no_number")
