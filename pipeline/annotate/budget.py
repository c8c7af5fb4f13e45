"""The teacher's shared budget: requests and tokens per minute, and dollars across runs.

One store holds both: a SQLite file (WAL; by default `<data root>/teacher/rate_budget.sqlite`) for
the processes of one host, or a PostgreSQL database (`postgresql://...`) for several hosts
(pipeline/annotate/budget_store.py):

- the rate buckets, one row per endpoint: every partition and run, in every process that opens
  the file (on every host that mounts it), draws from one budget and together they never exceed
  the account's limits; a pause (sustained 429s, a spent budget) holds them all;
- the spend ledger, one row per request: it is written *before* the request is sent, holding the
  most the request can cost (its reservation), and settled with the real cost once the answer is
  stored. The spending cap compares settled costs plus open reservations with the cap, so a
  request in flight when a run was killed counts as spent (the provider may have billed it), and
  the cap holds across partitions, runs and processes.

Writes are grouped: the acquisitions and settlements asked for in one turn of the event loop are
one transaction (at hundreds of requests a second a commit each would cost more than the rest of
the client). An acquisition resolves only after its transaction committed, so no request is ever
sent before its reservation is on disk. Written by hand: the rate-limit libraries on PyPI keep
their buckets in one process's memory, and none keeps a spend ledger.
"""
from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.annotate.budget_store import open_store

class SpendCapReached(Exception):
    pass


@dataclass
class _Ask:
    tokens: int
    reserve_usd: float
    key: str
    model: str
    mode: str
    run_id: str | None
    rate: bool
    fut: asyncio.Future
    since: float = field(default_factory=time.monotonic)
    waited: bool = False


