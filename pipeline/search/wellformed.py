"""Is a (partial) answer on its way to a well-formed four-stage text? The strategies prefer
candidates that keep it so (`stages.parse` judges only complete answers)."""
from __future__ import annotations

import re

from ..stages import CLOSE, OPEN, STAGES, parse

_TAG = re.compile(r"</?(SUMMARY|CAPTION|REASONING|CONCLUSION)>")


def valid_prefix(text: str) -> bool:
    """True when `text` can still grow into a well-formed answer: the tags met so far open and close
    the stages in order, with nothing but whitespace outside them; the last stage may be open."""
    expect = 0                        # index into the sequence OPEN s1, CLOSE s1, OPEN s2, ...
    pos = 0
    for m in _TAG.finditer(text or ""):
        stage = STAGES[expect // 2] if expect < 2 * len(STAGES) else None
        want = (OPEN if expect % 2 == 0 else CLOSE).get(stage) if stage else None
        if m.group(0) != want:
            return False
        if expect % 2 == 0 and text[pos:m.start()].strip():      # text outside the tags
            return False
        expect += 1
        pos = m.end()
    if expect % 2 == 0 and expect == 2 * len(STAGES):
        return not text[pos:].strip()
    if expect % 2 == 0 and text[pos:].strip() and not "<".startswith(text[pos:].strip()[:1]):
        return False                  # text after a closed stage that is not the next tag
    return True


def well_formed(kind: str, text: str, context: str = "") -> bool:
    """Does candidate `text` (after `context`) do its step properly? A stage: closes that stage with a
    non-empty body, keeping the answer a valid prefix; a whole answer: parses; a sentence: keeps the
    answer a valid prefix."""
    if kind == "answer":
        return parse(text.strip()).ok
    whole = context + text
    if not valid_prefix(whole):
        return False
    if kind in OPEN:
        body = text.strip()
        return body.startswith(OPEN[kind]) and body.endswith(CLOSE[kind]) and bool(
            body[len(OPEN[kind]):-len(CLOSE[kind])].strip())
    return True


def closes(kind: str, text: str) -> bool:
    """Did the candidate reach the end of its stage (its closing tag)?"""
    return kind in CLOSE and CLOSE[kind] in text


def any_tag(text: str) -> bool:
    return bool(_TAG.search(text or ""))
