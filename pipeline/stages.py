"""The four-stage answer format: one grammar for the teacher, validation, training and search.

    <SUMMARY>...</SUMMARY> <CAPTION>...</CAPTION> <REASONING>...</REASONING> <CONCLUSION>...</CONCLUSION>

Each tag pair appears exactly once, in this order, with only whitespace between and around them.
`parse` never raises on bad text: it returns the stages it found and a machine-readable problem.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

STAGES = ("summary", "caption", "reasoning", "conclusion")
OPEN = {s: f"<{s.upper()}>" for s in STAGES}
CLOSE = {s: f"</{s.upper()}>" for s in STAGES}
_TAG = re.compile(r"</?(SUMMARY|CAPTION|REASONING|CONCLUSION)>")
# A well-formed answer in one match (the common case, a tenth of the full walk's time); anything
# else takes the walk below, which says what is wrong.
_WELL_FORMED = re.compile(r"\s*" + r"\s*".join(rf"<{s.upper()}>(.*?)</{s.upper()}>" for s in STAGES) + r"\s*", re.S)

# problem codes (machine-readable), with what they mean
PROBLEMS = {
    "no_tags": "no stage tag at all",
    "missing_stage": "a stage's tag pair is absent",
    "repeated_tag": "a tag appears more than once",
    "out_of_order": "stages are not in the order summary, caption, reasoning, conclusion",
    "unbalanced_tag": "an opening tag without its closing tag, or the reverse, or nested tags",
    "text_outside_tags": "text other than whitespace outside the tag pairs",
    "empty_stage": "a stage holds no text",
}


@dataclass
class Parsed:
    stages: dict[str, str] = field(default_factory=dict)
    problem: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.problem is None


def parse(text: str, caption_may_be_empty: bool = False) -> Parsed:
    """Split `text` into its four stages, or say precisely why it is not a four-stage answer."""
    m = _WELL_FORMED.fullmatch(text or "")
    if m is not None and len(_TAG.findall(text)) == 8:  # no tag inside a stage: each exactly once
        stages = dict(zip(STAGES, (g.strip() for g in m.groups())))
        if all(stages[s] or (s == "caption" and caption_may_be_empty) for s in STAGES):
            return Parsed(stages)
    tokens = list(_TAG.finditer(text or ""))
    if not tokens:
        return Parsed({}, "no_tags", "no <SUMMARY>/<CAPTION>/<REASONING>/<CONCLUSION> tag found")
    seen: dict[str, int] = {}
    for m in tokens:
        seen[m.group(0)] = seen.get(m.group(0), 0) + 1
    repeated = sorted(t for t, n in seen.items() if n > 1)
    stages: dict[str, str] = {}
    order: list[str] = []
    outside: list[str] = []
    pos = 0
    i = 0
    while i < len(tokens):
        m = tokens[i]
        outside.append(text[pos : m.start()])
        name = m.group(1).lower()
        if m.group(0).startswith("</"):
            return Parsed(stages, "unbalanced_tag", f"{m.group(0)} closes a stage that is not open")
        if i + 1 >= len(tokens) or tokens[i + 1].group(0) != CLOSE[name]:
            nxt = tokens[i + 1].group(0) if i + 1 < len(tokens) else "end of text"
            return Parsed(stages, "unbalanced_tag", f"{OPEN[name]} is followed by {nxt}, not {CLOSE[name]}")
        if name in stages:
            return Parsed(stages, "repeated_tag", f"{OPEN[name]} appears more than once")
        stages[name] = text[m.end() : tokens[i + 1].start()].strip()
        order.append(name)
        pos = tokens[i + 1].end()
        i += 2
    outside.append(text[pos:])
    if repeated:
        return Parsed(stages, "repeated_tag", f"{', '.join(repeated)} appear more than once")
    missing = [s for s in STAGES if s not in stages]
    if missing:
        return Parsed(stages, "missing_stage", "missing " + ", ".join(OPEN[s] for s in missing))
    if order != list(STAGES):
        return Parsed(stages, "out_of_order", "order found: " + " ".join(OPEN[s] for s in order))
    stray = " ".join(t.strip() for t in outside if t.strip())
    if stray:
        return Parsed(stages, "text_outside_tags", f"text outside the tags: {stray[:80]!r}")
    empty = [s for s in STAGES if not stages[s] and not (s == "caption" and caption_may_be_empty)]
    if empty:
        return Parsed(stages, "empty_stage", "empty " + ", ".join(OPEN[s] for s in empty))
    return Parsed(stages)


def render(stages: dict[str, str]) -> str:
    """The canonical text of a four-stage answer (what training targets and the teacher's
    accepted answers look like)."""
    missing = [s for s in STAGES if s not in stages]
    if missing:
        raise ValueError(f"render needs all four stages; missing {missing}")
    return "\n\n".join(f"{OPEN[s]}\n{stages[s].strip()}\n{CLOSE[s]}" for s in STAGES)


def render_stage(stage: str, body: str) -> str:
    return f"{OPEN[stage]}\n{body.strip()}\n{CLOSE[stage]}"


def next_stage(prefix: str) -> str | None:
    """During generation: which stage comes next after `prefix` (the stages closed so far)?"""
    done = [s for s in STAGES if CLOSE[s] in prefix]
    return STAGES[len(done)] if len(done) < len(STAGES) else None
