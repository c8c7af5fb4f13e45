"""Where the shared budget lives: a SQLite file (one host: every process on it), or a PostgreSQL
database (every host that reaches it: a team's runs on several machines or pods share one rate
budget and one spending cap). Both give SharedBudget the same few operations; its SQL is written
once, with `?` placeholders.

SQLite's WAL mode needs shared memory between the processes using a file, so a SQLite budget file
must not be shared across hosts over a network file system: use PostgreSQL for that.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.annotate.sqlite import connect, try_begin

TABLES = """
CREATE TABLE IF NOT EXISTS rate_budget (
    name TEXT PRIMARY KEY,
    requests DOUBLE PRECISION NOT NULL,
    tokens DOUBLE PRECISION NOT NULL,
    updated DOUBLE PRECISION NOT NULL,
    paused_until DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS spend (
    id {id_column},
    budget TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    run_id TEXT,
    key TEXT NOT NULL,              -- the request's cache key
    model TEXT NOT NULL,
    mode TEXT NOT NULL,             -- online | batch
    reserved_usd DOUBLE PRECISION NOT NULL,  -- the most the request can cost, booked before it is sent
    cost_usd DOUBLE PRECISION,               -- what it cost, once settled
    state TEXT NOT NULL             -- held (in flight, or lost to a kill) | paid | released (not billed)
);
CREATE INDEX IF NOT EXISTS spend_held ON spend (key) WHERE state = 'held';
CREATE TABLE IF NOT EXISTS spend_total (
    budget TEXT PRIMARY KEY,
    paid_usd DOUBLE PRECISION NOT NULL,
    held_usd DOUBLE PRECISION NOT NULL
)
"""
ROWS = ("INSERT INTO rate_budget VALUES (?,?,?,?,0) ON CONFLICT DO NOTHING",
        "INSERT INTO spend_total VALUES (?,0,0) ON CONFLICT DO NOTHING")


def is_database_url(location: str | Path) -> bool:
    return str(location).startswith(("postgresql://", "postgres://"))


def open_store(location: str | Path, name: str, budget: str, rpm: float, tpm: float, now: float):
    store = PostgresStore(str(location)) if is_database_url(location) else SqliteStore(location)
    store.create(name, budget, rpm, tpm, now)
    return store


class SqliteStore:
    def __init__(self, path: str | Path) -> None:
        self._db = connect(path)  # waits for another process's lock (start-up, closing, reports)
        self._adb = connect(path, timeout=0)  # the event loop's writes: never wait
        self._in = self._db

    def create(self, name: str, budget: str, rpm: float, tpm: float, now: float) -> None:
        self._db.executescript(TABLES.format(id_column="INTEGER PRIMARY KEY AUTOINCREMENT"))
        self._db.execute(ROWS[0], (name, rpm, tpm, now))
        self._db.execute(ROWS[1], (budget,))

    def begin(self, wait: bool) -> bool:
        """Start a write transaction; without `wait`, False at once if another process writes."""
        if wait:
            self._in = self._db
            self._db.execute("BEGIN IMMEDIATE")
            return True
        self._in = self._adb
        return try_begin(self._adb)

    def execute(self, sql: str, params: tuple = ()):
        return self._in.execute(sql, params)

    def commit(self) -> None:
        self._in.execute("COMMIT")

    def rollback(self) -> None:
        self._in.execute("ROLLBACK")

    def read(self, sql: str, params: tuple = ()):
        return self._db.execute(sql, params).fetchone()

    def close(self) -> None:
        self._db.close()
        self._adb.close()


class PostgresStore:
    """The same tables in PostgreSQL (psycopg2, installed with the team deployment's PostgreSQL storage). A
    write transaction takes the budget's rows with SELECT ... FOR UPDATE (NOWAIT from the event
    loop), the equivalent of SQLite's BEGIN IMMEDIATE for these rows."""

    def __init__(self, url: str) -> None:
        import psycopg2

        self._errors = psycopg2.errors
        self._db = psycopg2.connect(url)
        self._db.autocommit = False
        self._locks: tuple = ()

    def create(self, name: str, budget: str, rpm: float, tpm: float, now: float) -> None:
        cur = self._db.cursor()
        cur.execute("SELECT pg_advisory_xact_lock(7436541)")  # two first runs creating the tables at once
        for statement in TABLES.format(id_column="BIGSERIAL PRIMARY KEY").split(";"):
            cur.execute(statement)
        cur.execute(ROWS[0].replace("?", "%s"), (name, rpm, tpm, now))
        cur.execute(ROWS[1].replace("?", "%s"), (budget,))
        self._db.commit()
        self._locks = (name, budget)

    def begin(self, wait: bool) -> bool:
        nowait = "" if wait else " NOWAIT"
        cur = self._db.cursor()
        try:
            cur.execute("SELECT 1 FROM rate_budget WHERE name=%s FOR UPDATE" + nowait, (self._locks[0],))
            cur.execute("SELECT 1 FROM spend_total WHERE budget=%s FOR UPDATE" + nowait, (self._locks[1],))
            return True
        except self._errors.LockNotAvailable:
            self._db.rollback()
            return False

    def execute(self, sql: str, params: tuple = ()):
        cur = self._db.cursor()
        cur.execute(sql.replace("?", "%s"), params)
        return cur

    def commit(self) -> None:
        self._db.commit()

    def rollback(self) -> None:
        self._db.rollback()

    def read(self, sql: str, params: tuple = ()):
        row = self.execute(sql, params).fetchone()
        self._db.commit()
        return row

    def close(self) -> None:
        self._db.close()
