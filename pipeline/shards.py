"""The released dataset: Parquet shards with image bytes, a manifest, and the LLaVA JSONL export.

Shards (`schema.SHARD` rows) are what training and the Hugging Face Hub read:
`datasets.load_dataset("parquet", data_files=...)` decodes the `image` column to PIL images because
the file carries the Hugging Face features in its schema metadata, exactly as `datasets` writes them.

Writing streams: `ShardWriter.add(row)` collects one row group, a `pyarrow.parquet.ParquetWriter` on
a background thread writes it into a hidden temporary file (`.tmp-train-00000.parquet`) while the
next is collected, the bytes are hashed as they go out, and the finished file moves into place
(`Root.replace`, after an fsync on local disks) when it reaches the target size or at `close()`. A reader therefore never sees a partial shard: only whole files under
their final names, and hidden temporary names that every glob (and `datasets`) ignores.

File names are `{prefix}-{index:05d}.parquet` (`train-00000.parquet`, ...). Hugging Face's own
`-00000-of-00003` form needs the total, which a stream does not know until its end; renaming every
shard at the end is neither atomic as a set nor cheap on object stores (a copy per shard), and
`train-00000.parquet` is matched by the Hub's split patterns all the same. The manifest is the
authoritative list of files, rows, sizes and checksums.

Output is byte-deterministic: the same rows in the same order give identical files (row groups and
shard boundaries depend only on the data; the footer holds no time). A shard whose bytes equal the
file already in place is not moved over it (`replace_if_changed`), so re-running an unchanged
dataset rewrites nothing and keeps every mtime.
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import posixpath
import queue
import re
import struct
import threading
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import schema
from pipeline.storage import Root

MiB = 1 << 20
TARGET_BYTES = 256 * MiB
INFLIGHT = 2  # row groups handed to the writer thread and not yet written while the caller goes
# on: with 1, the caller waited for the writer at every row group (variations in either's pace
# were not absorbed); 2 was ~25 % faster for 32 MiB more memory
ROW_GROUP_BYTES = 32 * MiB  # a row group closes at this many buffered bytes (or row_group_rows)
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "llava-cot-shards/1"
TMP_PREFIX = ".tmp-"  # hidden: globs, `datasets` and the Hub skip dot-files

# The Hugging Face features of a shard, as `datasets` (5.x) writes them into the Parquet schema
# metadata (`ArrowWriter`: json.dumps({"info": {"features": features.to_dict()}})). Key order and
# separators are part of the bytes; tests compare against what `datasets` itself writes.
HF_FEATURES = {
    "id": {"dtype": "string", "_type": "Value"},
    "source": {"dtype": "string", "_type": "Value"},
    "split": {"dtype": "string", "_type": "Value"},
    "image": {"_type": "Image"},
    "conversations": {
        "feature": {
            "from": {"dtype": "string", "_type": "Value"},
            "value": {"dtype": "string", "_type": "Value"},
        },
        "_type": "List",
    },
}
SHARD_SCHEMA = schema.SHARD.with_metadata(
    {b"huggingface": json.dumps({"info": {"features": HF_FEATURES}}).encode()}
)
_IMAGE_TYPE = SHARD_SCHEMA.field("image").type
_CONVERSATIONS_TYPE = SHARD_SCHEMA.field("conversations").type

# Per-column choices (Parquet leaf paths). Image bytes are PNG/JPEG, already compressed: zstd would
# burn CPU for ~0 % gain (and slow every reader too), so that column is stored as is, without
# dictionary encoding (values are unique; trying a dictionary on 50 KB values wastes time and
# memory) and without min/max statistics (50 KB min/max values per page and row group would bloat
# the footer and mean nothing). The text columns compress well (conversations are English text
# with repeated tags, ids share prefixes): zstd. `source`, `split` and the turn role repeat a few
# values: dictionary-encoded. Statistics only where a reader may filter: id, source, split.
_TEXT = ("id", "source", "split", "image.path", "conversations.list.element.from",
         "conversations.list.element.value")
COMPRESSION = {**{c: "zstd" for c in _TEXT}, "image.bytes": "none"}
DICTIONARY = ["source", "split", "conversations.list.element.from"]
STATISTICS = ["id", "source", "split"]
ZSTD_LEVEL = 3


def _memory_pool() -> pa.MemoryPool:
    """mimalloc when the build has it (pyarrow's default on Linux wheels, but ARROW_DEFAULT_MEMORY_POOL
    may say otherwise). The jemalloc pool returns freed pages to the OS at once (decay 0), so every
    row group's buffers are faulted in afresh: on this VM that made building and encoding a row
    group 2x slower than with mimalloc's retained pages. Local to the writer: the process-wide
    default pool is left alone."""
    try:
        return pa.mimalloc_memory_pool()
    except (NotImplementedError, AttributeError):
        return pa.default_memory_pool()


POOL = _memory_pool()


def _writer_options() -> dict:
    return dict(
        memory_pool=POOL,
        compression=COMPRESSION,
        compression_level={c: ZSTD_LEVEL for c in _TEXT},
        use_dictionary=DICTIONARY,
        write_statistics=STATISTICS,
        # pages are cut after every write batch: 1024 rows of 50 KB images made 50 MB pages (and
        # as many bytes of encoder buffers); 16 rows keep a page near the 1 MiB default.
        write_batch_size=16,
        store_schema=True,  # keep the Arrow schema (non-null fields) for pyarrow readers
    )


@dataclass
class ShardInfo:
    """One finished shard: what the manifest records about it."""

    name: str  # relative to the output root
    split: str
    rows: int
    bytes: int
    sha256: str
    sources: dict[str, int] = field(default_factory=dict)
    replaced: bool = True  # False when an identical file was already in place (left untouched)


class _ImageColumn:
    """The `image` column of a row group, built without copying the image bytes: each image
    becomes a one-value Arrow array over the caller's bytes object (zero-copy), and the column is a
    chunked array of them. The Parquet encoder then copies each image once, into its page. That is
    the only copy between the caller's bytes and the file: gathering the images into one buffer
    first (`pa.array`, `b"".join`, or a reused buffer) was one more pass over every byte, and on
    this machine memory bandwidth (~2 GB/s for data out of cache) is what each pass costs; a
    chunk costs ~9 us whatever the image's size. The row group keeps references to the bytes
    objects until it is written."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.data: list = []
        self.paths: list = []

    def add(self, data, path) -> int:
        if data is not None and not isinstance(data, bytes):
            data = bytes(data)  # referenced until written: a mutable buffer could change meanwhile
        self.data.append(data)
        self.paths.append(path)
        return len(data) if data is not None else 0

    def take(self) -> pa.ChunkedArray:
        paths = pa.array(self.paths, pa.string(), memory_pool=POOL)
        chunks = []
        for i, data in enumerate(self.data):
            if data is None:
                chunks.append(pa.StructArray.from_arrays(
                    [_EMPTY_BINARY, paths.slice(i, 1)], fields=_IMAGE_FIELDS, mask=_TRUE))
                continue
            n = len(data) if isinstance(data, bytes) else memoryview(data).nbytes
            if n >= 1 << 31:
                raise ValueError(f"an image of {n} bytes does not fit a Parquet binary value")
            value = pa.Array.from_buffers(_BINARY, 1, [None, pa.py_buffer(_OFFSETS.pack(0, n)), pa.py_buffer(data)])
            chunks.append(pa.StructArray.from_arrays([value, paths.slice(i, 1)], fields=_IMAGE_FIELDS))
        self.reset()
        return pa.chunked_array(chunks, _IMAGE_TYPE)


