"""The request cache and its bill: one SQLite file (WAL), one row per exact request.

The key is a hash of the model, the parameters and the messages with every inline image replaced
by the sha256 of its bytes, so the same request is never paid for twice: not on a re-run, not after
a crash (each answer is committed before the turn that asked for it goes on), not on a
re-annotation whose prompt did not change. Each answer's tokens and cost are booked in `ledger`
in the same transaction. Batch ids live here too, so polling resumes after a restart. (The
spending cap's ledger, shared by every run, is the budget file: pipeline/annotate/budget.py.)

Online answers are written in groups (`put_async`): every answer that arrived in one turn of the
event loop is one transaction, and each waiting coroutine resumes only after it committed.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
import time
from collections import OrderedDict
from pathlib import Path

import orjson

from pipeline.annotate.sqlite import connect, try_begin

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    mode TEXT NOT NULL,             -- online | batch | offline
    response TEXT NOT NULL,         -- the chat completion JSON
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    key TEXT NOT NULL,
    model TEXT NOT NULL,
    mode TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    run_id TEXT
);
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,
    input_file_id TEXT NOT NULL,
    keys TEXT NOT NULL,             -- JSON list of [request key, model] in this batch
    status TEXT NOT NULL,           -- creating (batch_id 'creating:<file id>') | submitted | done
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
"""

_DATA_URL_PREFIX = "data:"
CREATING = "creating:"  # batch_id prefix of a batch recorded before the API was asked to create it


_HASHES: OrderedDict[str, str] = OrderedDict()  # data URL -> its image hash, for the last few images


def _image_hash(url: str) -> str:
    if not (url.startswith(_DATA_URL_PREFIX) and ";base64," in url):
        return url  # a remote URL is its own identity
    known = _HASHES.get(url)  # every attempt and judge call of a turn sends the same URL object
    if known is None:
        payload = url.split(";base64,", 1)[1]
        known = _HASHES[url] = "sha256:" + hashlib.sha256(base64.b64decode(payload)).hexdigest()
        if len(_HASHES) > 512:
            _HASHES.popitem(last=False)
    return known


