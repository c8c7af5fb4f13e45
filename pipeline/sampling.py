"""Deterministic quota subsampling by hash rank, after removing duplicates.

Each sample gets a rank = hash(seed, id); a source keeps its `quota` lowest ranks. Unlike a shuffle,
this is stable when data is added: a sample already chosen stays chosen unless a new sample with a
lower rank displaces it from the quota. With a stratification key, the quota is first split across
strata in proportion to their sizes (largest remainder, ties by stratum name), then hash rank picks
inside each stratum.

Duplicates are removed before the quota is drawn, so no duplicate reaches the teacher (who is paid
per sample). The key is the one the dataset assembly uses as its last guard: the SHA-256 of the
image file's bytes plus the normalised question. Three rules, each deterministic:
- within the source, of several candidates with one key the lowest hash rank is kept (GeoQA+'s
  GeoQA-train.pk is a subset of Mix-train.pk; CLEVR-Math's general and multihop files repeat
  questions);
- a candidate with the key of one of the source's own held-out rows (a test split) is dropped: it
  would put a test question into training;
- across sources, a fixed priority (the order of `pipeline.SOURCES`) decides: a candidate is dropped
  when a source earlier in that order has a row (of any split) with its key. The result depends
  only on the raw rows of the sources before it, never on which partition ran first.
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


# --- duplicates ---------------------------------------------------------------------------------


def dedup_key(image_sha256: str | None, question: str) -> str | None:
    """Image content + normalised question (None without an image hash: nothing to compare)."""
    if not image_sha256:
        return None
    from pipeline.agreement import normalise

    return image_sha256 + "\0" + normalise(question)


def source_keys(path: str, fs) -> dict[str, str]:
    """{dedup key: sample id} of every row of a canonical table (the first id per key)."""
    import pyarrow.parquet as pq

    with fs.open(path, "rb") as f:
        table = pq.read_table(f, columns=["id", "image_sha256", "question"])
    keys: dict[str, str] = {}
    for sid, sha, question in zip(*(table.column(c).to_pylist() for c in ("id", "image_sha256", "question"))):
        key = dedup_key(sha, question)
        if key is not None:
            keys.setdefault(key, sid)
    return keys


def earlier_sources(source: str, sources) -> list[str]:
    """The sources whose rows take priority over `source`'s in cross-source duplicate removal."""
    order = list(sources)
    return order[: order.index(source)] if source in order else []


# --- applying a plan to a source's canonical table ---------------------------------------------

SUBSAMPLE_VERSION = "2"
# Test splits are never sampled: several are benchmark sets (AI2D_TEST) or have private answers.
# "unassigned" rows (GeoQA3/json without pickles, PISC images in no split file) may be test rows.
DEFAULT_EXCLUDE_SPLITS = ("test", "unassigned")


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
    duplicates_within_source: int = 0
    duplicates_of_held_out: int = 0
    duplicates_of_other_sources: dict[str, int] = field(default_factory=dict)
    duplicates_path: str = ""

    @property
    def duplicates_removed(self) -> int:
        return self.duplicates_within_source + self.duplicates_of_held_out + sum(self.duplicates_of_other_sources.values())


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
    earlier_keys: dict[str, dict[str, str]] | None = None,
) -> SubsampleSummary:
    """Select `quota` rows of the canonical table at `samples_path` (an fsspec path on `out.fs`)
    and write them to `out/samples.parquet`, after removing duplicates (module docstring);
    `earlier_keys` = {earlier source: its `source_keys`}. The removed duplicates are listed in
    `out/duplicates.parquet`. Two passes: ids first (small), then the chosen rows batch by batch,
    so memory stays near one batch whatever the source's size."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pipeline import schema
    from pipeline.tables import TableSink

    columns = ["id", "split", "question", "image_sha256"] + (["meta"] if stratify_key else [])
    with out.fs.open(samples_path, "rb") as f:
        head = pq.read_table(f, columns=columns)
    ids = head.column("id").to_pylist()
    split_col = head.column("split").to_pylist()
    keys = [dedup_key(sha, q) for sha, q in zip(head.column("image_sha256").to_pylist(),
                                                 head.column("question").to_pylist())]
    keep = [s not in exclude_splits for s in split_col]
    excluded: dict[str, int] = {}
    held_out: dict[str, str] = {}
    for sid, s, k, kept in zip(ids, split_col, keys, keep):
        if not kept:
            excluded[s] = excluded.get(s, 0) + 1
            if k is not None:
                held_out.setdefault(k, sid)
    dups = _Duplicates(source)
    keep = dups.remove(ids, keys, keep, held_out, earlier_keys or {}, seed)
    cand = [i for i, k in zip(ids, keep) if k]
    strata = None
    if stratify_key:
        metas = head.column("meta").to_pylist()
        strata = [_stratum(m, stratify_key) for m, k in zip(metas, keep) if k]
    del head
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
    dups_path = dups.write(out)
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
        duplicates_within_source=dups.counts["duplicate_within_source"],
        duplicates_of_held_out=dups.counts["duplicate_of_held_out"],
        duplicates_of_other_sources=dict(sorted(dups.by_source.items())),
        duplicates_path=dups_path,
    )


class _Duplicates:
    """The duplicate rules of the module docstring, and the record of what each removed."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.rows: list[dict] = []
        self.counts = {"duplicate_within_source": 0, "duplicate_of_held_out": 0, "duplicate_of_other_source": 0}
        self.by_source: dict[str, int] = {}

    def _drop(self, sid: str, reason: str, detail: str) -> None:
        self.rows.append({"sample_id": sid, "source": self.source, "turn_index": None, "reason": reason,
                          "detail": detail})
        self.counts[reason] += 1

    def remove(self, ids, keys, keep, held_out, earlier_keys, seed) -> list[bool]:
        keep = list(keep)
        first: dict[str, int] = {}  # key -> index of the candidate kept so far (lowest rank)
        for i, (sid, key, kept) in enumerate(zip(ids, keys, keep)):
            if not kept or key is None:
                continue
            if key in held_out:
                keep[i] = False
                self._drop(sid, "duplicate_of_held_out", f"same image and question as held-out row {held_out[key]}")
                continue
            owner = next((src for src, table in earlier_keys.items() if key in table), None)
            if owner is not None:
                keep[i] = False
                self.by_source[owner] = self.by_source.get(owner, 0) + 1
                self._drop(sid, "duplicate_of_other_source",
                           f"same image and question as {earlier_keys[owner][key]} ({owner} comes first)")
                continue
            j = first.get(key)
            if j is None:
                first[key] = i
                continue
            if (rank(sid, seed), sid) < (rank(ids[j], seed), ids[j]):  # the lower rank stays
                i, j = j, i
                first[key] = j
            keep[i] = False
            self._drop(ids[i], "duplicate_within_source", f"same image and question as {ids[j]}")
        return keep

    def write(self, out) -> str:
        from pipeline import schema
        from pipeline.tables import TableSink

        sink = TableSink(out, "duplicates.parquet", schema.REJECT)
        try:
            for row in sorted(self.rows, key=lambda r: r["sample_id"]):
                sink.add(row)
            sink.close()
        except BaseException:
            sink.abort()
            raise
        return out.path("duplicates.parquet")
