"""Requests-per-minute and tokens-per-minute budgets, shared by every process on a host.

Two token buckets live in one SQLite row, so two annotation partitions running at once in
separate processes draw from one budget and together never exceed the account's limits. A 429
pauses everyone until its Retry-After has passed. (Written by hand: the rate-limit libraries on
PyPI keep their buckets in one process's memory.)
"""
from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rate_budget (
    name TEXT PRIMARY KEY,
    requests REAL NOT NULL,
    tokens REAL NOT NULL,
    updated REAL NOT NULL,
    paused_until REAL NOT NULL
)
"""


class SharedRateLimiter:
    def __init__(self, path: str | Path, rpm: int, tpm: int, name: str = "default", clock=time.time) -> None:
        if rpm <= 0 or tpm <= 0:
            raise ValueError("rpm and tpm must be positive")
        self.rpm, self.tpm, self.name, self.clock = rpm, tpm, name, clock
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, timeout=30, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # No fsync per transaction (the default FULL syncs the WAL on every commit: ~3.6 ms per
        # request on this machine's disk, more than everything else the client does). A killed
        # process still loses no commit in WAL mode; a power loss may forget the last budget
        # updates, which only lets a few requests through early.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._db.execute(
            "INSERT OR IGNORE INTO rate_budget VALUES (?,?,?,?,0)", (name, float(rpm), float(tpm), self.clock())
        )
        self.waited_s = 0.0

    def close(self) -> None:
        self._db.close()

    def _try(self, tokens: int) -> float:
        """Take one request and `tokens` if both buckets have them; else return seconds to wait."""
        tokens = min(tokens, self.tpm)  # one request larger than a minute's budget waits for a full bucket
        now = self.clock()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            req, tok, updated, paused = self._db.execute(
                "SELECT requests, tokens, updated, paused_until FROM rate_budget WHERE name=?", (self.name,)
            ).fetchone()
            elapsed = max(0.0, now - updated)
            req = min(self.rpm, req + elapsed * self.rpm / 60.0)
            tok = min(self.tpm, tok + elapsed * self.tpm / 60.0)
            if now < paused:
                wait = paused - now
            elif req >= 1 and tok >= tokens:
                req, tok, wait = req - 1, tok - tokens, 0.0
            else:
                wait = max((1 - req) * 60.0 / self.rpm if req < 1 else 0.0,
                           (tokens - tok) * 60.0 / self.tpm if tok < tokens else 0.0)
            self._db.execute(
                "UPDATE rate_budget SET requests=?, tokens=?, updated=? WHERE name=?", (req, tok, now, self.name)
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return wait

    async def acquire(self, tokens: int) -> None:
        while True:
            wait = self._try(tokens)
            if wait <= 0:
                return
            wait = min(wait, 5.0) + 0.001
            self.waited_s += wait
            await asyncio.sleep(wait)

    def pause(self, seconds: float) -> None:
        """Hold every request (in every process) for `seconds`: the server said Retry-After."""
        until = self.clock() + max(0.0, seconds)
        self._db.execute(
            "UPDATE rate_budget SET paused_until=MAX(paused_until, ?) WHERE name=?", (until, self.name)
        )


def retry_after_seconds(headers, resets: bool = True) -> float | None:
    """Seconds to wait from a response's headers: `retry-after-ms`, `retry-after` (seconds or an
    HTTP date), else (with `resets`, for a 429) the x-ratelimit reset headers ("1s", "6m0s", "20ms").
    The reset headers say when the rate budget is full again, which means nothing for a 5xx: a
    server error passes resets=False and backs off with jitter unless told a Retry-After."""
    if headers is None:
        return None
    get = headers.get
    if get("retry-after-ms"):
        try:
            return float(get("retry-after-ms")) / 1000.0
        except ValueError:
            pass
    ra = get("retry-after")
    if ra:
        try:
            return float(ra)
        except ValueError:
            from email.utils import parsedate_to_datetime

            try:
                return max(0.0, parsedate_to_datetime(ra).timestamp() - time.time())
            except (TypeError, ValueError):
                pass
    if not resets:
        return None
    found = [parse_duration(get(h)) for h in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens") if get(h)]
    found = [r for r in found if r is not None]
    return max(found) if found else None


def remaining_budget(headers) -> tuple[float | None, float | None]:
    """(requests, tokens) the account has left by the x-ratelimit-remaining-* headers; None where
    a header is missing or unreadable."""
    out = []
    for h in ("x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens"):
        value = headers.get(h) if headers is not None else None
        try:
            out.append(float(value) if value is not None else None)
        except ValueError:
            out.append(None)
    return out[0], out[1]


def parse_duration(text: str) -> float | None:
    """'1s', '6m0s', '20ms', '1h2m3.5s' -> seconds."""
    import re

    if not text:
        return None
    total, matched = 0.0, False
    for value, unit in re.findall(r"([\d.]+)(ms|h|m|s)", text):
        matched = True
        total += float(value) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total if matched else None
