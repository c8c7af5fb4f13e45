"""Parquet writing shared by every step: bounded batches, temp name then rename, content hash."""
from __future__ import annotations

import hashlib

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.storage import Root

BATCH_ROWS = 20_000


class TableSink:
    """Buffers rows column-wise and writes Parquet batches; hashes the content as it goes."""

    def __init__(self, out: Root, rel: str, arrow_schema: pa.Schema) -> None:
        self.out, self.rel, self.schema = out, rel, arrow_schema
        self.tmp_rel = rel + ".tmp"
        self.columns: dict[str, list] = {name: [] for name in arrow_schema.names}
        self.rows = 0
        self.hasher = hashlib.sha256()  # over Arrow IPC bytes: stable for equal content
        self._file = out.open(self.tmp_rel, "wb")
        self._writer = pq.ParquetWriter(self._file, arrow_schema, compression="zstd")

    def add(self, row: dict) -> None:
        for name, values in self.columns.items():
            values.append(row[name])
        if len(self.columns[self.schema.names[0]]) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        n = len(self.columns[self.schema.names[0]])
        if not n:
            return
        table = pa.Table.from_pydict(self.columns, schema=self.schema)
        self._writer.write_table(table)
        for batch in table.to_batches():
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as w:
                w.write_batch(batch)
            self.hasher.update(sink.getvalue().to_pybytes())
        self.rows += n
        self.columns = {name: [] for name in self.schema.names}

    def close(self) -> None:
        self.flush()
        self._writer.close()
        self._file.close()
        self.out.replace(self.tmp_rel, self.rel)

    def abort(self) -> None:
        try:
            self._writer.close()
            self._file.close()
        finally:
            if self.out.exists(self.tmp_rel):
                self.out.fs.rm(self.out.path(self.tmp_rel))


