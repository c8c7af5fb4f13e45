"""The VLMEvalKit benchmark file: one TSV row per question, images inline as base64.

Columns (the ones this reader knows; any others are kept in `Item.extra`):

    index        the row's id: an integer for most benchmarks, a string for HallusionBench
    image        base64 bytes; or a short value (at most 64 characters) naming the `index` of another
                 row that holds the bytes (VLMEvalKit's way of storing a shared image once);
                 or a Python-style list "['...', '...']" for several images; empty for none
    image_path   instead of `image` in "meta only" files: a path (relative to the TSV's folder)
    question, hint, answer, category, l2-category, split
    A, B, C, ...  the options, in letter order; an empty (or NaN) option is dropped

The file is read as a stream with the `csv` module: one pass keeps every column except the image
payloads, remembering where each row starts in the file; an image is decoded only when asked for,
by seeking to its row and parsing that row alone. A 500 MB MMBench file costs a few megabytes of
memory. Paths may be anything `fsspec` opens (a local path by default).
"""
from __future__ import annotations

import ast
import base64
import csv
import io
import posixpath
import string
import sys
from dataclasses import dataclass, field
from typing import Iterator

import fsspec

# an image field this short names another row (VLMEvalKit: len <= 64); base64 images are longer
REFERENCE_MAX = 64
_MISSING = {"", "nan", "NaN"}  # pandas writes NaN as an empty field; "nan" when a str(NaN) slipped in
_KNOWN = ("index", "image", "image_path", "question", "hint", "answer", "category", "l2-category", "split")

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # base64 images exceed the 128 KiB default


def is_missing(value: str | None) -> bool:
    return value is None or value.strip() in _MISSING


@dataclass
class Item:
    """One question of a benchmark. `prompt` is set by the benchmark (what the model is asked)."""

    benchmark: str
    index: str
    question: str
    answer: str
    hint: str = ""
    options: dict[str, str] = field(default_factory=dict)
    category: str = ""
    l2_category: str = ""
    split: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    prompt: str = ""
    group: str = ""  # MMBench: the circular group (the original question's index)
    _images: "ImageSource | None" = field(default=None, repr=False, compare=False)

    @property
    def has_image(self) -> bool:
        return self._images is not None and self._images.count() > 0

    def image_bytes(self) -> list[bytes]:
        """The raw bytes of every image of this item (decoded from base64 now, not at load)."""
        return self._images.load() if self._images is not None else []

    def images(self):
        from PIL import Image

        out = []
        for data in self.image_bytes():
            im = Image.open(io.BytesIO(data))
            im.load()
            out.append(im)
        return out

    def image(self):
        """The first image as a PIL image, or None."""
        ims = self.images()
        return ims[0] if ims else None

    def with_changes(self, **changes) -> "Item":
        from dataclasses import replace

        return replace(self, **changes)


class ImageSource:
    """Where an item's images live: the file offset of the row that holds the base64 payload
    (after following a reference), or paths for meta-only files. Nothing is read until `load`."""

    def __init__(self, table: "TsvTable", row_offset: int | None = None, ref_index: str | None = None,
                 paths: list[str] | None = None) -> None:
        self.table = table
        self.row_offset = row_offset
        self.ref_index = ref_index  # resolved lazily: the referenced row may come later in the file
        self.paths = paths

    def count(self) -> int:
        return len(self.paths) if self.paths is not None else 1

    def load(self) -> list[bytes]:
        if self.paths is not None:
            return [self.table.read_path(p) for p in self.paths]
        offset = self.row_offset
        if self.ref_index is not None:
            offset = self.table.offset_of_payload(self.ref_index)
        return [base64.b64decode(b) for b in _split_images(self.table.read_image_field(offset))]


def _split_images(value: str) -> list[str]:
    v = value.strip()
    if len(v) > 1 and v[0] == "[" and v[-1] == "]":
        return [str(x) for x in ast.literal_eval(v)]
    return [v]


def _lines(f, start: int, pos_box: list[int]) -> Iterator[str]:
    """Decoded lines of a binary file, keeping `pos_box[0]` at the byte offset of the next line."""
    pos = start
    for raw in f:
        pos += len(raw)
        pos_box[0] = pos  # set before the line is handed over: csv never reads past a record's end
        yield raw.decode("utf-8")


