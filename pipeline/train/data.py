"""The training data: rows of the Parquet shards of one split, and the order a rank reads them in.

`ShardDataset` is a map-style dataset over the shards that `manifest.json` lists for a split. Only
the Parquet footers are read up front (row counts per row group); a row is read with its whole row
group, and the last few row groups are kept decoded (`cache_row_groups`), so memory holds a few
row groups, never the dataset. Works on any fsspec location (`pipeline.storage.Root`).

`ResumableBatchSampler` yields one rank's micro-batches (lists of row indices), epoch after epoch.
The order is a function of (seed, epoch) only: row groups are shuffled, then rows are shuffled
within windows of `window` consecutive row groups (so a rank reads a few row groups at a time, not
one random row from everywhere). Each epoch's order is padded by wrapping around to a multiple of
`world_size`, then cut into one contiguous slice per rank, so every rank gets exactly the same
number of micro-batches (the last one of an epoch may be smaller) and ranks read mostly disjoint
row groups. The position is one integer, the number of micro-batches this rank
has consumed since the start of training: `start=` resumes there without reading any data.

Length grouping (`lengths=` and `group_batches=K`): a batch is padded to its longest row, so
random batches of LLaVA-CoT rows (a few hundred to a few thousand tokens) are a quarter padding.
Each rank's slice is cut into windows of K batches; a window's rows are sorted by length (longest
first) and cut into batches, and the batches of a window are put in a random order that depends
on (seed, epoch, window) only, the same on every rank: at a given step every rank holds its
window's j-th longest batch, so no rank waits long for a slower one. Still a function of (seed,
epoch), so resuming stays exact. `ShardDataset.row_lengths(tokenizer)` gives the lengths (the
conversation's tokens; characters are a cheaper but noisier stand-in: on realistic rows, 95 % of
batch tokens are real with characters, 98 % with tokens).
"""
from __future__ import annotations

import bisect
import io
import math
import os
from collections import OrderedDict
from typing import Iterator

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch.utils.data

from pipeline.shards import MANIFEST, read_manifest
from pipeline.storage import Root


class ShardDataset(torch.utils.data.Dataset):
    """Rows (`{"id", "source", "image": {"bytes", "path"} | None, "conversations"}`) of one split."""

    def __init__(self, root: str | Root, split: str = "train", cache_row_groups: int = 2,
                 manifest: str = MANIFEST) -> None:
        self.root = root if isinstance(root, Root) else Root(str(root))
        self.split = split
        self.cache_row_groups = max(1, cache_row_groups)
        info = read_manifest(self.root, manifest)
        self.files = sorted(f["name"] for f in info["files"] if f["split"] == split)
        if not self.files:
            raise ValueError(f"{self.root.path(manifest)} lists no shard for split {split!r}")
        # (file index, row group index) for each row group, and the global index of its first row
        self.groups: list[tuple[int, int]] = []
        self.group_start: list[int] = []
        self.group_rows: list[int] = []
        n = 0
        for fi, name in enumerate(self.files):
            with self.root.open(name, "rb") as f:
                meta = pq.ParquetFile(f).metadata
            for gi in range(meta.num_row_groups):
                rows = meta.row_group(gi).num_rows
                if rows == 0:
                    continue
                self.groups.append((fi, gi))
                self.group_start.append(n)
                self.group_rows.append(rows)
                n += rows
        self.num_rows = n
        self._cache: OrderedDict[int, list[dict]] = OrderedDict()
        self._handles: dict[int, pq.ParquetFile] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return self.num_rows

    def __getstate__(self) -> dict:  # DataLoader workers: open files afresh in each process
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        state["_handles"] = {}
        return state

    def _file(self, fi: int) -> pq.ParquetFile:
        if self._pid != os.getpid():
            self._handles, self._cache, self._pid = {}, OrderedDict(), os.getpid()
        if fi not in self._handles:
            self._handles[fi] = pq.ParquetFile(self.root.open(self.files[fi], "rb"))
        return self._handles[fi]

    def _group(self, g: int) -> list[dict]:
        rows = self._cache.get(g)
        if rows is not None:
            self._cache.move_to_end(g)
            return rows
        fi, gi = self.groups[g]
        rows = self._file(fi).read_row_group(gi, columns=["id", "source", "image", "conversations"]).to_pylist()
        self._cache[g] = rows
        while len(self._cache) > self.cache_row_groups:
            self._cache.popitem(last=False)
        return rows

    def row_lengths(self, tokenizer=None) -> np.ndarray:
        """The length-grouping key of each row, in row order: the tokens of its conversation's turns
        under `tokenizer` (a fast tokenizer encodes ~10^7 tokens a second: seconds for 100k rows),
        or, without one, their characters. Reads only the `conversations` column (no image bytes)."""
        out = []
        for fi, gi in self.groups:
            col = self._file(fi).read_row_group(gi, columns=["conversations"]).column("conversations").combine_chunks()
            values = pc.struct_field(pc.list_flatten(col), "value").fill_null("")
            if tokenizer is not None:
                ids = tokenizer(values.to_pylist(), add_special_tokens=False)["input_ids"]
                per_turn = np.array([len(x) for x in ids], dtype=np.int64)
            else:
                per_turn = pc.utf8_length(values).to_numpy(zero_copy_only=False).astype(np.int64)
            cumulative = np.concatenate([[0], np.cumsum(per_turn, dtype=np.int64)])
            offsets = col.offsets.to_numpy()
            out.append(cumulative[offsets[1:]] - cumulative[offsets[:-1]])
        return np.concatenate(out).astype(np.int64)

    def locate(self, index: int) -> tuple[int, int]:
        """(row group, offset in it) of global row `index`."""
        if not 0 <= index < self.num_rows:
            raise IndexError(index)
        g = bisect.bisect_right(self.group_start, index) - 1
        return g, index - self.group_start[g]

    def __getitem__(self, index: int) -> dict:
        g, off = self.locate(int(index))
        return self._group(g)[off]


