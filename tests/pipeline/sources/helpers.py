"""Shared by the reader tests: write a source's embedded sample, ingest it, read both tables back."""
import pyarrow.parquet as pq

from pipeline.demo import write_source
from pipeline.ingest import ingest_source
from pipeline.storage import Root


def ingest_demo(source: str, tmp_path, seed: int = 0):
    """(source root, planted rejects, summary, rows by id, quarantine rows)."""
    src, out = Root(str(tmp_path / "src")), Root(str(tmp_path / "out"))
    planted = write_source(source, src, seed=seed)
    summary = ingest_source(source, src, out)
    rows = {r["id"]: r for r in pq.read_table(out.path("samples.parquet")).to_pylist()}
    rejects = pq.read_table(out.path("quarantine.parquet")).to_pylist()
    return src, planted, summary, rows, rejects


def reject_key(pairs):
    """(native_id, reason) pairs in a stable order, for comparing quarantine with the planted list."""
    return sorted(pairs, key=lambda p: (p[0] or "", p[1]))