_BINARY = pa.binary()
_IMAGE_FIELDS = list(_IMAGE_TYPE)
_OFFSETS = struct.Struct("<ii")
_EMPTY_BINARY = pa.array([b""], pa.binary())
_TRUE = pa.array([True])


_FLUSH = object()


class _HashingFile:
    """The shard sink for any fsspec filesystem (object stores): a write-only Python file that
    pyarrow writes into; it counts the bytes and hands them to a thread of its own that hashes
    (sha256) and writes them, so hashing overlaps with encoding (hashlib and file writes release
    the GIL). Small writes (page headers) are coalesced; at most `depth` buffers wait."""

    SMALL = 64 * 1024

    def __init__(self, f, depth: int = 8) -> None:
        self.f = f
        self.hasher = hashlib.sha256()
        self.n = 0
        self.closed = False
        self._small = bytearray()
        self._error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._loop, name="ShardWriter:io", daemon=True)
        self._thread.start()

    @property
    def sink(self):
        return self

    def _loop(self) -> None:
        hasher, f = self.hasher, self.f
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is not None:
                    continue
                if item is _FLUSH:
                    f.flush()
                else:
                    hasher.update(item)
                    f.write(item)
            except BaseException as exc:  # noqa: BLE001 - raised in the writing thread
                self._error = exc
            finally:
                item = None
                self._queue.task_done()

    def _put(self, item) -> None:
        _put(self._queue, item, self._thread, lambda: self._error)

    def _send_small(self) -> None:
        if self._small:
            self._put(bytes(self._small))
            self._small.clear()

    def write(self, data) -> int:
        n = len(data) if isinstance(data, bytes) else memoryview(data).nbytes
        if n < self.SMALL:
            self._small += data
            if len(self._small) >= self.SMALL:
                self._send_small()
        else:
            self._send_small()
            self._put(bytes(data) if not isinstance(data, bytes) else data)
        self.n += n
        return n

    def row_group_done(self) -> None:
        pass

    def drain(self) -> None:
        """Wait until everything written so far is in the file (flushed to the OS)."""
        self._send_small()
        self._put(_FLUSH)
        self._queue.join()

    def tell(self) -> int:
        return self.n

    def flush(self) -> None:
        pass  # the data goes out in order; close() waits for all of it

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def close(self) -> None:
        """Wait until every byte is hashed and written, then close; raises the I/O error if any."""
        if self.closed:
            return
        self.closed = True
        try:
            if self._error is None:
                self._send_small()
        finally:
            _stop(self._queue, self._thread)
            self.f.close()
        if self._error is not None:
            raise self._error

    def discard(self) -> None:
        """Stop without caring about the data (abort)."""
        self._error = self._error or _Aborted()
        try:
            self.close()
        except BaseException:  # noqa: BLE001 - the file is being thrown away
            pass