def canonical_messages(messages: list[dict]) -> list[dict]:
    """Messages with inline images replaced by their content hash (for keys and for audit)."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            parts = []
            for p in content:
                if p.get("type") == "image_url":
                    img = dict(p["image_url"])
                    img["url"] = _image_hash(img["url"])
                    parts.append({"type": "image_url", "image_url": img})
                else:
                    parts.append(p)
            out.append({**m, "content": parts})
        else:
            out.append(m)
    return out


def request_key(model: str, messages: list[dict], params: dict) -> str:
    # The standard library's JSON on purpose: keys are a stored format (every paid answer is found
    # by its key), and orjson writes some floats differently.
    body = {"model": model, "messages": canonical_messages(messages), "params": params}
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class RequestCache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = connect(self.path)
        self._db.executescript(SCHEMA)
        self._adb = connect(self.path, timeout=0)  # the event loop's writes: never wait on another process
        self._pending: list[tuple[tuple, asyncio.Future]] = []
        self._flush_handle = None

    def close(self) -> None:
        if self._pending:
            self._write([row for row, _ in self._pending])
            for _, fut in self._pending:
                if not fut.done():
                    fut.set_result(None)
            self._pending = []
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._db.close()
        self._adb.close()

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._db.execute(
                "SELECT response, input_tokens, output_tokens, cost_usd, mode FROM responses WHERE key=?", (key,)
            ).fetchone()
        if row is None:
            return None
        return {"response": orjson.loads(row[0]), "input_tokens": row[1], "output_tokens": row[2],
                "cost_usd": row[3], "mode": row[4]}

    def has(self, key: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM responses WHERE key=?", (key,)).fetchone() is not None

    def put(self, key: str, model: str, mode: str, response: dict, input_tokens: int, output_tokens: int,
            cost_usd: float, run_id: str | None = None) -> None:
        """Store an answer and book its cost, in one transaction."""
        self._write([(key, model, mode, response, input_tokens, output_tokens, cost_usd, run_id)])

    async def put_async(self, key: str, model: str, mode: str, response: dict, input_tokens: int,
                        output_tokens: int, cost_usd: float, run_id: str | None = None) -> None:
        """`put`, grouped with the other answers of this turn of the event loop; returns once the
        answer is committed."""
        fut = asyncio.get_running_loop().create_future()
        self._pending.append(((key, model, mode, response, input_tokens, output_tokens, cost_usd, run_id), fut))
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)
        await asyncio.shield(fut)  # a cancelled waiter does not cancel the write of a paid answer

    def _flush(self) -> None:
        self._flush_handle = None
        if not self._pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        pending = self._pending
        try:
            written = self._write([row for row, _ in pending], wait=loop is None)
        except BaseException as exc:
            self._pending = []
            for _, fut in pending:
                if not fut.done():
                    fut.set_exception(exc)
            raise
        if not written:  # another process is writing: try again in a moment
            self._flush_handle = loop.call_later(0.002, self._flush)
            return
        self._pending = self._pending[len(pending):]
        for _, fut in pending:
            if not fut.done():
                fut.set_result(None)

    def _write(self, rows: list[tuple], wait: bool = True) -> bool:
        """Insert `rows` in one transaction; without `wait`, nothing (False) when another process
        holds the write lock (see sqlite.try_begin)."""
        now = time.time()
        db = self._db if wait else self._adb
        with self._lock:
            if wait:
                db.execute("BEGIN IMMEDIATE")
            elif not try_begin(db):
                return False
            try:
                for key, model, mode, response, input_tokens, output_tokens, cost_usd, run_id in rows:
                    cur = db.execute(
                        "INSERT OR IGNORE INTO responses VALUES (?,?,?,?,?,?,?,?)",
                        (key, model, mode, orjson.dumps(response).decode(), input_tokens, output_tokens, cost_usd, now),
                    )
                    if cur.rowcount:  # a duplicate answer (a race) is not booked twice
                        db.execute(
                            "INSERT INTO ledger (ts, key, model, mode, input_tokens, output_tokens, cost_usd, run_id)"
                            " VALUES (?,?,?,?,?,?,?,?)",
                            (now, key, model, mode, input_tokens, output_tokens, cost_usd, run_id),
                        )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return True

    def spent_usd(self, since: float | None = None) -> float:
        with self._lock:
            if since is None:
                row = self._db.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM ledger").fetchone()
            else:
                row = self._db.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM ledger WHERE ts >= ?", (since,)).fetchone()
        return float(row[0])

    def responses_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    # batches --------------------------------------------------------------------------------

    def begin_batch(self, input_file_id: str, keys: list[tuple[str, str]]) -> None:
        """Record a batch about to be created from an uploaded file, before asking for it: a crash
        between the API creating it and `add_batch` then leaves the file id to find it by."""
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO batches VALUES (?,?,?,?,?,?)",
                (CREATING + input_file_id, input_file_id, json.dumps([list(k) for k in keys]), "creating", now, now),
            )

    def add_batch(self, batch_id: str, input_file_id: str, keys: list[tuple[str, str]]) -> None:
        """Record a submitted batch: its request keys with the model each asked for (and forget
        the `begin_batch` record of its file, in the same transaction)."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM batches WHERE batch_id=?", (CREATING + input_file_id,))
                self._db.execute(
                    "INSERT OR REPLACE INTO batches VALUES (?,?,?,?,?,?)",
                    (batch_id, input_file_id, json.dumps([list(k) for k in keys]), "submitted", now, now),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def creating_batches(self) -> list[tuple[str, list[list[str]], float]]:
        """(input file id, keys, when) of batches that were being created when a run stopped."""
        with self._lock:
            rows = self._db.execute(
                "SELECT input_file_id, keys, created_at FROM batches WHERE status='creating' ORDER BY created_at"
            ).fetchall()
        return [(f, json.loads(k), t) for f, k, t in rows]

    def drop_batch(self, batch_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM batches WHERE batch_id=?", (batch_id,))

    def open_batches(self) -> list[tuple[str, list[list[str]]]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT batch_id, keys FROM batches WHERE status='submitted' ORDER BY created_at"
            ).fetchall()
        return [(b, json.loads(k)) for b, k in rows]

    def close_batch(self, batch_id: str) -> None:
        with self._lock:
            self._db.execute("UPDATE batches SET status='done', updated_at=? WHERE batch_id=?", (time.time(), batch_id))
