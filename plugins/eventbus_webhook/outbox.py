"""The durable webhook outbox: one SQLite file (WAL) holding every delivery until it succeeds
or becomes a dead letter, plus each endpoint's persisted state (disabled, last success/error).

The server and the ``eventbus webhook`` commands share it; nothing else is needed to inspect
or repair deliveries. The file and its ``-wal``/``-shm`` companions are private to the
server's user (0600, in a 0700 directory), because they hold event bodies.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eventbus.files import FILE_MODE, open_private, private_dir

SCHEMA_VERSION = 1
#: A row's life: ``intake`` (stored while the emitter waits, before the bus assigned
#: ``seq``; not yet attempted), ``pending`` (due for attempts), ``dead`` (a dead letter).
INTAKE, PENDING, DEAD = "intake", "pending", "dead"
SIDECARS = ("-wal", "-shm", "-journal")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    last_error TEXT,
    last_status INTEGER,
    updated_at REAL,
    UNIQUE (endpoint, event_id)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (endpoint, status, next_attempt_at);
CREATE TABLE IF NOT EXISTS endpoints (
    name TEXT PRIMARY KEY,
    disabled INTEGER NOT NULL DEFAULT 0,
    disabled_reason TEXT,
    disabled_at REAL,
    last_success_at REAL,
    last_error TEXT,
    last_error_at REAL,
    last_status INTEGER
);
"""

_ROW_COLUMNS = ("id, endpoint, event_id, event_type, body, created_at, attempts, next_attempt_at, "
                "status, last_error, last_status, updated_at")


@dataclass
class Delivery:
    """One event on its way to one endpoint."""

    id: int
    endpoint: str
    event_id: str
    event_type: str
    body: str
    created_at: float
    attempts: int
    next_attempt_at: float
    status: str
    last_error: str | None
    last_status: int | None
    updated_at: float | None

    def describe(self) -> dict[str, Any]:
        row = dict(self.__dict__)
        row.pop("body")
        return row


def _green_threads() -> bool:
    """Whether threads are greenlets here (a gevent or eventlet server's monkey patching)."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        return True
    patcher = sys.modules.get("eventlet.patcher")
    return patcher is not None and bool(patcher.is_monkey_patched("thread"))


class OutboxError(RuntimeError):
    """A write to the outbox failed; the message says why."""


@dataclass
class _Ticket:
    """One caller's rows waiting in a group commit."""

    rows: list[tuple[str, str, str, str, float]]
    done: bool = False
    error: str | None = None