def decode_image(image: dict | None):
    """The PIL image (RGB) of a row's `image` struct, or None."""
    if not image or image.get("bytes") is None:
        return None
    from PIL import Image

    with Image.open(io.BytesIO(image["bytes"])) as im:
        return im.convert("RGB")


def epoch_order(group_rows: list[int], seed: int, epoch: int, shuffle: bool = True, window: int = 4) -> np.ndarray:
    """All global row indices of one epoch, in reading order (a function of seed and epoch only)."""
    starts = np.concatenate([[0], np.cumsum(group_rows)[:-1]]).astype(np.int64)
    if not shuffle:
        return np.arange(int(sum(group_rows)), dtype=np.int64)
    rng = np.random.default_rng([int(seed), int(epoch), 0x11A7A])
    groups = rng.permutation(len(group_rows))
    parts = []
    for w in range(0, len(groups), window):
        rows = np.concatenate([np.arange(starts[g], starts[g] + group_rows[g], dtype=np.int64)
                               for g in groups[w:w + window]])
        parts.append(rng.permutation(rows))
    return np.concatenate(parts)


class ResumableBatchSampler(torch.utils.data.Sampler):
    """One rank's micro-batches for `epochs` epochs (or forever with `epochs=None`), starting at
    micro-batch `start` (counted from the beginning of training, over all epochs)."""

    def __init__(self, group_rows: list[int], batch_size: int, *, rank: int = 0, world_size: int = 1,
                 seed: int = 0, shuffle: bool = True, window: int = 4, epochs: int | None = None,
                 start: int = 0, lengths: np.ndarray | None = None, group_batches: int = 0) -> None:
        if batch_size <= 0 or world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError("need batch_size > 0 and 0 <= rank < world_size")
        self.group_rows = list(group_rows)
        self.num_rows = int(sum(self.group_rows))
        if self.num_rows == 0:
            raise ValueError("no rows")
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.window = window
        self.epochs = epochs
        self.start = start
        if group_batches and lengths is not None and len(lengths) != self.num_rows:
            raise ValueError(f"{len(lengths)} lengths for {self.num_rows} rows")
        self.lengths = None if lengths is None else np.asarray(lengths)
        self.group_batches = group_batches if lengths is not None else 0
        self.rows_per_rank = math.ceil(self.num_rows / world_size)
        self.batches_per_epoch = math.ceil(self.rows_per_rank / batch_size)

    def rank_rows(self, epoch: int) -> np.ndarray:
        order = epoch_order(self.group_rows, self.seed, epoch, self.shuffle, self.window)
        total = self.rows_per_rank * self.world_size
        if total > len(order):  # wrap around so that every rank gets the same number of rows
            order = np.concatenate([order, order[: total - len(order)]])
        return order[self.rank * self.rows_per_rank:(self.rank + 1) * self.rows_per_rank]

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        rows = self.rank_rows(epoch)
        if not self.group_batches:
            rows = rows.tolist()
            return [rows[i:i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
        span = self.group_batches * self.batch_size
        batches: list[list[int]] = []
        for w, first in enumerate(range(0, len(rows), span)):
            chunk = rows[first:first + span]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")].tolist()
            cut = [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
            # the same permutation on every rank (no rank in it): step by step, ranks hold batches
            # of the same rank in their windows' length order
            order = np.random.default_rng([int(self.seed), int(epoch), w, 0x1E96]).permutation(len(cut))
            batches += [cut[i] for i in order]
        return batches

    def position(self, micro_batches: int) -> tuple[int, int]:
        """(epoch, micro-batch within it) after `micro_batches` micro-batches."""
        return divmod(micro_batches, self.batches_per_epoch)

    def __iter__(self) -> Iterator[list[int]]:
        epoch, index = self.position(self.start)
        while self.epochs is None or epoch < self.epochs:
            batches = self.epoch_batches(epoch)
            yield from batches[index:]
            epoch, index = epoch + 1, 0

    def __len__(self) -> int:
        if self.epochs is None:
            raise TypeError("an endless sampler has no length")
        return max(0, self.epochs * self.batches_per_epoch - self.start)
