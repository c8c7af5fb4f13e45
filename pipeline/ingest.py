"""Native source folder -> canonical Parquet (samples + quarantine), streaming.

Reads with the source's registered reader, checks every referenced image once (exists, decodes),
enforces the fields every sample needs, drops duplicate ids into quarantine, and writes both tables
in bounded batches, each file first under a temporary name and then renamed into place.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field

from PIL import Image, UnidentifiedImageError

from pipeline import schema
from pipeline.quarantine import Reject
from pipeline.sources import get_reader
from pipeline.sources.base import Sample
from pipeline.storage import Root
from pipeline.tables import TableSink

INGEST_VERSION = "1"
PREVIEW_ROWS = 5


class ImageChecker:
    """Is an image usable? Each path is checked once (a source references the same image from many
    rows: 500k ShareGPT4V rows point at far fewer files)."""

    def __init__(self, root: Root, decode: bool = True) -> None:
        self.root = root
        self.decode = decode
        self._verdicts: dict[str, tuple[str, str] | None] = {}

    def problem(self, rel: str) -> tuple[str, str] | None:
        if rel in self._verdicts:
            return self._verdicts[rel]
        verdict = self._check(rel)
        self._verdicts[rel] = verdict
        return verdict

    def _check(self, rel: str) -> tuple[str, str] | None:
        if not self.root.has_file(rel):
            return "missing_image", f"image file {rel!r} not found under {self.root.uri}"
        if not self.decode:
            return None
        try:
            with self.root.open(rel, "rb") as f:
                with Image.open(f) as im:
                    im.verify()  # checks structure without decoding every pixel
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            return "unreadable_image", f"image file {rel!r} cannot be decoded: {type(exc).__name__}: {exc}"
        return None


@dataclass
class IngestSummary:
    source: str
    rows: int
    quarantined: dict[str, int]
    splits: dict[str, int]
    skipped_splits: dict[str, str]
    samples_path: str
    quarantine_path: str
    content_hash: str
    preview: list[dict] = field(default_factory=list)
    images_checked: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def sample_row(s: Sample) -> dict:
    return {
        "id": s.id,
        "source": s.source,
        "split": s.split,
        "image_path": s.image_path,
        "question": s.question,
        "answer": s.answer,
        "options": s.options,
        "hints": s.hints,
        "conversations": s.conversations,
        "meta": json.dumps(s.meta, ensure_ascii=False, sort_keys=True),
    }


def usable(s: Sample, images: ImageChecker) -> Reject | None:
    """The checks every source shares, after the reader's own: the central quarantine rules."""
    where = f"{s.source}:{s.native_id}"
    if not s.question.strip():
        return Reject(s.source, s.native_id, "empty_question", "the question text is empty", where, sample_row(s))
    if not s.answer.strip():
        return Reject(s.source, s.native_id, "empty_answer", "the standard answer is empty", where, sample_row(s))
    if not s.image_path:
        return Reject(s.source, s.native_id, "no_image", "the record references no image", where, sample_row(s))
    problem = images.problem(s.image_path)
    if problem:
        return Reject(s.source, s.native_id, problem[0], problem[1], where, sample_row(s))
    return None


def ingest_source(source: str, source_root: Root, out: Root, decode_images: bool = True) -> IngestSummary:
    """Read `source` from `source_root`; write `samples.parquet` and `quarantine.parquet` to `out`."""
    reader = get_reader(source)
    reader.check_layout(source_root)
    images = ImageChecker(source_root, decode=decode_images)
    samples = TableSink(out, "samples.parquet", schema.SAMPLE)
    rejects = TableSink(out, "quarantine.parquet", schema.QUARANTINE)
    seen: set[str] = set()
    reasons: Counter[str] = Counter()
    splits: Counter[str] = Counter()
    preview: list[dict] = []
    try:
        for item in reader.read(source_root):
            if isinstance(item, Sample):
                problem = usable(item, images)
                if problem is None and item.id in seen:
                    problem = Reject(
                        source, item.native_id, "duplicate_id", f"id {item.id!r} seen earlier in this source",
                        f"{source}:{item.native_id}", sample_row(item),
                    )
                if problem is None:
                    seen.add(item.id)
                    row = sample_row(item)
                    samples.add(row)
                    splits[item.split] += 1
                    if len(preview) < PREVIEW_ROWS:
                        preview.append(row)
                    continue
                item = problem
            reasons[item.reason] += 1
            rejects.add(item.to_row())
        samples.close()
        rejects.close()
    except BaseException:
        samples.abort()
        rejects.abort()
        raise
    summary = IngestSummary(
        source=source,
        rows=samples.rows,
        quarantined=dict(sorted(reasons.items())),
        splits=dict(sorted(splits.items())),
        skipped_splits=dict(reader.skipped_splits),
        samples_path=out.path("samples.parquet"),
        quarantine_path=out.path("quarantine.parquet"),
        content_hash=hashlib.sha256(
            (samples.hasher.hexdigest() + rejects.hasher.hexdigest()).encode()
        ).hexdigest()[:32],
        preview=preview,
        images_checked=len(images._verdicts),
    )
    with out.open("summary.json", "w") as f:
        f.write(summary.to_json())
    return summary