class Outbox:
    """Thread-safe access to the outbox file.

    Two connections: ``ingest`` (new events) commits with ``synchronous=FULL`` so an accepted
    event survives even a power cut (and completes ``intake`` rows); ``work`` (attempt
    results, housekeeping, status) uses
    ``NORMAL``, where losing the last commits at worst repeats a delivery, which receivers
    drop by ``webhook-id``. Each connection has its own lock, so status reads and attempt
    bookkeeping never wait for each other's Python-side work. Writes of both connections
    also take one write lock: SQLite lets one writer in at a time and makes the others
    sleep-poll (a millisecond and more per try), while a Python lock hands over at once.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._ingest: sqlite3.Connection | None = None
        self._work: sqlite3.Connection | None = None
        self._ingest_lock = threading.Lock()
        self._work_lock = threading.Lock()
        self._write_lock = threading.Lock()  # always taken last, after a connection's lock
        self._group = threading.Condition(threading.Lock())
        self._group_waiting: list[_Ticket] = []
        self._group_committing = False
        self.group_commits = 0  # transactions written by enqueue_together
        # In a green server nothing else runs while a commit blocks in C, so a publisher
        # that is to commit first lets the others that are ready queue their rows.
        self._gather_first = _green_threads()
        self.closed = False

    # -- lifecycle -------------------------------------------------------------------
    def open(self) -> Outbox:
        self._make_private()
        self._work = self._connect("NORMAL")
        with self._work:
            self._work.executescript(_SCHEMA)
            self._work.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._ingest = self._connect("FULL")
        return self

    def _make_private(self) -> None:
        """Create the file 0600 (in a 0700 directory) before SQLite opens it, whatever the
        umask: SQLite gives the ``-wal`` and ``-shm`` files it creates later the database
        file's permissions. Companions left by an older version are tightened too."""
        private_dir(self.path.parent)
        open_private(self.path, "ab").close()
        for suffix in SIDECARS:
            sidecar = Path(str(self.path) + suffix)
            try:
                if stat.S_IMODE(sidecar.stat().st_mode) != FILE_MODE:
                    os.chmod(sidecar, FILE_MODE)
            except FileNotFoundError:
                pass

    def _connect(self, synchronous: str) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        return conn

    def close(self) -> None:
        with self._ingest_lock, self._work_lock:
            self.closed = True
            for conn in (self._ingest, self._work):
                if conn is not None:
                    conn.close()
            self._ingest = self._work = None

    def __enter__(self) -> Outbox:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, sql: str, params: Iterable[Any] = ()) -> int:
        with self._work_lock, self._write_lock:
            if self._work is None:
                return 0
            return self._work.execute(sql, tuple(params)).rowcount

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._work_lock:
            if self._work is None:
                return []
            return self._work.execute(sql, tuple(params)).fetchall()

    # -- ingest ------------------------------------------------------------------------
    def enqueue(self, rows: list[tuple[str, str, str, str, float]], now: float | None = None,
                status: str = PENDING) -> int:
        """Insert ``(endpoint, event_id, event_type, body, created_at)`` rows in one
        ``synchronous=FULL`` transaction, due immediately (``pending``) or held as ``intake``
        until :meth:`promote`. A row already present for the same endpoint and id is kept as
        is. Returns how many rows were added."""
        if not rows:
            return 0
        now = time.time() if now is None else now
        values = [(*row, now, status, now) for row in rows]
        with self._ingest_lock, self._write_lock:
            conn = self._ingest
            if conn is None:
                raise OutboxError("the webhook outbox is closed")
            return self._insert(conn, values)

    @staticmethod
    def _insert(conn: sqlite3.Connection, values: list[tuple[Any, ...]]) -> int:
        before = conn.total_changes
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT OR IGNORE INTO deliveries (endpoint, event_id, event_type, body, "
                "created_at, next_attempt_at, status, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                values)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return conn.total_changes - before

    def enqueue_together(self, rows: list[tuple[str, str, str, str, float]]) -> None:
        """Store ``rows`` as ``intake`` and return once they are committed (``FULL``), for
        callers that answer only after that. Concurrent callers share one transaction (group
        commit): whoever finds no commit running writes every waiting caller's rows, so N
        publishers at once cost one fsync, not N. Raises :class:`OutboxError` when the
        commit that held the rows failed."""
        ticket = _Ticket(rows)
        with self._group:
            self._group_waiting.append(ticket)
            while self._group_committing and not ticket.done:
                self._group.wait()
            if not ticket.done:
                self._group_committing = True
                batch, self._group_waiting = self._group_waiting, []
        if not ticket.done:
            if self._gather_first:
                time.sleep(0)  # one turn for every ready greenlet
                with self._group:
                    batch += self._group_waiting
                    self._group_waiting = []
            self._commit_group(batch)
        if ticket.error is not None:
            raise OutboxError(ticket.error)

    def _commit_group(self, batch: list[_Ticket]) -> None:
        error: str | None = "the commit was interrupted"
        try:
            self.enqueue([row for t in batch for row in t.rows], status=INTAKE)
            error = None
        except Exception as exc:  # noqa: BLE001 - every waiter gets the reason
            error = f"{type(exc).__name__}: {exc}"
        finally:  # even when interrupted, so the next caller can commit
            with self._group:
                self.group_commits += 1
                self._group_committing = False
                for t in batch:
                    t.done, t.error = True, error
                self._group.notify_all()

    def promote(self, rows: list[tuple[str, str, str, float]], now: float | None = None) -> int:
        """Make ``intake`` rows due: ``(endpoint, event_id, body, next_attempt_at)`` gives
        each its final body (with ``seq``). Rows no longer in ``intake`` are left alone, so
        a promotion that comes late never repeats a delivery. Returns how many rows changed.

        It runs on the ingest connection, which wrote the rows: a write through the other
        connection would make each discard its page cache in turn. ``NORMAL`` is enough: if
        the commit is lost, the rows are still stored and the next start promotes them."""
        if not rows:
            return 0
        now = time.time() if now is None else now
        values = [(body, due, now, endpoint, event_id) for endpoint, event_id, body, due in rows]
        with self._ingest_lock, self._write_lock:
            conn = self._ingest
            if conn is None:
                raise OutboxError("the webhook outbox is closed")
            before = conn.total_changes
            conn.execute("PRAGMA synchronous = NORMAL")
            try:
                with conn:
                    conn.execute("BEGIN")
                    conn.executemany("UPDATE deliveries SET body = ?, status = 'pending', next_attempt_at = ?, "
                                     "updated_at = ? WHERE endpoint = ? AND event_id = ? AND status = 'intake'",
                                     values)
            finally:
                conn.execute("PRAGMA synchronous = FULL")
            return conn.total_changes - before

    def promote_intake(self, stored_before: float | None = None, now: float | None = None) -> int:
        """Make due, with the body they were stored with (``seq`` null), the ``intake`` rows
        stored before ``stored_before`` (all when None): events whose emitter had its answer
        but whose hand-off to the webhook worker never came (a crash, a full worker queue)."""
        now = time.time() if now is None else now
        cutoff = float("inf") if stored_before is None else stored_before
        return self._write("UPDATE deliveries SET status = 'pending', next_attempt_at = ?, updated_at = ? "
                           "WHERE status = 'intake' AND updated_at < ?", (now, now, cutoff))

    # -- delivery bookkeeping ----------------------------------------------------------
    def due(self, endpoint: str, now: float, exclude: Iterable[int] = (), limit: int = 32) -> list[Delivery]:
        """Pending rows of ``endpoint`` whose time has come, oldest first, minus ``exclude``
        (rows already being attempted in this process)."""
        skip = tuple(exclude)
        not_in = f" AND id NOT IN ({','.join('?' * len(skip))})" if skip else ""
        rows = self._read(
            f"SELECT {_ROW_COLUMNS} FROM deliveries WHERE endpoint = ? AND status = 'pending' "
            f"AND next_attempt_at <= ?{not_in} ORDER BY next_attempt_at, id LIMIT ?",
            (endpoint, now, *skip, limit))
        return [Delivery(*row) for row in rows]

    def next_due(self, endpoint: str, exclude: Iterable[int] = ()) -> float | None:
        """When the next pending row of ``endpoint`` (outside ``exclude``) falls due."""
        skip = tuple(exclude)
        not_in = f" AND id NOT IN ({','.join('?' * len(skip))})" if skip else ""
        rows = self._read("SELECT MIN(next_attempt_at) FROM deliveries WHERE endpoint = ? "
                          f"AND status = 'pending'{not_in}", (endpoint, *skip))
        return rows[0][0] if rows else None

    def delivered(self, delivery: Delivery, status_code: int, now: float) -> None:
        with self._work_lock, self._write_lock:
            conn = self._work
            if conn is None:
                return
            with conn:
                conn.execute("BEGIN")
                conn.execute("DELETE FROM deliveries WHERE id = ?", (delivery.id,))
                self._upsert_endpoint(conn, delivery.endpoint, last_success_at=now, last_status=status_code)

    def failed(self, delivery: Delivery, *, attempts: int, error: str, status_code: int | None,
               now: float, next_attempt_at: float | None) -> None:
        """Record a failed attempt: retry at ``next_attempt_at``, or a dead letter when None."""
        with self._work_lock, self._write_lock:
            conn = self._work
            if conn is None:
                return
            with conn:
                conn.execute("BEGIN")
                if next_attempt_at is None:
                    conn.execute("UPDATE deliveries SET status = 'dead', attempts = ?, last_error = ?, "
                                 "last_status = ?, updated_at = ? WHERE id = ?",
                                 (attempts, error, status_code, now, delivery.id))
                else:
                    conn.execute("UPDATE deliveries SET attempts = ?, next_attempt_at = ?, last_error = ?, "
                                 "last_status = ?, updated_at = ? WHERE id = ?",
                                 (attempts, next_attempt_at, error, status_code, now, delivery.id))
                self._upsert_endpoint(conn, delivery.endpoint, last_error=error, last_error_at=now,
                                      last_status=status_code)

    @staticmethod
    def _upsert_endpoint(conn: sqlite3.Connection, name: str, **values: Any) -> None:
        columns = ", ".join(values)
        updates = ", ".join(f"{c} = excluded.{c}" for c in values)
        conn.execute(f"INSERT INTO endpoints (name, {columns}) VALUES (?{', ?' * len(values)}) "
                     f"ON CONFLICT(name) DO UPDATE SET {updates}", (name, *values.values()))

    # -- endpoint state ----------------------------------------------------------------
    def disable(self, name: str, reason: str, now: float | None = None) -> None:
        with self._work_lock, self._write_lock:
            if self._work is not None:
                self._upsert_endpoint(self._work, name, disabled=1, disabled_reason=reason,
                                      disabled_at=time.time() if now is None else now)

    def enable(self, name: str) -> bool:
        """Clear a recorded disable; True when the endpoint was disabled."""
        return self._write("UPDATE endpoints SET disabled = 0, disabled_reason = NULL, disabled_at = NULL "
                           "WHERE name = ? AND disabled = 1", (name,)) > 0

    def is_disabled(self, name: str) -> bool:
        rows = self._read("SELECT disabled FROM endpoints WHERE name = ?", (name,))
        return bool(rows and rows[0][0])

    def endpoint_states(self) -> dict[str, dict[str, Any]]:
        rows = self._read("SELECT name, disabled, disabled_reason, disabled_at, last_success_at, "
                          "last_error, last_error_at, last_status FROM endpoints")
        return {row[0]: {"disabled": bool(row[1]), "disabled_reason": row[2], "disabled_at": row[3],
                         "last_success_at": row[4], "last_error": row[5], "last_error_at": row[6],
                         "last_status": row[7]} for row in rows}

    # -- inspection and repair ---------------------------------------------------------
    def counts(self) -> dict[str, dict[str, int]]:
        """``{endpoint: {"pending": n, "dead": n}}``; ``pending`` includes ``intake`` rows."""
        result: dict[str, dict[str, int]] = {}
        for endpoint, status, count in self._read(
                "SELECT endpoint, status, COUNT(*) FROM deliveries GROUP BY endpoint, status"):
            row = result.setdefault(endpoint, {PENDING: 0, DEAD: 0})
            key = PENDING if status == INTAKE else status
            row[key] = row.get(key, 0) + count
        return result

    def oldest_pending(self) -> dict[str, float]:
        return dict(self._read("SELECT endpoint, MIN(created_at) FROM deliveries "
                               "WHERE status IN ('pending', 'intake') GROUP BY endpoint"))

    def dead_letters(self, endpoint: str | None = None, limit: int = 100) -> list[Delivery]:
        where, params = ("AND endpoint = ?", (endpoint,)) if endpoint else ("", ())
        rows = self._read(f"SELECT {_ROW_COLUMNS} FROM deliveries WHERE status = 'dead' {where} "
                          f"ORDER BY updated_at DESC, id DESC LIMIT ?", (*params, limit))
        return [Delivery(*row) for row in rows]

    def redeliver(self, ident: str | int | None = None, endpoint: str | None = None,
                  now: float | None = None) -> int:
        """Make dead letters (or waiting retries) due now with a fresh attempt count.
        ``ident`` is a row id or an event id; ``None`` means every dead letter (of
        ``endpoint`` when given). Returns how many rows were rescheduled."""
        now = time.time() if now is None else now
        clauses: list[str] = []
        params: list[str | int] = []
        if ident is None:
            clauses.append("status = 'dead'")
        elif str(ident).isdigit():
            clauses.append("id = ?")
            params.append(int(ident))
        else:
            clauses.append("event_id = ?")
            params.append(str(ident))
        if endpoint:
            clauses.append("endpoint = ?")
            params.append(endpoint)
        return self._write(
            "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?, updated_at = ? "
            f"WHERE {' AND '.join(clauses)}", (now, now, *params))

    # -- bounds ------------------------------------------------------------------------
    def expire(self, max_age: float, now: float) -> int:
        """Pending deliveries older than ``max_age`` become dead letters."""
        return self._write(
            "UPDATE deliveries SET status = 'dead', updated_at = ?, last_error = "
            "COALESCE(last_error || '; ', '') || 'expired: older than the outbox max_age' "
            "WHERE status = 'pending' AND created_at < ?", (now, now - max_age))

    def prune_dead(self, keep_per_endpoint: int, max_age: float, now: float) -> int:
        """Delete dead letters older than ``max_age`` and all but the newest
        ``keep_per_endpoint`` of each endpoint. Returns how many went."""
        removed = self._write("DELETE FROM deliveries WHERE status = 'dead' AND updated_at < ?",
                              (now - max_age,))
        removed += self._write(
            "DELETE FROM deliveries WHERE id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER "
            "(PARTITION BY endpoint ORDER BY updated_at DESC, id DESC) AS n FROM deliveries "
            "WHERE status = 'dead') WHERE n > ?)", (keep_per_endpoint,))
        return removed

    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            try:
                total += Path(str(self.path) + suffix).stat().st_size
            except FileNotFoundError:
                pass
        return total