class _LocalHashingFile:
    """The shard sink on a local disk: pyarrow writes straight into the file (a native stream: no
    Python call and no copy per page), and a thread hashes each finished row group by mapping
    that part of the file (mmap: the pages are still in the page cache, nothing is copied) while
    the next row group is encoded. With `writeback`, it then asks the kernel to start writing
    that part to disk (POSIX_FADV_DONTNEED starts asynchronous writeback of dirty pages on Linux),
    so the disk works along the way instead of all at the final fsync, and drops the part before
    (clean by then) from the page cache: streaming 4 GB out, keeping the written pages cached made
    the kernel reclaim memory inside our threads and doubled the system CPU time."""

    def __init__(self, path: str, writeback: bool = True, depth: int = 4) -> None:
        self.path = path
        self.sink = pa.output_stream(path, buffer_size=256 * 1024)
        self.hasher = hashlib.sha256()
        self.closed = False
        self._hashed = 0
        self._dropped = 0
        self._writeback = writeback and hasattr(os, "posix_fadvise")
        self._error: BaseException | None = None
        self._fd = os.open(path, os.O_RDONLY)
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._loop, name="ShardWriter:hash", daemon=True)
        self._thread.start()

    @property
    def n(self) -> int:
        return self._end

    def _loop(self) -> None:
        gran = mmap.ALLOCATIONGRANULARITY
        while True:
            end = self._queue.get()
            try:
                if end is None:
                    return
                if self._error is not None or end <= self._hashed:
                    continue
                start = self._hashed
                base = start - start % gran
                with mmap.mmap(self._fd, end - base, offset=base, access=mmap.ACCESS_READ) as m:
                    with memoryview(m) as view:
                        self.hasher.update(view[start - base:])
                if self._writeback:
                    # starts writeback of this part; the part before, written back by now, is
                    # clean and this drops it from the page cache (see _fsync)
                    os.posix_fadvise(self._fd, start, end - start, os.POSIX_FADV_DONTNEED)
                    if start > self._dropped:  # (a length of 0 would mean "to the end")
                        os.posix_fadvise(self._fd, self._dropped, start - self._dropped, os.POSIX_FADV_DONTNEED)
                        self._dropped = start
                self._hashed = end
            except BaseException as exc:  # noqa: BLE001 - raised in the writing thread
                self._error = exc
            finally:
                self._queue.task_done()

    def row_group_done(self) -> None:
        """Called after each row group: hash (and start writing back) what is in the file."""
        self.sink.flush()
        self._end = self.sink.tell()
        _put(self._queue, self._end, self._thread, lambda: self._error)

    def drain(self) -> None:
        self.row_group_done()
        self._queue.join()

    def close(self) -> None:
        """Close the file (the footer is in), hash the rest; raises the error if any."""
        if self.closed:
            return
        self.closed = True
        try:
            if self._error is None:
                self._end = self.sink.tell()
                self.sink.close()
                _put(self._queue, self._end, self._thread, lambda: self._error)
        finally:
            if not self.sink.closed:
                self.sink.close()
            _stop(self._queue, self._thread)
            os.close(self._fd)
        if self._error is not None:
            raise self._error

    def discard(self) -> None:
        self._error = self._error or _Aborted()
        try:
            self.close()
        except BaseException:  # noqa: BLE001 - the file is being thrown away
            pass

    _end = 0


def _put(q: queue.Queue, item, thread: threading.Thread, error) -> None:
    """Put with a bounded wait that notices a dead or failed consumer instead of hanging."""
    while True:
        if error() is not None:
            raise error()
        try:
            q.put(item, timeout=0.5)
            return
        except queue.Full:
            if not thread.is_alive():
                raise RuntimeError(f"{thread.name} stopped")


