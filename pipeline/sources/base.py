"""What a source reader is: native files in, canonical `Sample`s and `Reject`s out.

A reader is strict about required fields and tolerant of missing optional ones. It never raises for
a bad row: it yields a `Reject` with a reason instead. It raises `SourceLayoutError` only when the
folder as a whole is not the layout it expects, naming what it looked for and where.
Image existence and decodability are checked once, centrally, by `pipeline.ingest`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Iterable, Iterator

import ijson

from pipeline.quarantine import Reject
from pipeline.storage import Root


class SourceLayoutError(Exception):
    """The source folder is missing or is not the layout the reader expects."""


@dataclass(slots=True)
class Sample:
    source: str
    native_id: str
    split: str
    image_path: str | None  # relative to the source root; None = the record has no image
    question: str
    answer: str
    conversations: list[dict]  # LLaVA turns [{"from": "human"|"gpt", "value": str}]
    options: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.source}/{self.native_id}"


Item = Sample | Reject


def single_turn(question: str, answer: str) -> list[dict]:
    """The LLaVA conversation of a one-question source: `<image>` leads the first human turn."""
    return [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]


def letter(index: int) -> str:
    return "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[index]


def multiple_choice_question(question: str, options: list[str]) -> str:
    """Question text with lettered options, as LLaVA-style multiple-choice prompts present them."""
    lines = [question.strip(), "Options:"]
    lines += [f"{letter(i)}. {opt}" for i, opt in enumerate(options)]
    return "\n".join(lines)


class Reader:
    """Base class: subclasses set `name`, `required` and implement `read`."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    # Bump when the reader's output changes for the same input: it feeds the asset code_version.
    version: ClassVar[str] = "1"
    # Paths (relative to the source root, glob patterns allowed) of which at least one must exist
    # per entry: each entry is a tuple of alternatives, so two published layouts can both pass.
    required: ClassVar[tuple[tuple[str, ...], ...]] = ()
    # Splits the reader knows and skips on purpose, with the reason (answers are private, ...).
    skipped_splits: ClassVar[dict[str, str]] = {}
    # A key of `meta` to stratify the subsample by, when one is natural for the source.
    stratify_key: ClassVar[str | None] = None

    def check_layout(self, root: Root) -> None:
        if not root.isdir():
            raise SourceLayoutError(
                f"{self.name}: source folder {root.uri!r} does not exist; expected "
                + "; ".join(" or ".join(alts) for alts in self.required)
            )
        missing = [alts for alts in self.required if not any(root.glob(a) for a in alts)]
        if missing:
            expected = "; ".join(" or ".join(repr(a) for a in alts) for alts in missing)
            raise SourceLayoutError(f"{self.name}: not the expected layout under {root.uri!r}: missing {expected}")

    def read(self, root: Root) -> Iterator[Item]:
        raise NotImplementedError

    def prepare_image(self, data: bytes, meta: dict) -> bytes:
        """The image as the teacher and the model must see it. Most sources show the file as it
        is; a source whose questions refer to marks drawn by its loaders (AI2D's letter boxes)
        draws them here. Called by annotation and by dataset assembly alike."""
        return data

    # helpers shared by readers -------------------------------------------------------------

    def reject(self, native_id, reason: str, detail: str, location: str, record=None) -> Reject:
        return Reject(self.name, None if native_id is None else str(native_id), reason, detail, location, record)


def iter_json_array(root: Root, rel: str, prefix: str = "item") -> Iterator[object]:
    """Stream the elements of a (possibly huge) JSON array without loading the file: memory stays
    at one element. `prefix` is an ijson path, e.g. "item" or "data.item" or "questions.item"."""
    with root.open(rel, "rb") as f:
        yield from ijson.items(f, prefix, use_float=True)


def iter_json_object(root: Root, rel: str, prefix: str = "") -> Iterator[tuple[str, object]]:
    """Stream the (key, value) pairs of a JSON object at `prefix`, one value in memory at a time."""
    with root.open(rel, "rb") as f:
        yield from ijson.kvitems(f, prefix, use_float=True)


def load_json(root: Root, rel: str):
    """For small files (split lists, a single record): parse whole."""
    with root.open(rel, "rb") as f:
        return json.load(f)


def text(value) -> str:
    """A field as stripped text; None and non-strings become '' / their str()."""
    if value is None:
        return ""
    return value.strip() if isinstance(value, str) else str(value).strip()


def guarded(reader_name: str, location: str, parse: Callable[[], Iterable[Item]]) -> Iterator[Item]:
    """Run a per-file parse; a file that is not valid JSON at all becomes one reject, not a crash."""
    try:
        yield from parse()
    except (ijson.JSONError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        yield Reject(reader_name, None, "malformed_record", f"file is not valid JSON: {exc}", location)