class SharedBudget:
    """`rpm`/`tpm` None: no rate limit (offline, or the Batch API's own queue); `cap_usd` None: no
    spending cap (spend is still recorded)."""

    def __init__(self, path: str | Path, rpm: int | None = None, tpm: int | None = None, name: str = "default",
                 cap_usd: float | None = None, budget: str = "default", clock=time.time) -> None:
        if (rpm is not None and rpm <= 0) or (tpm is not None and tpm <= 0):
            raise ValueError("requests_per_minute and tokens_per_minute must be positive")
        self.rpm, self.tpm, self.name, self.cap_usd, self.budget = rpm, tpm, name, cap_usd, budget
        self.clock, self.path = clock, str(path)
        self._lock = threading.Lock()
        self._store = open_store(path, name, budget, float(rpm or 0), float(tpm or 0), clock())
        self._asks: list[_Ask] = []
        self._ops: list[tuple] = []  # ("settle", id, cost) | ("settle_key", key, cost) | ("pause", until)
        self._flush_handle = None
        self._wake_handle = None
        self.waited_s = 0.0  # time acquisitions spent waiting for the rate budget (or a pause)
        self.transactions = 0

    # -- asking ------------------------------------------------------------------------------

    async def acquire(self, tokens: int = 0, reserve_usd: float = 0.0, key: str = "", model: str = "",
                      mode: str = "online", run_id: str | None = None, rate: bool = True) -> int:
        """Wait for one request and `tokens` of the rate budget (with `rate`), then record the
        reservation; its id. SpendCapReached if the reservation would pass the cap."""
        loop = asyncio.get_running_loop()
        ask = _Ask(int(tokens), float(reserve_usd), key, model, mode, run_id, rate, loop.create_future())
        self._asks.append(ask)
        self._schedule()
        return await ask.fut

    def settle(self, reservation: int | None, cost_usd: float | None) -> None:
        """The request's real cost (0: it was not billed; None: it may have been, keep it held)."""
        if reservation is not None and cost_usd is not None:
            self._ops.append(("settle", reservation, float(cost_usd)))
            self._schedule()

    def settle_key(self, key: str, cost_usd: float) -> None:
        """Settle the oldest held batch reservation of request `key` (a batch answered after the
        run that submitted it was stopped)."""
        self._ops.append(("settle_key", key, float(cost_usd)))
        self._schedule()

    def pause(self, seconds: float) -> None:
        """Hold every request (in every process sharing the file) for `seconds`."""
        self._ops.append(("pause", self.clock() + max(0.0, seconds)))
        self._schedule()

    def spent(self) -> dict:
        """{'paid', 'held', 'total'} in USD for this budget, across every run recorded."""
        self.flush()
        with self._lock:
            paid, held = self._store.read("SELECT paid_usd, held_usd FROM spend_total WHERE budget=?", (self.budget,))
        return {"paid": paid, "held": held, "total": paid + held}

    def requests_by_state(self) -> dict[str, tuple[int, float]]:
        """state -> (requests, USD: reserved while held, else paid), for this budget."""
        self.flush()
        out = {}
        for state in ("held", "paid", "released"):
            with self._lock:
                n, usd = self._store.read(
                    "SELECT COUNT(*), COALESCE(SUM(CASE WHEN state='held' THEN reserved_usd ELSE cost_usd END), 0)"
                    " FROM spend WHERE budget=? AND state=?", (self.budget, state))
            out[state] = (n, usd)
        return out

    def flush(self) -> None:
        """Write what is queued now (settlements, pauses, acquisitions that fit)."""
        self._flush()

    def close(self) -> None:
        self._flush()
        for ask in self._asks:
            if not ask.fut.done():
                ask.fut.cancel()
        self._asks = []
        for h in (self._flush_handle, self._wake_handle):
            if h is not None:
                h.cancel()
        self._store.close()

    # -- the grouped transaction ----------------------------------------------------------------

    def _schedule(self) -> None:
        if self._flush_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._flush()
            return
        self._flush_handle = loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if not self._ops and not self._asks:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            if not self._store.begin(wait=loop is None):  # another process is writing: try again in a moment
                self._wake_later(0.002)
                return
            self._write(self._store)

    def _write(self, db) -> None:
        """One transaction (begun by the caller): every queued settlement and pause, then every
        acquisition that fits; the waiting ones are asked again when they can fit."""
        ops, self._ops = self._ops, []
        asks = [a for a in self._asks if not a.fut.done()]
        self._asks = []
        try:
            granted, waiting = self._decide(db, ops, asks, self.clock())
            db.commit()
            self.transactions += 1
        except BaseException as exc:
            db.rollback()
            for ask in asks:
                if not ask.fut.done():
                    ask.fut.set_exception(exc)
            raise
        done = time.monotonic()
        for ask, result in granted:
            if ask.fut.done():  # cancelled while its reservation was written: nothing was sent
                if isinstance(result, int):
                    self.settle(result, 0.0)
                continue
            if ask.waited:
                self.waited_s += done - ask.since
            if isinstance(result, Exception):
                ask.fut.set_exception(result)
            else:
                ask.fut.set_result(result)
        if waiting:
            for ask, _ in waiting:
                ask.waited = True
            self._asks = [a for a, _ in waiting] + self._asks
            self._wake_later(min(w for _, w in waiting))

    def _decide(self, db, ops: list[tuple], asks: list[_Ask], now: float):
        """(granted: [(ask, reservation id or SpendCapReached)], waiting: [(ask, seconds)])."""
        req, tok, updated, paused = db.execute(
            "SELECT requests, tokens, updated, paused_until FROM rate_budget WHERE name=?", (self.name,)).fetchone()
        paid, held = db.execute("SELECT paid_usd, held_usd FROM spend_total WHERE budget=?", (self.budget,)).fetchone()
        elapsed = max(0.0, now - updated)
        if self.rpm:
            req = min(self.rpm, req + elapsed * self.rpm / 60.0)
        if self.tpm:
            tok = min(self.tpm, tok + elapsed * self.tpm / 60.0)
        for op in ops:
            if op[0] == "pause":
                paused = max(paused, op[1])
            else:
                paid, held = self._settle(db, op, paid, held)
        granted, waiting = [], []
        for ask in asks:
            need = min(ask.tokens, self.tpm or 0)  # larger than a minute's budget: wait for a full bucket
            if ask.rate and (self.rpm or self.tpm):
                short = max((1 - req) * 60.0 / self.rpm if self.rpm and req < 1 else 0.0,
                            (need - tok) * 60.0 / self.tpm if self.tpm and tok < need else 0.0)
                if now < paused or short > 0:
                    waiting.append((ask, max(paused - now, short)))
                    continue
            if self.cap_usd is not None and paid + held + ask.reserve_usd > self.cap_usd + 1e-12:
                granted.append((ask, SpendCapReached(
                    f"spending cap ${self.cap_usd:.2f} reached: ${paid:.4f} paid and ${held:.4f} held by requests "
                    f"in flight (or lost to a stopped run), across every run of budget {self.budget!r}")))
                continue
            if ask.rate:
                req, tok = (req - 1 if self.rpm else req), (tok - need if self.tpm else tok)
            (rid,) = db.execute(
                "INSERT INTO spend (budget, ts, run_id, key, model, mode, reserved_usd, cost_usd, state)"
                " VALUES (?,?,?,?,?,?,?,NULL,'held') RETURNING id",
                (self.budget, now, ask.run_id, ask.key, ask.model, ask.mode, ask.reserve_usd)).fetchone()
            held += ask.reserve_usd
            granted.append((ask, rid))
        db.execute("UPDATE rate_budget SET requests=?, tokens=?, updated=?, paused_until=? WHERE name=?",
                   (req, tok, now, paused, self.name))
        db.execute("UPDATE spend_total SET paid_usd=?, held_usd=? WHERE budget=?", (paid, held, self.budget))
        return granted, waiting

    def _settle(self, db, op: tuple, paid: float, held: float) -> tuple[float, float]:
        kind, ref, cost = op
        state = "paid" if cost > 0 else "released"
        if kind == "settle":
            row = db.execute("UPDATE spend SET cost_usd=?, state=? WHERE id=? AND state='held' RETURNING reserved_usd",
                             (cost, state, ref)).fetchone()
        else:  # the oldest held batch reservation of this request
            row = db.execute("UPDATE spend SET cost_usd=?, state=? WHERE id=(SELECT id FROM spend WHERE key=? AND "
                             "state='held' AND mode='batch' ORDER BY id LIMIT 1) RETURNING reserved_usd",
                             (cost, state, ref)).fetchone()
        return (paid, held) if row is None else (paid + cost, held - row[0])

    def _wake_later(self, seconds: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        when = loop.time() + min(max(seconds, 0.0), 5.0) + 0.001
        if self._wake_handle is not None:
            if self._wake_handle.when() <= when:
                return  # an earlier wake-up is already due
            self._wake_handle.cancel()
        self._wake_handle = loop.call_at(when, self._wake)

    def _wake(self) -> None:
        self._wake_handle = None
        self._schedule()
