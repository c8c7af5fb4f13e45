"""The teacher's SQLite files (request cache, shared budget): opened the same way, and written from
the event loop without ever blocking it on another process's lock."""
from __future__ import annotations

import sqlite3
from pathlib import Path


def connect(path: str | Path, timeout: float = 30.0) -> sqlite3.Connection:
    """WAL, and no fsync per commit (FULL costs ~3.6 ms a commit on this machine's disk): a killed
    process still loses no commit in WAL mode; a power loss may forget the last few. `timeout`:
    how long a write waits for another process's lock (0: not at all, see `try_begin`)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), isolation_level=None, timeout=timeout, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def try_begin(db: sqlite3.Connection) -> bool:
    """BEGIN IMMEDIATE on a connection opened with timeout 0: False at once when another process
    holds the write lock. SQLite's own busy wait sleeps (1, 2, 5, 10 ... ms) inside the call, which
    on the event loop would stall every request in flight; the caller retries a moment later."""
    try:
        db.execute("BEGIN IMMEDIATE")
        return True
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return False
        raise
