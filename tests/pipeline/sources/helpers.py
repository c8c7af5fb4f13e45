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


def read_located(source: str, root: Root, derived: Root | None = None) -> list:
    """Every item the reader yields for `root` as a user would give it: the dataset folder is
    located first (wrappers, archives, parent), as the data store does."""
    from pipeline.sources import get_reader
    from pipeline.sources.layout import locate

    reader = get_reader(source)
    return list(reader.read(locate(reader, root, derived=derived)))


def expand(items) -> list:
    """Items with every columnar batch (`SampleBatch`, `SampleTable`) expanded into its `Sample`s, in order."""
    from pipeline.ingest import _sample_of
    from pipeline.sources.base import SampleBatch, SampleTable

    out = []
    for item in items:
        if isinstance(item, SampleBatch):
            out += [item.sample(i) for i in range(len(item))]
        elif isinstance(item, SampleTable):
            out += [_sample_of(row, item.source) for row in item.table.to_pylist()]
        else:
            out.append(item)
    return out