class TsvTable:
    """A VLMEvalKit TSV opened for streaming. `rows()` yields dicts without image payloads;
    `items(benchmark)` builds `Item`s whose images load on demand."""

    def __init__(self, path: str, storage_options: dict | None = None) -> None:
        self.path = str(path)
        self.storage_options = storage_options or {}
        self.header: list[str] = []
        self._col: dict[str, int] = {}  # lower-case name (letters kept as is) -> position
        self._offsets: dict[str, int] = {}  # index -> offset of its row
        self._refs: dict[str, str] = {}  # index -> the index its image field names
        self._scanned = False

    # -- streaming ------------------------------------------------------------------------

    def _open(self):
        return fsspec.open(self.path, "rb", **self.storage_options).open()

    def rows(self) -> Iterator[dict]:
        """Every row as a dict of its columns (names as in the header), with `image` replaced by
        the marker `_image` = ("none" | "payload" | "ref", value) and `_offset` the row's offset."""
        f = self._open()
        try:
            first = f.read(3)
            start = 3 if first == b"\xef\xbb\xbf" else 0  # a UTF-8 byte order mark
            f.seek(start)
            box = [start]
            reader = csv.reader(_lines(f, start, box), delimiter="\t", quotechar='"')
            try:
                self.header = next(reader)
            except StopIteration:
                return
            self._col = {_key(h): i for i, h in enumerate(self.header)}
            if "index" not in self._col:
                raise ValueError(f"{self.path}: no 'index' column (header: {self.header[:12]})")
            image_at = self._col.get("image")
            while True:
                offset = box[0]
                try:
                    rec = next(reader)
                except StopIteration:
                    break
                if not rec or (len(rec) == 1 and not rec[0].strip()):
                    continue
                rec = rec + [""] * (len(self.header) - len(rec))
                row = {h: rec[i] for i, h in enumerate(self.header) if i != image_at}
                index = _norm_index(rec[self._col["index"]])
                self._offsets[index] = offset
                marker = ("none", "")
                if image_at is not None:
                    img = rec[image_at].strip()
                    if is_missing(img):
                        marker = ("none", "")
                    elif len(img) <= REFERENCE_MAX:
                        marker = ("ref", _norm_index(img))
                        self._refs[index] = marker[1]
                    else:
                        marker = ("payload", "")
                row["_image"] = marker
                row["_offset"] = offset
                yield row
            self._scanned = True
        finally:
            f.close()

    def items(self, benchmark: str = "") -> list[Item]:
        return [self._item(benchmark, row) for row in self.rows()]

    def _get(self, row: dict, name: str) -> str:
        i = self._col.get(name)
        return row.get(self.header[i], "") if i is not None else ""

    def _item(self, benchmark: str, row: dict) -> Item:
        letters = [c for c in string.ascii_uppercase if c in self._col]
        options = {}
        for c in letters:
            v = row.get(self.header[self._col[c]], "")
            if not is_missing(v):
                options[c] = v.strip()
        known = set(_KNOWN) | set(letters)
        extra = {h: row[h] for h in self.header if h in row and _key(h) not in known}
        kind, value = row["_image"]
        images = None
        if kind == "payload":
            images = ImageSource(self, row_offset=row["_offset"])
        elif kind == "ref":
            images = ImageSource(self, ref_index=value)
        elif "image_path" in self._col and not is_missing(self._get(row, "image_path")):
            images = ImageSource(self, paths=_split_images(self._get(row, "image_path")))
        hint = self._get(row, "hint")
        return Item(
            benchmark=benchmark,
            index=_norm_index(self._get(row, "index")),
            question=self._get(row, "question"),
            answer=self._get(row, "answer").strip(),
            hint="" if is_missing(hint) else hint.strip(),
            options=options,
            category=self._get(row, "category").strip(),
            l2_category=self._get(row, "l2-category").strip(),
            split=self._get(row, "split").strip(),
            extra=extra,
            _images=images,
        )

    # -- images on demand -------------------------------------------------------------------

    def offset_of_payload(self, index: str) -> int:
        if not self._scanned:
            for _ in self.rows():
                pass
        seen = set()
        while index in self._refs:  # a reference to a reference: follow it (never in a loop)
            if index in seen:
                raise ValueError(f"{self.path}: image references loop at index {index!r}")
            seen.add(index)
            index = self._refs[index]
        if index not in self._offsets:
            raise KeyError(f"{self.path}: an image refers to index {index!r}, which no row has")
        return self._offsets[index]

    def read_image_field(self, offset: int) -> str:
        image_at = self._col["image"]
        with self._open() as f:
            f.seek(offset)
            reader = csv.reader(_lines(f, offset, [offset]), delimiter="\t", quotechar='"')
            rec = next(reader)
        if len(rec) <= image_at or len(rec[image_at].strip()) <= REFERENCE_MAX:
            raise ValueError(f"{self.path}: the row at byte {offset} holds no image payload")
        return rec[image_at].strip()

    def read_path(self, rel: str) -> bytes:
        base = posixpath.dirname(self.path)
        full = rel if rel.startswith("/") or "://" in rel else posixpath.join(base, rel)
        with fsspec.open(full, "rb", **self.storage_options) as f:
            return f.read()


def _key(column: str) -> str:
    """Column names are matched in lower case, except the option letters A, B, ..."""
    return column if len(column) == 1 and column.isupper() else column.strip().lower()


def _norm_index(value: str) -> str:
    """Index values as strings; "12.0" (a float column written by pandas) becomes "12"."""
    v = value.strip()
    if v.endswith(".0") and v[:-2].lstrip("-").isdigit():
        return v[:-2]
    return v


def read_items(path: str, benchmark: str = "", storage_options: dict | None = None) -> list[Item]:
    return TsvTable(path, storage_options).items(benchmark)


def tsv_bytes(header: list[str], rows: list[dict]) -> bytes:
    """Rows in the VLMEvalKit layout: tab-separated, minimal quoting, '\\n' line ends, UTF-8."""
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", quotechar='"', lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow(["" if r.get(h) is None else r.get(h) for h in header])
    return buf.getvalue().encode("utf-8")


def write_tsv(path: str, header: list[str], rows: list[dict], storage_options: dict | None = None) -> None:
    with fsspec.open(path, "wb", **(storage_options or {})) as f:
        f.write(tsv_bytes(header, rows))
