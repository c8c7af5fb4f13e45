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
