"""Parquet writing shared by every step: bounded batches, temp name then rename, content hash.

Rows are buffered as tuples (a C-speed transpose makes the columns at flush time). Converting a
batch to Arrow needs the interpreter, but compressing it into Parquet and hashing it do not (Arrow
and hashlib release the GIL), so those run on one background thread while the caller produces the
next batch: at most one finished batch waits in the queue, so memory stays bounded.
"""
from __future__ import annotations

import hashlib
import posixpath
import queue
import threading
from operator import itemgetter

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.storage import Root

BATCH_ROWS = 20_000
_DONE = object()


def _open_output(out: Root, rel: str):
    """A native Arrow file on local disks: writing it needs no GIL, so the background writer does
    not stall the thread producing rows (a Python file object takes the GIL on every page written).
    Other stores get their fsspec file object."""
    if out.is_local:
        out.makedirs(posixpath.dirname(rel))
        return pa.OSFile(out.path(rel), "wb")
    return out.open(rel, "wb")


class TableSink:
    """Buffers rows and writes Parquet batches; hashes the content (Arrow IPC bytes) as it goes."""

    def __init__(self, out: Root, rel: str, arrow_schema: pa.Schema) -> None:
        self.out, self.rel, self.schema = out, rel, arrow_schema
        self.tmp_rel = rel + ".tmp"
        self.names = list(arrow_schema.names)
        self._values = itemgetter(*self.names) if len(self.names) > 1 else (lambda row: (row[self.names[0]],))
        self._rows: list[tuple] = []
        self.rows = 0
        self.hasher = hashlib.sha256()  # over Arrow IPC bytes: stable for equal content
        self._file = _open_output(out, self.tmp_rel)
        self._writer = pq.ParquetWriter(self._file, arrow_schema, compression="zstd")
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._write_loop, name=f"TableSink:{rel}", daemon=True)
        self._thread.start()

    # producing rows ------------------------------------------------------------------------

    def add(self, row: dict) -> None:
        """A row as a dict keyed by column name (extra keys are ignored)."""
        self._rows.append(self._values(row))
        if len(self._rows) >= BATCH_ROWS:
            self.flush()

    def add_values(self, values: tuple) -> None:
        """A row as a tuple in schema column order (the fast path for hot loops)."""
        self._rows.append(values)
        if len(self._rows) >= BATCH_ROWS:
            self.flush()

    def add_table(self, table: pa.Table) -> None:
        """Rows already built as Arrow columns (a caller that assembles its own batches); rows
        buffered before it are written first, so the order is kept."""
        self.flush()
        self._raise_if_failed()
        table = table.cast(self.schema) if table.schema != self.schema else table
        self._put(table)
        self.rows += table.num_rows

    @property
    def columns(self) -> dict[str, list]:
        """The rows buffered and not yet flushed, column-wise."""
        if not self._rows:
            return {name: [] for name in self.names}
        return {name: list(col) for name, col in zip(self.names, zip(*self._rows))}

    def flush(self) -> None:
        n = len(self._rows)
        if not n:
            return
        self._raise_if_failed()
        rows, self._rows = self._rows, []
        arrays = [pa.array(col, type=f.type) for col, f in zip(zip(*rows), self.schema)]
        del rows
        table = pa.Table.from_arrays(arrays, schema=self.schema)
        self._put(table)
        self.rows += n

    # the background writer -----------------------------------------------------------------

    def _put(self, item) -> None:
        while True:
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                if not self._thread.is_alive():
                    self._raise_if_failed()
                    raise RuntimeError(f"the writer of {self.rel} stopped")

    def _write_loop(self) -> None:
        while True:
            table = self._queue.get()
            if table is _DONE:
                return
            if self._error is not None:
                continue  # drain after a failure; the caller sees the error at its next call
            try:
                self._writer.write_table(table)
                for batch in table.to_batches():
                    sink = pa.BufferOutputStream()
                    with pa.ipc.new_stream(sink, table.schema) as w:
                        w.write_batch(batch)
                    self.hasher.update(sink.getvalue())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                self._error = exc

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _stop_writer(self) -> None:
        if self._thread.is_alive():
            self._put(_DONE)
            self._thread.join()

    # finishing -----------------------------------------------------------------------------

    def close(self) -> None:
        self.flush()
        self._stop_writer()
        self._raise_if_failed()
        self._writer.close()
        self._file.close()
        self.out.replace(self.tmp_rel, self.rel)

    def abort(self) -> None:
        try:
            try:
                self._stop_writer()
            finally:
                self._writer.close()
                self._file.close()
        finally:
            if self.out.exists(self.tmp_rel):
                self.out.fs.rm(self.out.path(self.tmp_rel))
