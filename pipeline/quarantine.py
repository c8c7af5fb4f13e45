"""Quarantine: why a row was kept aside. Reasons are machine-readable codes, documented here."""
from __future__ import annotations

import json
from dataclasses import dataclass

REASONS = {
    "malformed_record": "the record lacks a required field or a field has the wrong type",
    "empty_question": "the question text is empty",
    "empty_answer": "the standard answer is empty",
    "no_image": "the record references no image (text-only rows are out of scope)",
    "missing_image": "the referenced image file does not exist",
    "unreadable_image": "the image file exists but cannot be decoded",
    "duplicate_id": "another row of this source already has this id",
    "bad_option_index": "the answer index points outside the options",
    "unsafe_file": "the file asks to load code or objects the reader refuses (e.g. a pickle naming os.system); "
    "nothing in it was executed",
}

MAX_RECORD_CHARS = 2000


@dataclass(slots=True)
class Reject:
    """A row kept aside. `record` is whatever the reader saw, serialised and truncated."""

    source: str
    native_id: str | None
    reason: str
    detail: str
    location: str
    record: object = None

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown quarantine reason {self.reason!r}; known: {sorted(REASONS)}")

    def to_row(self) -> dict:
        try:
            text = json.dumps(self.record, ensure_ascii=False, default=repr)
        except (TypeError, ValueError):  # a record that is not JSON-able is still kept, as repr
            text = repr(self.record)
        return {
            "source": self.source,
            "native_id": None if self.native_id is None else str(self.native_id),
            "reason": self.reason,
            "detail": self.detail,
            "location": self.location,
            "record": text[:MAX_RECORD_CHARS],
        }
