"""Resume and scale: predictions and judge verdicts are kept per item, so an interrupted evaluation
picks up where it stopped, and ranks of a data-parallel run each predict their own shard.

Layout under an output folder:

    <out>/<benchmark>/<strategy>/<model>/predictions-rank00003.jsonl   one line per item, appended
    <out>/<benchmark>/<strategy>/<model>/predictions.jsonl             the merge (rank 0)
    <out>/verdicts.sqlite                                              judge replies (rank 0 scores)

A prediction line carries its benchmark, strategy, model fingerprint and item index, and is
flushed the moment the item is done: a killed run loses at most the item it was predicting (a torn
last line is ignored when read, and the next append starts on a fresh line). Which items are done is
read from every prediction file of the folder, whatever world size wrote it, so a run may resume
with a different number of ranks.

Plain functions: `torch.distributed` is not needed; `rank_and_world()` reads the variables
`torchrun` sets.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

Judge = Callable[[str], str]  # prompt -> reply: the teacher, an LLM grader, a fake in tests

MERGED = "predictions.jsonl"


def _safe(part: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._=+-]", "_", str(part))
    return s or "_"


def run_folder(out_dir: str | os.PathLike, benchmark: str, strategy: str, model: str) -> Path:
    return Path(out_dir) / _safe(benchmark) / _safe(strategy) / _safe(model)


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) as torchrun sets them; (0, 1) for a single process."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def shard(indices: Sequence[str], world_size: int, rank: int) -> list[str]:
    """The items rank `rank` of `world_size` predicts: every world_size-th, starting at rank
    (interleaved, so each rank gets a fair mix of long and short items). The shards partition the
    list: disjoint, and together all of it."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of size {world_size}")
    return list(indices[rank::world_size])


def _read_jsonl(path: Path) -> Iterable[dict]:
    with open(path, "rb") as f:
        for raw in f:
            try:
                rec = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                continue  # a line torn by a kill
            if isinstance(rec, dict):
                yield rec


class PredictionStore:
    """The predictions of one (benchmark, strategy, model) run; this process writes its rank's file."""

    def __init__(self, out_dir: str | os.PathLike, benchmark: str, strategy: str, model: str, rank: int = 0) -> None:
        self.benchmark, self.strategy, self.model, self.rank = benchmark, strategy, model, rank
        self.folder = run_folder(out_dir, benchmark, strategy, model)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / f"predictions-rank{rank:05d}.jsonl"
        self._lock = threading.Lock()

    def _mine(self, rec: dict) -> bool:
        return (rec.get("benchmark"), rec.get("strategy"), rec.get("model")) == (self.benchmark, self.strategy, self.model) \
            and "index" in rec and isinstance(rec.get("prediction"), str)

    def load(self) -> dict[str, dict]:
        """Every stored prediction of this run, from all ranks' files and the merge: index -> record."""
        out: dict[str, dict] = {}
        files = sorted(glob.glob(str(self.folder / "predictions-rank*.jsonl")))
        merged = self.folder / MERGED
        if merged.exists():
            files = [str(merged)] + files
        for p in files:
            for rec in _read_jsonl(Path(p)):
                if self._mine(rec):
                    out.setdefault(str(rec["index"]), rec)
        return out

    def done(self) -> set[str]:
        return set(self.load())

    def add(self, index: str, prediction: str, **extra) -> dict:
        rec = {"benchmark": self.benchmark, "strategy": self.strategy, "model": self.model, "index": str(index),
               "prediction": prediction, "rank": self.rank, "ts": round(time.time(), 3), **extra}
        line = (json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock, open(self.path, "ab+") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":  # a torn last line: start on a fresh one
                    f.write(b"\n")
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        return rec


def merge_predictions(out_dir: str | os.PathLike, benchmark: str, strategy: str, model: str,
                      expected: Sequence[str] | None = None) -> tuple[Path, dict[str, dict], list[str]]:
    """Rank 0, after every rank finished: gather the per-rank files into `predictions.jsonl` (the
    order of `expected` when given; one record per item) and say which expected items are missing.
    Written to a temporary name and renamed, so the merge is never seen half written."""
    store = PredictionStore(out_dir, benchmark, strategy, model, rank=0)
    preds = store.load()
    order = list(expected) if expected is not None else sorted(preds, key=_index_key)
    missing = [i for i in order if i not in preds]
    tmp = store.folder / (MERGED + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for i in order:
            if i in preds:
                f.write(json.dumps(preds[i], ensure_ascii=False) + "\n")
        for i in sorted(set(preds) - set(order), key=_index_key):  # items no longer in the file: kept, last
            f.write(json.dumps(preds[i], ensure_ascii=False) + "\n")
    os.replace(tmp, store.folder / MERGED)
    return store.folder / MERGED, preds, missing


def _index_key(i: str):
    return (0, int(i), "") if i.lstrip("-").isdigit() else (1, 0, i)


# -- judge verdicts -------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    benchmark TEXT NOT NULL, strategy TEXT NOT NULL, model TEXT NOT NULL, item TEXT NOT NULL,
    purpose TEXT NOT NULL, prompt_sha TEXT NOT NULL, judge TEXT NOT NULL,
    reply TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (benchmark, strategy, model, item, purpose, prompt_sha, judge)
);
"""


class Verdicts:
    """Judge replies, one SQLite file (WAL), keyed by benchmark, strategy, model fingerprint, item
    index, purpose ("mmvet_grade", "mc_extract", ...), the sha256 of the prompt (a changed
    prediction or prompt is judged afresh) and the judge's name."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    @staticmethod
    def sha(prompt: str) -> str:
        return hashlib.sha256(prompt.encode("utf-8")).hexdigest()

    def get(self, key: tuple[str, str, str, str, str, str, str]) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT reply FROM verdicts WHERE benchmark=? AND strategy=? AND model=? AND item=? AND purpose=?"
                " AND prompt_sha=? AND judge=?", key).fetchone()
        return None if row is None else row[0]

    def put(self, key: tuple[str, str, str, str, str, str, str], reply: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO verdicts VALUES (?,?,?,?,?,?,?,?,?)", (*key, reply, time.time()))

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]

    def close(self) -> None:
        self._db.close()