def _stop(q: queue.Queue, thread: threading.Thread) -> None:
    while thread.is_alive():
        try:
            q.put(None, timeout=0.5)
            break
        except queue.Full:
            continue
    thread.join()


def sha256_file(root: Root, rel: str, chunk: int = 8 * MiB) -> str:
    h = hashlib.sha256()
    with root.open(rel, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def _fsync(root: Root, rel: str, drop_cache: bool = False) -> None:
    """Flush a local file to disk; with `drop_cache`, then evict its (now clean) pages from the
    page cache: a shard is not read again soon, and the memory it held would otherwise have to be
    reclaimed (on a busy host, by the writing process itself) while the next one is written."""
    if root.is_local:
        fd = os.open(root.path(rel), os.O_RDONLY)
        try:
            os.fsync(fd)
            if drop_cache and hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _remove(root: Root, rel: str) -> None:
    try:
        root.fs.rm(root.path(rel))
    except FileNotFoundError:
        pass


def replace_if_changed(root: Root, tmp_rel: str, final_rel: str, sha256: str, size: int,
                       durable: bool = True, drop_cache: bool = False) -> bool:
    """Move `tmp_rel` onto `final_rel` unless `final_rel` already holds exactly these bytes (same
    size, same sha256): then drop the temporary file and leave the old one (and its mtime) alone.
    Returns True when the file was replaced. `durable` flushes the new file to disk before the
    rename (local disks), so a power cut never leaves a short file under the final name."""
    if root.exists(final_rel):
        try:
            same = root.fs.size(root.path(final_rel)) == size and sha256_file(root, final_rel) == sha256
        except OSError:
            same = False
        if same:
            _remove(root, tmp_rel)
            return False
    if durable:
        _fsync(root, tmp_rel, drop_cache)
    root.replace(tmp_rel, final_rel)
    return True


def _new_columns() -> tuple[list, ...]:
    """ids, sources, splits, turn roles, turn texts, turn end offsets (images: `_ImageColumn`)."""
    return ([], [], [], [], [], [])


class ShardWriter:
    """Streams rows into `{prefix}-00000.parquet`, `{prefix}-00001.parquet`, ... under `out`.

    A row is a dict with `id`, `source`, `split` (optional: defaults to the writer's split),
    `conversations` ([{from, value}]), `image_bytes` (the encoded file, or None) and `image_path`.

    Row groups close at `row_group_rows` rows or `row_group_bytes` of data, shards at
    `target_bytes`; both decisions use the rows' own sizes (image bytes + text), never how far the
    writer has got, so the files are the same on every run (shards come out slightly under the
    target: text compresses).

    Threads (Arrow encoding, hashlib, file I/O and fsync release the GIL, so they overlap): the
    caller's thread collects rows and builds each row group's Arrow table; a writer thread encodes
    it into Parquet; a hash thread hashes what was written (and, on local disks, starts its
    writeback); a third places finished shards (fsync when `durable`, compare, rename) while the
    next shard is written. Memory: the row group being collected plus at most `INFLIGHT` (2)
    handed to the writer, a few pages in flight, and the open shard's footer; never the dataset.
    The row group holds references to the rows' image bytes objects until it is written.

    `close()` finishes the last shard, removes stale shards of this prefix left by an earlier,
    larger run, and returns the `ShardInfo` list; `abort()` (or an exception inside `with`) removes
    the temporary file; shards finished before stay (each is whole and valid). Hidden temporary
    files left by a crashed run are removed when the next writer of the same prefix starts.
    """

    def __init__(self, out: Root, prefix: str, target_bytes: int = TARGET_BYTES,
                 row_group_rows: int | None = None, *, split: str | None = None,
                 row_group_bytes: int = ROW_GROUP_BYTES, durable: bool = True) -> None:
        if target_bytes <= 0 or row_group_bytes <= 0 or (row_group_rows is not None and row_group_rows <= 0):
            raise ValueError("target_bytes, row_group_bytes and row_group_rows must be positive")
        self.out = out
        self.prefix = prefix.strip("/")
        self.dir, self.base = posixpath.split(self.prefix)
        self.split = split if split is not None else self.base
        self.target_bytes = target_bytes
        self.row_group_rows = row_group_rows
        self.row_group_bytes = min(row_group_bytes, target_bytes, 1 << 30)  # int32 offsets
        self.durable = durable
        self.shards: list[ShardInfo] = []
        self.rows = 0
        self._closed = False
        self._name_re = re.compile(re.escape(self.base) + r"-(\d{5,})\.parquet")
        # the open shard, as the producer sees it
        self._index = 0
        self._shard_rows = 0
        self._shard_size = 0  # estimated: sum of the rows' sizes
        self._shard_sources: Counter[str] = Counter()
        # the open row group: column lists and its estimated size
        self._cols = _new_columns()
        self._images = _ImageColumn()
        self._pending = 0
        # the writer thread's state
        self._file: _HashingFile | _LocalHashingFile | None = None
        self._writer: pq.ParquetWriter | None = None
        self._tmp: str | None = None
        self._error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=INFLIGHT)
        self._finisher = ThreadPoolExecutor(1, thread_name_prefix=f"ShardWriter:{self.prefix}:place")
        self._finishing: list[tuple[Future, str, ShardInfo]] = []
        self._clean_temps()
        self._thread = threading.Thread(target=self._write_loop, name=f"ShardWriter:{self.prefix}", daemon=True)
        self._thread.start()

    # names -------------------------------------------------------------------------------------

    def shard_name(self, index: int) -> str:
        return posixpath.join(self.dir, f"{self.base}-{index:05d}.parquet")

    def temp_name(self, index: int) -> str:
        return posixpath.join(self.dir, f"{TMP_PREFIX}{self.base}-{index:05d}.parquet")

    def _existing(self, temps: bool) -> list[str]:
        skip = len(TMP_PREFIX) if temps else 0
        pattern = (TMP_PREFIX if temps else "") + self.base + "-*.parquet"
        hits = self.out.glob(posixpath.join(self.dir, pattern))
        return [h for h in hits if self._name_re.fullmatch(posixpath.basename(h)[skip:])]

    def _clean_temps(self) -> None:
        for rel in self._existing(temps=True):
            _remove(self.out, rel)

    # adding rows (the caller's thread) ---------------------------------------------------------

    def add(self, row: dict) -> None:
        if self._closed:
            raise RuntimeError("add() after close()/abort()")
        split = row.get("split") or self.split
        if split != self.split:
            raise ValueError(f"row {row.get('id')!r} has split {split!r}; this writer writes {self.split!r}")
        data = row.get("image_bytes")
        row_id, source, path = row["id"], row["source"], row.get("image_path")
        ids, sources, splits, roles, texts, ends = self._cols
        ids.append(row_id)
        sources.append(source)
        splits.append(split)
        size = 32 + len(row_id) + len(source) + self._images.add(data, path) + (len(path) if path else 0)
        for t in row["conversations"]:  # flattened here: Arrow builds the list column from offsets
            value = t["value"]
            roles.append(t["from"])
            texts.append(value)
            size += 8 + len(value)
        ends.append(len(texts))
        self._pending += size
        self._shard_size += size
        self._shard_sources[source] += 1
        self._shard_rows += 1
        self.rows += 1
        if self._shard_size >= self.target_bytes:
            self._flush()
            self._end_shard()
        elif self._pending >= self.row_group_bytes or (self.row_group_rows and len(ids) >= self.row_group_rows):
            self._flush()

    def add_many(self, rows: Iterable[dict]) -> None:
        for row in rows:
            self.add(row)

    def _flush(self) -> None:
        ids, sources, splits, roles, texts, ends = self._cols
        if not ids:
            return
        turns = pa.StructArray.from_arrays(
            [pa.array(roles, pa.string(), memory_pool=POOL), pa.array(texts, pa.string(), memory_pool=POOL)],
            fields=list(_CONVERSATIONS_TYPE.value_type))
        ends.insert(0, 0)
        conversations = pa.ListArray.from_arrays(pa.array(ends, pa.int32()), turns, type=_CONVERSATIONS_TYPE,
                                                 pool=POOL)
        table = pa.Table.from_arrays(
            [pa.array(ids, pa.string(), memory_pool=POOL), pa.array(sources, pa.string(), memory_pool=POOL),
             pa.array(splits, pa.string(), memory_pool=POOL), self._images.take(), conversations],
            schema=SHARD_SCHEMA,
        )
        self._cols = _new_columns()
        self._pending = 0
        del ids, sources, splits, roles, texts, ends, turns, conversations
        self._send(("table", self._index, table))

    def _end_shard(self) -> None:
        if self._shard_rows:
            self._send(("end", self._index, self._shard_rows, dict(sorted(self._shard_sources.items()))))
            self._index += 1
        self._shard_rows = self._shard_size = 0
        self._shard_sources = Counter()

    def _send(self, item) -> None:
        """Hand `item` to the writer once it has finished the previous one: at most one row group
        is being written while the next is collected."""
        self._raise_if_failed()
        while True:
            try:
                self._queue.put(item, timeout=0.5)
                break
            except queue.Full:
                self._check_thread()
        while self._queue.unfinished_tasks > INFLIGHT - 1 + (item[0] != "table"):
            with self._queue.all_tasks_done:
                self._queue.all_tasks_done.wait(0.5)
            if self._queue.unfinished_tasks > INFLIGHT - 1:
                self._check_thread()
        self._raise_if_failed()

    def _check_thread(self) -> None:
        if not self._thread.is_alive():
            self._raise_if_failed()
            raise RuntimeError(f"the writer thread of {self.prefix} stopped")

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    # the writer thread -------------------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is None:
                    if item[0] == "table":
                        _, index, table = item
                        if self._writer is None:
                            self._open_shard(index)
                        self._writer.write_table(table, row_group_size=table.num_rows)
                        self._file.row_group_done()
                    elif item[0] == "end":
                        self._finish_shard(*item[1:])
                    elif item[0] == "sync" and self._file is not None:  # tests: all bytes in the file
                        self._file.drain()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                self._error = exc
            finally:
                item = table = None  # noqa: F841 - drop the row group before waiting for the next
                self._queue.task_done()

    def _open_shard(self, index: int) -> None:
        self._tmp = self.temp_name(index)
        if self.out.is_local:
            self.out.makedirs(self.dir)
            self._file = _LocalHashingFile(self.out.path(self._tmp), writeback=self.durable)
        else:
            self._file = _HashingFile(self.out.open(self._tmp, "wb"))
        self._writer = pq.ParquetWriter(self._file.sink, SHARD_SCHEMA, **_writer_options())

    def _finish_shard(self, index: int, rows: int, sources: dict) -> None:
        self._writer.close()
        self._file.close()
        info = ShardInfo(self.shard_name(index), self.split, rows, self._file.n,
                         self._file.hasher.hexdigest(), sources)
        tmp = self._tmp
        self._writer = self._file = self._tmp = None
        # fsync + rename on a third thread: the disk flushes this shard while the next is encoded
        self._finishing.append((self._finisher.submit(self._place, tmp, info), tmp, info))

    def _place(self, tmp: str, info: ShardInfo) -> None:
        info.replaced = replace_if_changed(self.out, tmp, info.name, info.sha256, info.bytes,
                                           durable=self.durable, drop_cache=True)

    def _wait_finishing(self) -> None:
        """Wait for the shards being placed; collect them in order; the first failure raises."""
        error = None
        for future, tmp, info in self._finishing:
            try:
                future.result()
                self.shards.append(info)
            except BaseException as exc:  # noqa: BLE001
                _remove(self.out, tmp)
                error = error or exc
        self._finishing = []
        self._finisher.shutdown()
        if error is not None:
            raise error

    def _stop_thread(self) -> None:
        if self._thread.is_alive():
            while True:
                try:
                    self._queue.put(None, timeout=0.5)
                    break
                except queue.Full:
                    if not self._thread.is_alive():
                        break
            self._thread.join()

    # finishing ---------------------------------------------------------------------------------

    def close(self) -> list[ShardInfo]:
        if self._closed:
            self._raise_if_failed()
            return self.shards
        try:
            self._flush()
            self._end_shard()
            self._stop_thread()
            self._raise_if_failed()
            self._wait_finishing()
        except BaseException:
            self.abort()
            raise
        self._closed = True
        keep = {s.name for s in self.shards}
        for rel in self._existing(temps=False):  # stale shards of an earlier, larger run
            if rel not in keep:
                _remove(self.out, rel)
        return self.shards

    def abort(self) -> None:
        """Drop the shard being written (its temporary file); finished shards stay."""
        self._closed = True
        self._cols = _new_columns()
        self._images.reset()
        try:
            self._error = self._error or _Aborted()  # the thread skips whatever is still queued
            self._stop_thread()
            if self._writer is not None:
                try:
                    self._writer.close()
                except Exception:  # noqa: BLE001 - the file is discarded anyway
                    pass
            if self._file is not None:
                self._file.discard()
        finally:
            if self._tmp is not None:
                _remove(self.out, self._tmp)
            self._writer = self._file = self._tmp = None
            try:
                self._wait_finishing()  # shards already complete are still placed whole
            except BaseException:  # noqa: BLE001 - the original error matters more
                pass

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class _Aborted(Exception):
    """Set as the writer's error by abort(), so the thread writes nothing more."""


