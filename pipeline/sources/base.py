"""What a source reader is: native files in, canonical `Sample`s and `Reject`s out.

A reader is strict about required fields and tolerant of missing optional ones. It never raises for
a bad row: it yields a `Reject` with a reason instead; a file it cannot read, or whose top level is
not the documented shape, is one `Reject` that names the file and the number of records it held.
A file it passes over on purpose (not this dataset's, a split with private answers) is a `Skip`,
reported, never silent. It raises `SourceLayoutError` only when no folder it tried holds the
layout it expects, naming the folders tried and what lies one level up and down
(`pipeline.sources.layout`). Image existence and decodability are checked once, centrally, by
`pipeline.ingest`.
"""
from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Iterable, Iterator

from pipeline.quarantine import Reject
from pipeline.sources import jsonio
from pipeline.sources.jsonio import BadRecord, FileProblem
from pipeline.storage import ReadOnlyRootError, Root


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


@dataclass(slots=True)
class Skip:
    """A file (or split) passed over on purpose, with the reason: counted in the ingest summary."""

    location: str
    reason: str
    rows: int = 0  # records passed over with it (0: a whole file or split, uncounted)


@dataclass(slots=True)
class SampleBatch:
    """Many samples as columns (the fast path of a large source): every list has one entry per
    sample; `turn_offsets` has one more, delimiting each sample's turns in `turn_from`/`turn_value`.
    `meta` holds each sample's meta already as JSON text."""

    source: str
    native_ids: list[str]
    split: str
    image_paths: list[str | None]
    questions: list[str]
    answers: list[str]
    turn_offsets: list[int]
    turn_from: list[str]
    turn_value: list[str]
    meta: list[str]

    def __len__(self) -> int:
        return len(self.native_ids)

    def sample(self, i: int) -> Sample:
        import json

        a, b = self.turn_offsets[i], self.turn_offsets[i + 1]
        turns = [{"from": f, "value": v} for f, v in zip(self.turn_from[a:b], self.turn_value[a:b])]
        return Sample(self.source, self.native_ids[i], self.split, self.image_paths[i], self.questions[i],
                      self.answers[i], turns, meta=json.loads(self.meta[i]))


@dataclass(slots=True)
class SampleTable:
    """Many samples already as Arrow columns (the fast path of a large source): `table` has the
    first ten columns of `schema.SAMPLE` (everything but the image facts, which ingest adds);
    question and answer already stripped."""

    source: str
    table: object  # pyarrow.Table

    def __len__(self) -> int:
        return self.table.num_rows


Item = Sample | Reject | Skip | SampleBatch | SampleTable

__all__ = ["Item", "Reader", "Reject", "Sample", "SampleBatch", "SampleTable", "Skip", "SourceLayoutError", "guarded",
           "json_records", "letter", "load_json", "multiple_choice_question", "single_turn", "text"]


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
    # Paths (relative to the dataset folder, glob patterns allowed) of which at least one must
    # exist per entry: each entry is a tuple of alternatives, so two published layouts can both
    # pass. The first entry also identifies the dataset folder when it is looked for.
    required: ClassVar[tuple[tuple[str, ...], ...]] = ()
    # Where the dataset folder may sit below the folder a user points at (the archive's extraction
    # root, a repository checkout): relative paths tried in order after the folder itself.
    wrappers: ClassVar[tuple[str, ...]] = ()
    # Names of sub-folders of the dataset folder that a user may point at instead (then its
    # parent is tried), e.g. DocVQA's `spdocvqa_qas`.
    inner_names: ClassVar[tuple[str, ...]] = ()
    # Archives, as downloaded, that hold the dataset folder and are read in place: (zip file name
    # in the folder given, folder inside the zip).
    archives: ClassVar[tuple[tuple[str, str], ...]] = ()
    # What to tell a user whose images are all missing (where the images are expected to be).
    image_hint: ClassVar[str] = ""
    # Splits the reader knows and skips on purpose, with the reason (answers are private, ...).
    skipped_splits: ClassVar[dict[str, str]] = {}
    # A key of `meta` to stratify the subsample by, when one is natural for the source.
    stratify_key: ClassVar[str | None] = None

    def is_dataset_folder(self, root: Root) -> bool:
        """Does `root` hold this dataset's annotation files (the first `required` entry)?"""
        return bool(self.required) and any(root.glob(alt) for alt in self.required[0])

    def stores(self, base: Root) -> dict[str, Root]:
        """Image stores this dataset keeps outside its folder or in archives, found from the
        dataset folder: {path prefix: root}. Mounted under the prefix, so image paths are the
        same whichever way the user laid them out. None by default."""
        return {}

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


def json_records(reader: "Reader", root: Root, rel: str, key: str | None = None,
                 kind: str = "array") -> Iterator[tuple[object, object]]:
    """(index or key, record) of the records of one annotation file (see `jsonio.records`); a
    record that is not valid JSON arrives as a `Reject` in its place."""
    for k, value in jsonio.records(root, rel, key, kind):
        if type(value) is BadRecord:
            where = f"{rel}[{k}]"
            value = reader.reject(None, "malformed_record", f"record is not valid JSON: {value.detail}",
                                  where, value.text)
        yield k, value


def load_json(root: Root, rel: str):
    """A small file (a split list, a single record) parsed whole; FileProblem when it is not JSON."""
    return jsonio.load(root, rel)


def text(value) -> str:
    """A field as stripped text; None and non-strings become '' / their str()."""
    if value is None:
        return ""
    return value.strip() if isinstance(value, str) else str(value).strip()


def guarded(reader_name: str, location: str, parse: Callable[[], Iterable[Item]]) -> Iterator[Item]:
    """Run a per-file parse: a file that cannot be read, or whose top level is the wrong shape,
    becomes one quarantined entry naming the file and how many records it held (when known),
    after whatever records were read before the problem."""
    done = 0
    try:
        for item in parse():
            done += 1
            yield item
    except ReadOnlyRootError:
        raise  # a reader trying to write into raw data is a bug, not bad data
    except FileProblem as exc:
        yield Reject(reader_name, None, exc.reason, f"{location}: {exc.detail}", location, rows=exc.rows)
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        more = f" after its first {done} records" if done else ""
        yield Reject(reader_name, None, "unreadable_file", f"{location}: cannot be read{more}: "
                     f"{type(exc).__name__}: {exc}", location, rows=None)
