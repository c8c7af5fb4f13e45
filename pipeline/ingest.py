"""Native source folder -> canonical Parquet (samples + quarantine), streaming.

Locates the dataset folder (`pipeline.sources.layout`), reads it with the source's registered
reader, checks every referenced image once with a full, bounded decode (`pipeline.images`, in
parallel and cached), enforces the fields every sample needs, drops duplicate ids into quarantine,
and writes both tables in bounded batches, each file first under a temporary name and then renamed
into place. Items are handled in windows: the images of one window are decoded on worker threads
while the reader produces the next, and samples are assembled into Arrow columns directly.
"""
from __future__ import annotations

import gc
import hashlib
import json
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schema
from pipeline.images import ImageChecker, Verdict
from pipeline.quarantine import Reject
from pipeline.sources import get_reader
from pipeline.sources.base import Sample, SampleBatch, SampleTable, Skip
from pipeline.sources.layout import locate
from pipeline.storage import Root
from pipeline.tables import TableSink

INGEST_VERSION = "2"
PREVIEW_ROWS = 5
WINDOW_SAMPLES = 8_192  # samples handed to the image checker at once (one window decodes while the next is read)
_NO_IMAGE = Verdict()


@dataclass
class IngestSummary:
    source: str
    rows: int
    quarantined: dict[str, int]  # entries by reason
    splits: dict[str, int]
    skipped_splits: dict[str, str]
    samples_path: str
    quarantine_path: str
    content_hash: str
    preview: list[dict] = field(default_factory=list)
    images_checked: int = 0
    images_decoded: int = 0  # of those, decoded this run (the rest came from the cache)
    quarantined_rows: dict[str, int] = field(default_factory=dict)  # native records by reason (files weigh their rows)
    skipped: list[dict] = field(default_factory=list)  # files passed over on purpose, with the reason
    dataset_folder: str = ""  # the folder the reader found (may differ from the folder given)

    @property
    def rows_read(self) -> int:
        """Native records seen: usable rows plus every quarantined record."""
        return self.rows + sum(self.quarantined_rows.values())

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "rows_read": self.rows_read}, indent=2, sort_keys=True)


_META_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def meta_json(meta: dict) -> str:
    """A sample's meta as JSON text (sorted keys, UTF-8 as is). orjson, with the standard library
    for what orjson refuses (integers beyond 64 bits)."""
    try:
        return orjson.dumps(meta, option=_META_OPTIONS).decode()
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(meta, ensure_ascii=False, sort_keys=True, default=repr)


def sample_row(s: Sample, image: Verdict = _NO_IMAGE) -> dict:
    """A sample as a row of `schema.SAMPLE` (as Python values)."""
    return {
        "id": s.id, "source": s.source, "split": s.split, "image_path": s.image_path, "question": s.question,
        "answer": s.answer, "options": s.options, "hints": s.hints, "conversations": s.conversations,
        "meta": meta_json(s.meta), "image_width": image.width, "image_height": image.height,
        "image_sha256": image.sha256,
    }


def _sample_of(row: dict, source: str) -> Sample:
    """A canonical row back as a Sample (to quarantine it with the same record as any other)."""
    native = row["id"][len(source) + 1:]
    return Sample(source, native, row["split"], row["image_path"], row["question"], row["answer"],
                  row["conversations"], row["options"], row["hints"], json.loads(row["meta"]))


def text_problem(question: str, answer: str, image_path: str | None) -> tuple[str, str] | None:
    """The central rules on a sample's text and image reference (before its image is checked)."""
    if not question.strip():
        return "empty_question", "the question text is empty"
    if not answer.strip():
        return "empty_answer", "the standard answer is empty"
    if not image_path:
        return "no_image", "the record references no image"
    return None


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


