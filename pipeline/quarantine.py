"""Quarantine: why a row was kept aside. Reasons are machine-readable codes, documented here.

A quarantined entry usually stands for one native record. A whole file that cannot be read, or
whose top level has the wrong shape, is one entry too, but it stands for every record it held:
`rows` says how many where that is knowable (None when it is not, e.g. a file cut short), and the
quarantine-rate check weighs each entry by it, so a lost file can never pass as "0 of 0".
"""
from __future__ import annotations

import json
from dataclasses import dataclass

REASONS = {
    "malformed_record": "the record lacks a required field or a field has the wrong type",
    "empty_question": "the question text is empty",
    "empty_answer": "the standard answer is empty",
    "no_image": "the record references no image (text-only rows are out of scope)",
    "missing_image": "the referenced image file does not exist",
    "unreadable_image": "the image file exists but cannot be fully decoded (truncated, corrupt, too large)",
    "duplicate_id": "another row of this source already has this id",
    "bad_option_index": "the answer index points outside the options",
    "unsafe_file": "the file asks to load code or objects the reader refuses (e.g. a pickle naming os.system); "
    "nothing in it was executed",
    "unreadable_file": "a whole annotation file cannot be read or parsed (rows: the records it held, when known)",
    "wrong_shape": "a whole annotation file parses but its top level is not the documented shape "
    "(rows: the records it held)",
}

MAX_RECORD_CHARS = 2000
MAX_RECORD_DEPTH = 12  # deeper parts of a kept record are elided: a bad record may nest 100k levels


@dataclass(slots=True)
class Reject:
    """A row kept aside. `record` is whatever the reader saw, serialised and truncated; `rows` is
    the number of native records the entry stands for (None: unknown, counted as at least one)."""

    source: str
    native_id: str | None
    reason: str
    detail: str
    location: str
    record: object = None
    rows: int | None = 1

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown quarantine reason {self.reason!r}; known: {sorted(REASONS)}")

    @property
    def weight(self) -> int:
        """How many records this entry counts for in the quarantine rate (unknown: one)."""
        return 1 if self.rows is None else max(self.rows, 0)

    def to_row(self) -> dict:
        return {
            "source": self.source,
            "native_id": None if self.native_id is None else str(self.native_id),
            "reason": self.reason,
            "detail": self.detail[:MAX_RECORD_CHARS],
            "location": self.location,
            "record": record_text(self.record),
            "rows": self.rows,
        }


def record_text(record) -> str:
    """The record as JSON text for people to read, bounded in depth and length whatever it is."""
    try:
        text = json.dumps(_bounded(record, MAX_RECORD_DEPTH), ensure_ascii=False, default=repr)
    except (TypeError, ValueError, RecursionError):  # not JSON-able even when bounded: its type
        text = f"<{type(record).__name__}>"
    return text[:MAX_RECORD_CHARS]


def _bounded(value, depth: int):
    """A copy of `value` cut at `depth` levels and at a few hundred items/characters per level
    (iterative limits, so a pathological record costs little)."""
    if isinstance(value, str):
        return value if len(value) <= MAX_RECORD_CHARS else value[:MAX_RECORD_CHARS] + "…"
    if isinstance(value, (bytes, bytearray)):
        return repr(bytes(value[:200]))
    if isinstance(value, dict):
        if depth <= 0:
            return "…"
        out = {}
        for i, (k, v) in enumerate(value.items()):
            if i >= 200:
                out["…"] = f"{len(value) - 200} more keys"
                break
            out[str(k)[:200]] = _bounded(v, depth - 1)
        return out
    if isinstance(value, (list, tuple)):
        if depth <= 0:
            return "…"
        items = [_bounded(v, depth - 1) for v in value[:200]]
        if len(value) > 200:
            items.append(f"… {len(value) - 200} more items")
        return items
    return value