# the manifest ----------------------------------------------------------------------------------


def manifest_dict(shards_info: Iterable[ShardInfo], extra: dict | None = None) -> dict:
    shards = sorted(shards_info, key=lambda s: s.name)
    files = [{"name": s.name, "split": s.split, "rows": s.rows, "bytes": s.bytes, "sha256": s.sha256}
             for s in shards]
    splits: dict[str, dict[str, int]] = {}
    sources: dict[str, Counter] = {}
    for s in shards:
        t = splits.setdefault(s.split, {"files": 0, "rows": 0, "bytes": 0})
        t["files"] += 1
        t["rows"] += s.rows
        t["bytes"] += s.bytes
        sources.setdefault(s.split, Counter()).update(s.sources)
    return {
        "format": MANIFEST_FORMAT,
        "files": files,
        "totals": {
            "files": len(files),
            "rows": sum(s.rows for s in shards),
            "bytes": sum(s.bytes for s in shards),
            "splits": dict(sorted(splits.items())),
        },
        "sources": {sp: dict(sorted(c.items())) for sp, c in sorted(sources.items())},
        "features": HF_FEATURES,
        "extra": extra or {},
    }


def write_manifest(out: Root, shards_info: Iterable[ShardInfo], extra: dict | None = None,
                   name: str = MANIFEST) -> dict:
    """Write `manifest.json` (files, totals, per-split source counts, lineage in `extra`) through a
    temporary name; deterministic bytes (sorted, no timestamp), left untouched when unchanged."""
    manifest = manifest_dict(shards_info, extra)
    data = (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
    tmp = posixpath.join(posixpath.dirname(name), TMP_PREFIX + posixpath.basename(name))
    with out.open(tmp, "wb") as f:
        f.write(data)
    replace_if_changed(out, tmp, name, hashlib.sha256(data).hexdigest(), len(data))
    return manifest


def read_manifest(out: Root, name: str = MANIFEST) -> dict:
    with out.open(name, "rb") as f:
        return json.load(f)


def verify_manifest(out: Root, name: str = MANIFEST, check_hashes: bool = True) -> list[str]:
    """Problems with the shards under `out` against their manifest: a missing file, a size, sha256
    or row-count mismatch (rows from the Parquet footer), an unreadable footer, totals that do not
    add up, a shard file the manifest does not list. Empty when everything agrees."""
    try:
        manifest = read_manifest(out, name)
    except FileNotFoundError:
        return [f"{name}: missing"]
    except (OSError, ValueError) as exc:
        return [f"{name}: unreadable ({exc})"]
    problems: list[str] = []
    files = manifest.get("files", [])
    listed = set()
    for entry in files:
        rel = entry["name"]
        listed.add(rel)
        if not out.exists(rel):
            problems.append(f"{rel}: missing")
            continue
        size = out.fs.size(out.path(rel))
        if size != entry["bytes"]:
            problems.append(f"{rel}: size {size} != {entry['bytes']} in the manifest")
        if check_hashes:
            digest = sha256_file(out, rel)
            if digest != entry["sha256"]:
                problems.append(f"{rel}: sha256 {digest} != {entry['sha256']} in the manifest")
        try:
            with out.open(rel, "rb") as f:
                rows = pq.ParquetFile(f).metadata.num_rows
        except Exception as exc:  # noqa: BLE001 - any footer failure is a problem to report
            problems.append(f"{rel}: unreadable Parquet footer ({type(exc).__name__}: {exc})")
        else:
            if rows != entry["rows"]:
                problems.append(f"{rel}: {rows} rows in the footer != {entry['rows']} in the manifest")
    totals = manifest.get("totals", {})
    if totals.get("rows") != sum(e["rows"] for e in files) or totals.get("files") != len(files):
        problems.append(f"{name}: totals do not match the file list")
    for folder in sorted({posixpath.dirname(r) for r in listed}):
        for rel in out.glob(posixpath.join(folder, "*.parquet")):
            if rel not in listed and not posixpath.basename(rel).startswith("."):
                problems.append(f"{rel}: shard not listed in the manifest")
    return problems


# the released LLaVA JSONL layout ---------------------------------------------------------------

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAGIC = [(b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF8", ".gif"),
          (b"BM", ".bmp"), (b"RIFF", ".webp")]


def _safe_relpath(path: str | None) -> str | None:
    """`path` as a clean relative POSIX path, or None when it cannot be used as one."""
    if not path or "\\" in path or "\x00" in path:
        return None
    norm = posixpath.normpath(path)
    if norm.startswith("/") or norm == "." or norm.split("/")[0] == ".." or "/../" in f"/{norm}/":
        return None
    if any(part.startswith(".") for part in norm.split("/")):  # no hidden names, no "..": stays inside
        return None
    return norm


def _id_name(row_id: str, data: bytes, path: str | None) -> str:
    ext = posixpath.splitext(path or "")[1].lower()
    if not re.fullmatch(r"\.[a-z0-9]{1,5}", ext):
        ext = next((e for magic, e in _MAGIC if data.startswith(magic)), ".bin")
    stem = _SAFE.sub("_", row_id).strip("._")[:80] or "image"
    return f"_by_id/{stem}-{hashlib.sha256(row_id.encode()).hexdigest()[:10]}{ext}"


def _image_of(row: dict) -> tuple[bytes | None, str | None]:
    if "image_bytes" in row or "image_path" in row:
        return row.get("image_bytes"), row.get("image_path")
    image = row.get("image")
    if isinstance(image, dict):
        return image.get("bytes"), image.get("path")
    return None, None


def export_llava_jsonl(out_root: Root, rows_iter: Iterable[dict], image_dir: str = "images",
                       name: str = "train.jsonl") -> dict:
    """Write the released LLaVA-CoT-100k layout under `out_root`: `name`, one JSON object a line
    `{"id", "image", "conversations"}` (`image` relative to `out_root`, omitted for a record without
    an image), and the image files at `{image_dir}/{source}/{original relative path}` (or an
    id-based name under `{image_dir}/{source}/_by_id/` when the path is unusable or already taken
    by different bytes). Rows are shard rows (`image: {bytes, path}`) or canonical rows
    (`image_bytes`, `image_path`). An image shared by several rows is written once; a file already
    holding the same bytes is left untouched. The JSONL appears (renamed into place) only when
    complete. Returns counts."""
    tmp = posixpath.join(posixpath.dirname(name), TMP_PREFIX + posixpath.basename(name))
    written: dict[str, bytes] = {}  # image path -> sha256 digest of its bytes (this run)
    rows = images = image_bytes = kept = size = 0
    hasher = hashlib.sha256()
    try:
        with out_root.open(tmp, "wb") as out:
            for row in rows_iter:
                data, path = _image_of(row)
                record: dict = {"id": row["id"]}
                if data is not None:
                    digest = hashlib.sha256(data).digest()
                    source = _SAFE.sub("_", row["source"]).strip("._") or "unknown"
                    rel_in_source = _safe_relpath(path)
                    if rel_in_source is None or rel_in_source.startswith("_by_id/"):
                        rel_in_source = _id_name(row["id"], data, path)
                    rel = posixpath.join(image_dir, source, rel_in_source)
                    if written.get(rel, digest) != digest:  # same path, other bytes: keep both
                        rel = posixpath.join(image_dir, source, _id_name(row["id"], data, path))
                    if rel not in written:
                        if _same_file(out_root, rel, data):
                            kept += 1
                        else:
                            with out_root.open(rel, "wb") as f:
                                f.write(data)
                        written[rel] = digest
                        images += 1
                        image_bytes += len(data)
                    record["image"] = rel
                record["conversations"] = [{"from": t["from"], "value": t["value"]} for t in row["conversations"]]
                line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
                out.write(line)
                hasher.update(line)
                size += len(line)
                rows += 1
    except BaseException:
        _remove(out_root, tmp)
        raise
    replace_if_changed(out_root, tmp, name, hasher.hexdigest(), size)
    return {"jsonl": name, "rows": rows, "images": images, "image_bytes": image_bytes,
            "images_unchanged": kept}


def _same_file(root: Root, rel: str, data: bytes) -> bool:
    try:
        if root.fs.size(root.path(rel)) != len(data):
            return False
        with root.open(rel, "rb") as f:
            return f.read() == data
    except (FileNotFoundError, OSError):
        return False


def read_llava_jsonl(root: Root, name: str = "train.jsonl", split: str = "train",
                     image_dir: str = "images", load_images: bool = True) -> Iterator[dict]:
    """Read a LLaVA JSONL (ours or any in that format) back into canonical rows: `id`, `source`,
    `split`, `image_path`, `image_bytes` (None without an image or with load_images=False),
    `conversations`. For our export, `source` and the original `image_path` come back from
    `{image_dir}/{source}/{path}`; otherwise the source is the id's prefix (`source/native_id`)
    and `image_path` the record's `image` as written."""
    with root.open(name, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)
            image = rec.get("image")
            source, image_path = None, image
            if image:
                parts = image.split("/", 2)
                if len(parts) == 3 and parts[0] == image_dir:
                    source, image_path = parts[1], parts[2]
            if source is None:
                source = str(rec["id"]).split("/", 1)[0] if "/" in str(rec["id"]) else ""
            data = None
            if image and load_images:
                with root.open(image, "rb") as g:
                    data = g.read()
            yield {
                "id": rec["id"],
                "source": source,
                "split": split,
                "image_path": image_path,
                "image_bytes": data,
                "conversations": [{"from": t["from"], "value": t["value"]} for t in rec.get("conversations", [])],
            }


def shard_info_dicts(shards: Iterable[ShardInfo]) -> list[dict]:
    """ShardInfo as plain dicts (for metadata and logs)."""
    return [asdict(s) for s in shards]
