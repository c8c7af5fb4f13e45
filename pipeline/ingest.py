"""Native source folder -> canonical Parquet (samples + quarantine), streaming.

Reads with the source's registered reader, checks every referenced image once (exists, decodes),
enforces the fields every sample needs, drops duplicate ids into quarantine, and writes both tables
in bounded batches, each file first under a temporary name and then renamed into place.
"""
from __future__ import annotations

import gc
import hashlib
import json
from collections import Counter
from contextlib import contextmanager
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
        except UnidentifiedImageError:
            # (PIL's own message names a file object's memory address: not stable across runs)
            return "unreadable_image", f"image file {rel!r} is not in a recognised image format"
        except (OSError, SyntaxError, ValueError) as exc:
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


def _meta_encoder():
    """`json.dumps(meta, ensure_ascii=False, sort_keys=True)`, without building an encoder per call
    (that costs more than the encoding of a small dict). Checked against json.dumps at import."""
    slow = json.JSONEncoder(ensure_ascii=False, sort_keys=True)
    try:
        from json.encoder import c_make_encoder, encode_basestring

        if c_make_encoder is None:
            return slow.encode
        make = c_make_encoder(None, slow.default, encode_basestring, None, ": ", ", ", True, False, True)
        fast = lambda obj: "".join(make(obj, 0))  # noqa: E731
        probe = {"b": [1, 2.5, None, True], "a": "caf\u00e9 \"q\"\n", "c": {"z": 1e400, "y": -0.0}}
        if fast(probe) != json.dumps(probe, ensure_ascii=False, sort_keys=True):
            return slow.encode
        return fast
    except Exception:  # noqa: BLE001 - any surprise in the private API: the public one
        return slow.encode


meta_json = _meta_encoder()


def sample_values(s: Sample) -> tuple:
    """A sample as a tuple in `schema.SAMPLE` column order."""
    return (
        s.id, s.source, s.split, s.image_path, s.question, s.answer, s.options, s.hints, s.conversations,
        meta_json(s.meta),
    )


def sample_row(s: Sample) -> dict:
    return dict(zip(schema.SAMPLE.names, sample_values(s)))


def usable(s: Sample, images: ImageChecker) -> Reject | None:
    """The checks every source shares, after the reader's own: the central quarantine rules."""
    if not s.question.strip():
        reason, detail = "empty_question", "the question text is empty"
    elif not s.answer.strip():
        reason, detail = "empty_answer", "the standard answer is empty"
    elif not s.image_path:
        reason, detail = "no_image", "the record references no image"
    else:
        problem = images.problem(s.image_path)
        if not problem:
            return None
        reason, detail = problem
    return Reject(s.source, s.native_id, reason, detail, f"{s.source}:{s.native_id}", sample_row(s))


GC_EVERY = 200_000


@contextmanager
def gc_paused():
    """Pause the cyclic garbage collector while streaming. The rows buffered for a batch are many
    small containers that outlive the young collections, so automatic collections keep walking them
    (a third of the ingest time on a large source). Nothing on this path builds reference cycles
    (reference counting frees every row); the ingest loop still calls `gc.collect()` every
    `GC_EVERY` items, which bounds what a reader that did make cycles could hold."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_UNCHECKED = ("", "")


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
    add_sample, add_reject = samples.add_values, rejects.add
    verdict = images._verdicts.get
    names = schema.SAMPLE.names
    count = 0
    try:
        with gc_paused():
            for item in reader.read(source_root):
                count += 1
                if count >= GC_EVERY:
                    count = 0
                    gc.collect()
                if isinstance(item, Sample):
                    path = item.image_path
                    # fast path: text present and the image already known good; else the full checks
                    if path and item.question.strip() and item.answer.strip() and verdict(path, _UNCHECKED) is None:
                        problem = None
                    else:
                        problem = usable(item, images)
                    if problem is None:
                        sid = item.id
                        if sid in seen:
                            problem = Reject(
                                source, item.native_id, "duplicate_id", f"id {sid!r} seen earlier in this source",
                                f"{source}:{item.native_id}", sample_row(item),
                            )
                        else:
                            seen.add(sid)
                            values = (
                                sid, item.source, item.split, path, item.question, item.answer, item.options,
                                item.hints, item.conversations, meta_json(item.meta),
                            )
                            add_sample(values)
                            splits[item.split] += 1
                            if len(preview) < PREVIEW_ROWS:
                                preview.append(dict(zip(names, values)))
                            continue
                    item = problem
                reasons[item.reason] += 1
                add_reject(item.to_row())
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