class Ask:
    """The judge as the scorers see it: `ask.for_item(index)(purpose, prompt) -> reply or None`.
    A cached reply is returned without a call; otherwise the judge is called (if there is one) and
    its reply stored. `calls` and `hits` count what happened."""

    def __init__(self, judge: Judge | None = None, verdicts: Verdicts | None = None, benchmark: str = "",
                 strategy: str = "", model: str = "", judge_name: str | None = None, workers: int = 1) -> None:
        self.judge = judge
        self.verdicts = verdicts
        self.benchmark, self.strategy, self.model = benchmark, strategy, model
        self.judge_name = judge_name or getattr(judge, "name", None) or "judge"
        self.workers = max(1, workers)  # > 1: `prefetch` calls the judge from that many threads
        self.calls = 0
        self.hits = 0
        self._memo: dict[tuple, str] = {}
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        return self.judge is not None

    def _key(self, item: str, purpose: str, prompt: str) -> tuple:
        return (self.benchmark, self.strategy, self.model, str(item), purpose, Verdicts.sha(prompt), self.judge_name)

    def _cached(self, key: tuple) -> str | None:
        if key in self._memo:
            return self._memo[key]
        return self.verdicts.get(key) if self.verdicts is not None else None

    def __call__(self, item: str, purpose: str, prompt: str) -> str | None:
        key = self._key(item, purpose, prompt)
        hit = self._cached(key)
        if hit is not None:
            with self._lock:
                self.hits += 1
            return hit
        if self.judge is None:
            return None
        reply = self.judge(prompt)
        reply = "" if reply is None else str(reply)
        with self._lock:
            self.calls += 1
            self._memo[key] = reply
        if self.verdicts is not None:
            self.verdicts.put(key, reply)
        return reply

    def prefetch(self, requests: Iterable[tuple[str, str, str]]) -> None:
        """Ask the judge for every (item, purpose, prompt) not cached yet, from `workers` threads
        (the judge must then be thread-safe); later calls with the same request are cache hits."""
        if self.judge is None or self.workers <= 1:
            return
        todo = [r for r in requests if self._cached(self._key(*r)) is None]
        if not todo:
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.workers) as pool:
            list(pool.map(lambda r: self(*r), todo))

    def for_item(self, item: str) -> Callable[[str, str], str | None]:
        return lambda purpose, prompt: self(item, purpose, prompt)
