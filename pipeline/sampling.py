"""Deterministic quota subsampling by hash rank.

Each sample gets a rank = hash(seed, id); a source keeps its `quota` lowest ranks. Unlike a shuffle,
this is stable when data is added: a sample already chosen stays chosen unless a new sample with a
lower rank displaces it from the quota. With a stratification key, the quota is first split across
strata in proportion to their sizes (largest remainder, ties by stratum name), then hash rank picks
inside each stratum.
"""
from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from dataclasses import dataclass, field

# Thousands of samples per source in LLaVA-CoT-100k (the paper's table): the default quotas.
PAPER_QUOTAS: dict[str, int] = {
    "sharegpt4v": 31_300,
    "chartqa": 17_600,
    "aokvqa": 16_100,
    "docvqa": 4_000,
    "pisc": 1_000,
    "clevr": 500,
    "geoqa_plus": 11_400,
    "ai2d": 11_400,
    "scienceqa": 5_600,
    "clevr_math": 500,
}

# Natural strata: CLEVR by question family, ScienceQA by subject (keys of a sample's `meta`).
DEFAULT_STRATIFY: dict[str, str] = {"clevr": "question_family_index", "scienceqa": "subject"}


@dataclass(frozen=True)
class QuotaPlan:
    """Quota per source = round(paper quota x scale), at least `min_quota`, unless overridden."""

    scale: float = 1.0
    min_quota: int = 1
    overrides: dict[str, int] = field(default_factory=dict)
    seed: int = 0

    def quota(self, source: str) -> int:
        if source in self.overrides:
            return int(self.overrides[source])
        if source not in PAPER_QUOTAS:
            raise KeyError(f"no default quota for source {source!r}; give one in overrides")
        return max(self.min_quota, math.ceil(PAPER_QUOTAS[source] * self.scale))


def rank(sample_id: str, seed: int = 0) -> int:
    digest = hashlib.blake2b(f"{seed}\0{sample_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def allocate(sizes: dict[str, int], quota: int) -> dict[str, int]:
    """Split `quota` across strata proportionally to `sizes` (largest remainder), never above a
    stratum's size."""
    total = sum(sizes.values())
    if quota >= total:
        return dict(sizes)
    exact = {k: quota * n / total for k, n in sizes.items()}
    alloc = {k: min(sizes[k], math.floor(v)) for k, v in exact.items()}
    left = quota - sum(alloc.values())
    by_remainder = sorted(sizes, key=lambda k: (-(exact[k] - math.floor(exact[k])), k))
    while left > 0:
        progressed = False
        for k in by_remainder:
            if left and alloc[k] < sizes[k]:
                alloc[k] += 1
                left -= 1
                progressed = True
        if not progressed:
            break
    return alloc


def select(ids: list[str], quota: int, seed: int = 0, strata: list[str] | None = None) -> list[str]:
    """The chosen ids (in input order). `strata[i]` is the stratum of `ids[i]` when stratifying."""
    if quota < 0:
        raise ValueError("quota must be >= 0")
    if len(set(ids)) != len(ids):
        raise ValueError("ids must be unique to subsample deterministically")
    if strata is None:
        if quota >= len(ids):
            return list(ids)
        chosen = set(sorted(ids, key=lambda i: (rank(i, seed), i))[:quota])
        return [i for i in ids if i in chosen]
    if len(strata) != len(ids):
        raise ValueError("strata must have one entry per id")
    groups: dict[str, list[str]] = defaultdict(list)
    for i, s in zip(ids, strata):
        groups[str(s)].append(i)
    alloc = allocate({k: len(v) for k, v in groups.items()}, quota)
    chosen: set[str] = set()
    for k, members in groups.items():
        chosen.update(sorted(members, key=lambda i: (rank(i, seed), i))[: alloc[k]])
    return [i for i in ids if i in chosen]


# --- applying a plan to a source's canonical table ---------------------------------------------

SUBSAMPLE_VERSION = "1"
# Test splits are never sampled: several are benchmark sets (AI2D_TEST) or have private answers.
DEFAULT_EXCLUDE_SPLITS = ("test",)


@dataclass
class SubsampleSummary:
    source: str
    candidates: int
    quota: int
    selected: int
    by_split: dict[str, int]
    by_stratum: dict[str, int]
    excluded_splits: dict[str, int]
    stratify_key: str | None
    samples_path: str
    content_hash: str


def _stratum(meta_json: str, key: str) -> str:
    import json

    value = json.loads(meta_json).get(key)
    return "<missing>" if value is None else str(value)


def subsample_source(
    source: str,
    samples_path: str,
    out,
    quota: int,
    seed: int = 0,
    stratify_key: str | None = None,
    exclude_splits: tuple[str, ...] = DEFAULT_EXCLUDE_SPLITS,
) -> SubsampleSummary:
    """Select `quota` rows of the canonical table at `samples_path` (an fsspec path on `out.fs`)
    and write them to `out/samples.parquet`. Two passes: ids first (small), then the chosen rows
    batch by batch, so memory stays near one batch whatever the source's size."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pipeline import schema
    from pipeline.tables import TableSink

    with out.fs.open(samples_path, "rb") as f:
        head = pq.read_table(f, columns=["id", "split", "meta"] if stratify_key else ["id", "split"])
    ids = head.column("id").to_pylist()
    split_col = head.column("split").to_pylist()
    keep = [s not in exclude_splits for s in split_col]
    excluded: dict[str, int] = {}
    for s, k in zip(split_col, keep):
        if not k:
            excluded[s] = excluded.get(s, 0) + 1
    cand = [i for i, k in zip(ids, keep) if k]
    strata = None
    if stratify_key:
        metas = head.column("meta").to_pylist()
        strata = [_stratum(m, stratify_key) for m, k in zip(metas, keep) if k]
    chosen = select(cand, quota, seed=seed, strata=strata)
    chosen_set = pa.array(chosen, type=pa.string())

    sink = TableSink(out, "samples.parquet", schema.SAMPLE)
    by_split: dict[str, int] = {}
    by_stratum: dict[str, int] = {}
    try:
        with out.fs.open(samples_path, "rb") as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=20_000):
                table = pa.Table.from_batches([batch]).cast(schema.SAMPLE)
                table = table.filter(pc.is_in(table.column("id"), value_set=chosen_set))
                for row in table.to_pylist():
                    sink.add(row)
                    by_split[row["split"]] = by_split.get(row["split"], 0) + 1
                    if stratify_key:
                        s = _stratum(row["meta"], stratify_key)
                        by_stratum[s] = by_stratum.get(s, 0) + 1
        sink.close()
    except BaseException:
        sink.abort()
        raise
    return SubsampleSummary(
        source=source,
        candidates=len(cand),
        quota=quota,
        selected=sink.rows,
        by_split=dict(sorted(by_split.items())),
        by_stratum=dict(sorted(by_stratum.items())),
        excluded_splits=dict(sorted(excluded.items())),
        stratify_key=stratify_key,
        samples_path=out.path("samples.parquet"),
        content_hash=sink.hasher.hexdigest()[:32],
    )