class SampleColumns:
    """Accepted samples as Arrow-ready columns; list columns kept flat with offsets, so a batch
    becomes Arrow arrays without converting one Python dict per turn."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.ids: list[str] = []
        self.sources: list[str] = []
        self.splits: list[str] = []
        self.paths: list[str | None] = []
        self.questions: list[str] = []
        self.answers: list[str] = []
        self.opt_off, self.opt_val = [0], []
        self.hint_off, self.hint_val = [0], []
        self.turn_off, self.turn_from, self.turn_value = [0], [], []
        self.meta: list[str] = []
        self.width: list[int | None] = []
        self.height: list[int | None] = []
        self.sha: list[str | None] = []

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, s: Sample, v: Verdict) -> None:
        self.ids.append(s.id)
        self.sources.append(s.source)
        self.splits.append(s.split)
        self.paths.append(s.image_path)
        self.questions.append(s.question)
        self.answers.append(s.answer)
        self.opt_val += s.options
        self.opt_off.append(len(self.opt_val))
        self.hint_val += s.hints
        self.hint_off.append(len(self.hint_val))
        for t in s.conversations:
            self.turn_from.append(t["from"])
            self.turn_value.append(t["value"])
        self.turn_off.append(len(self.turn_from))
        self.meta.append(meta_json(s.meta))
        self.width.append(v.width)
        self.height.append(v.height)
        self.sha.append(v.sha256)

    def add_batch(self, b: SampleBatch, keep: list[int] | None, verdicts: list[Verdict]) -> None:
        """Rows of a column batch (all of them when `keep` is None, else those indices)."""
        if keep is None:
            n = len(b)
            prefix = b.source + "/"
            self.ids += [prefix + x for x in b.native_ids]
            self.sources += [b.source] * n
            self.splits += [b.split] * n
            self.paths += b.image_paths
            self.questions += b.questions
            self.answers += b.answers
            self.opt_off += [len(self.opt_val)] * n
            self.hint_off += [len(self.hint_val)] * n
            base = len(self.turn_from)
            self.turn_off += [base + o for o in b.turn_offsets[1:]]
            self.turn_from += b.turn_from
            self.turn_value += b.turn_value
            self.meta += b.meta
            self.width += [v.width for v in verdicts]
            self.height += [v.height for v in verdicts]
            self.sha += [v.sha256 for v in verdicts]
            return
        for i in keep:
            self.add(b.sample(i), verdicts[i])

    def table(self) -> pa.Table:
        turns = pa.StructArray.from_arrays(
            [pa.array(self.turn_from, pa.string()), pa.array(self.turn_value, pa.string())],
            fields=list(schema.TURN),
        )
        columns = [
            pa.array(self.ids, pa.string()), pa.array(self.sources, pa.string()), pa.array(self.splits, pa.string()),
            pa.array(self.paths, pa.string()), pa.array(self.questions, pa.string()),
            pa.array(self.answers, pa.string()),
            pa.ListArray.from_arrays(pa.array(self.opt_off, pa.int32()), pa.array(self.opt_val, pa.string())),
            pa.ListArray.from_arrays(pa.array(self.hint_off, pa.int32()), pa.array(self.hint_val, pa.string())),
            pa.ListArray.from_arrays(pa.array(self.turn_off, pa.int32()), turns),
            pa.array(self.meta, pa.string()), pa.array(self.width, pa.int32()), pa.array(self.height, pa.int32()),
            pa.array(self.sha, pa.string()),
        ]
        return pa.Table.from_arrays(columns, schema=schema.SAMPLE)


class _Ingest:
    """The state of one ingest run: counters, sinks, the image checker and the current windows."""

    def __init__(self, source: str, root: Root, out: Root, images: ImageChecker) -> None:
        self.source, self.root, self.out, self.images = source, root, out, images
        self.samples = TableSink(out, "samples.parquet", schema.SAMPLE)
        self.rejects = TableSink(out, "quarantine.parquet", schema.QUARANTINE)
        self.columns = SampleColumns()
        self.seen: set[str] = set()
        self.reasons: Counter[str] = Counter()
        self.reason_rows: Counter[str] = Counter()
        self.splits: Counter[str] = Counter()
        self.skipped: list[dict] = []
        self.preview: list[dict] = []
        self.window: list = []
        self.window_samples = 0
        self.pending: list = []

    # -- windows ------------------------------------------------------------------------------------

    def add(self, item) -> None:
        self.window.append(item)
        if type(item) is Sample:
            self.window_samples += 1
        elif type(item) in (SampleBatch, SampleTable):
            self.window_samples += len(item)
        if self.window_samples >= WINDOW_SAMPLES:
            self.rotate()

    def rotate(self) -> None:
        """Start the image checks of the current window, then finish the previous one (whose
        checks have been running while this window was read)."""
        window, self.window, self.window_samples = self.window, [], 0
        paths = []
        for item in window:
            if type(item) is Sample:
                if item.image_path:
                    paths.append(item.image_path)
            elif type(item) is SampleBatch:
                paths += [p for p in item.image_paths if p]
            elif type(item) is SampleTable:
                paths += pc.unique(item.table.column("image_path")).drop_null().to_pylist()
        self.images.submit(dict.fromkeys(paths))
        previous, self.pending = self.pending, window
        self.finish(previous)

    def drain(self) -> None:
        self.rotate()
        self.rotate()

    # -- finishing items ----------------------------------------------------------------------------

    def finish(self, window: list) -> None:
        for item in window:
            kind = type(item)
            if kind is Sample:
                self.sample(item)
            elif kind is SampleBatch:
                self.batch(item)
            elif kind is SampleTable:
                self.table(item)
            elif kind is Skip:
                self.skipped.append({"location": item.location, "reason": item.reason, "rows": item.rows})
            else:
                self.reject(item)
        if len(self.columns) >= 20_000:
            self.flush()

    def reject(self, r: Reject) -> None:
        self.reasons[r.reason] += 1
        self.reason_rows[r.reason] += r.weight
        self.rejects.add(r.to_row())

    def problem(self, s: Sample) -> tuple[tuple[str, str] | None, Verdict]:
        bad = text_problem(s.question, s.answer, s.image_path)
        if bad:
            return bad, _NO_IMAGE
        v = self.images.verdict(s.image_path)
        if not v.ok:
            return (v.reason, v.detail), v
        if s.id in self.seen:
            return ("duplicate_id", f"id {s.id!r} seen earlier in this source"), v
        return None, v

    def sample(self, s: Sample) -> None:
        bad, v = self.problem(s)
        if bad:
            self.reject(Reject(s.source, s.native_id, bad[0], bad[1], f"{s.source}:{s.native_id}", sample_row(s, v)))
            return
        self.seen.add(s.id)
        self.splits[s.split] += 1
        self.columns.add(s, v)
        if len(self.preview) < PREVIEW_ROWS:
            self.preview.append(sample_row(s, v))

    def batch(self, b: SampleBatch) -> None:
        verdict = self.images.verdict
        verdicts = [verdict(p) if p else _NO_IMAGE for p in b.image_paths]
        prefix = b.source + "/"
        seen = self.seen
        keep: list[int] | None = None
        for i, (nid, q, a, p, v) in enumerate(zip(b.native_ids, b.questions, b.answers, b.image_paths, verdicts)):
            sid = prefix + nid
            if p and v.reason is None and sid not in seen and q.strip() and a.strip():
                seen.add(sid)
                if keep is not None:
                    keep.append(i)
                continue
            if keep is None:
                keep = list(range(i))
            self.sample_rejected(b.sample(i), v)
        kept = len(b) if keep is None else len(keep)
        self.splits[b.split] += kept
        self.columns.add_batch(b, keep, verdicts)
        for i in (range(len(b)) if keep is None else keep):
            if len(self.preview) >= PREVIEW_ROWS:
                break
            self.preview.append(sample_row(b.sample(i), verdicts[i]))

    def table(self, item: SampleTable) -> None:
        """A batch already in Arrow columns: the same checks as `sample`, as kernels where they can be."""
        t = item.table
        paths = t.column("image_path").combine_chunks()
        uniq = pc.unique(paths).drop_null()
        verdicts = [self.images.verdict(p) for p in uniq.to_pylist()]
        at = pc.index_in(paths, value_set=uniq)
        image_ok = pc.fill_null(pc.take(pa.array([v.ok for v in verdicts], pa.bool_()), at), False)
        # the reader's columns are already stripped (the SampleTable contract): empty is length 0
        text_ok = pc.and_(*(pc.greater(pc.utf8_length(t.column(c)), 0) for c in ("question", "answer")))
        ok = pc.and_(image_ok, text_ok).to_pylist()
        seen, keep = self.seen, []
        for i, (sid, good) in enumerate(zip(t.column("id").to_pylist(), ok)):
            if good and sid not in seen:
                seen.add(sid)
                keep.append(True)
                continue
            keep.append(False)
            row = t.slice(i, 1).to_pylist()[0]
            v = verdicts[at[i].as_py()] if at[i].is_valid else _NO_IMAGE
            self.sample_rejected(_sample_of(row, item.source), v)
        mask = pa.array(keep, pa.bool_())
        kept = t.filter(mask)
        if not kept.num_rows:
            return
        where = pc.filter(at, mask)
        columns = [pc.take(pa.array(values, typ), where) for values, typ in (
            ([v.width for v in verdicts], pa.int32()), ([v.height for v in verdicts], pa.int32()),
            ([v.sha256 for v in verdicts], pa.string()))]
        out = pa.Table.from_arrays(kept.columns + columns, schema=schema.SAMPLE)
        self.flush()  # rows gathered one by one before this batch go first
        self.samples.add_table(out)
        for entry in pc.value_counts(out.column("split").combine_chunks()).to_pylist():
            self.splits[entry["values"]] += entry["counts"]
        if len(self.preview) < PREVIEW_ROWS:
            self.preview += out.slice(0, PREVIEW_ROWS - len(self.preview)).to_pylist()

    def sample_rejected(self, s: Sample, v: Verdict) -> None:
        bad = text_problem(s.question, s.answer, s.image_path)
        if bad is None:
            bad = (v.reason, v.detail) if not v.ok else ("duplicate_id", f"id {s.id!r} seen earlier in this source")
        self.reject(Reject(s.source, s.native_id, bad[0], bad[1], f"{s.source}:{s.native_id}", sample_row(s, v)))

    def flush(self) -> None:
        if len(self.columns):
            self.samples.add_table(self.columns.table())
            self.columns.clear()


def ingest_source(source: str, source_root: Root, out: Root, *, cache: Root | None = None,
                  stores: dict[str, Root] | None = None, derived: Root | None = None) -> IngestSummary:
    """Read `source` from `source_root` (the folder a user points at, or a view already located
    by the data store); write `samples.parquet` and `quarantine.parquet` to `out`. `cache` holds
    the image-check cache, `derived` the files the reader derives (default: under `out`)."""
    reader = get_reader(source)
    view = locate(reader, source_root, stores=stores, derived=derived if derived is not None else out.child("_derived"))
    images = ImageChecker(view, cache=cache, missing_hint=reader.image_hint)
    run = _Ingest(source, view, out, images)
    count = 0
    try:
        with gc_paused():
            for item in reader.read(view):
                run.add(item)
                count += 1
                if count >= GC_EVERY:
                    count = 0
                    gc.collect()
            run.drain()
            run.flush()
            run.samples.close()
            run.rejects.close()
    except BaseException:
        run.samples.abort()
        run.rejects.abort()
        raise
    finally:
        images.close()
    images.save_cache()
    summary = IngestSummary(
        source=source,
        rows=run.samples.rows,
        quarantined=dict(sorted(run.reasons.items())),
        splits=dict(sorted(run.splits.items())),
        skipped_splits=dict(reader.skipped_splits),
        samples_path=out.path("samples.parquet"),
        quarantine_path=out.path("quarantine.parquet"),
        content_hash=hashlib.sha256(
            (run.samples.hasher.hexdigest() + run.rejects.hasher.hexdigest()).encode()
        ).hexdigest()[:32],
        preview=run.preview,
        images_checked=len(images.verdicts),
        images_decoded=images.decoded,
        quarantined_rows=dict(sorted(run.reason_rows.items())),
        skipped=run.skipped,
        dataset_folder=view.uri,
    )
    with out.open("summary.json", "w") as f:
        f.write(summary.to_json())
    return summary
