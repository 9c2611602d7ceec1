"""The durable webhook outbox: one SQLite file (WAL) holding every delivery until it succeeds
or becomes a dead letter, plus each endpoint's persisted state (disabled, last success/error).

The server and the ``eventbus webhook`` commands share it; nothing else is needed to inspect
or repair deliveries.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

SCHEMA_VERSION = 1
PENDING, DEAD = "pending", "dead"

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


class Outbox:
    """Thread-safe access to the outbox file.

    Two connections: ``ingest`` (new events) commits with ``synchronous=FULL`` so an accepted
    event survives even a power cut; ``work`` (attempt results, housekeeping, status) uses
    ``NORMAL``, where losing the last commits at worst repeats a delivery, which receivers
    drop by ``webhook-id``. Each connection has its own lock, so status reads and attempt
    bookkeeping never wait for each other's Python-side work.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._ingest: sqlite3.Connection | None = None
        self._work: sqlite3.Connection | None = None
        self._ingest_lock = threading.Lock()
        self._work_lock = threading.Lock()
        self.closed = False

    # -- lifecycle -------------------------------------------------------------------
    def open(self) -> "Outbox":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._work = self._connect("NORMAL")
        with self._work:
            self._work.executescript(_SCHEMA)
            self._work.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._ingest = self._connect("FULL")
        return self

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

    def __enter__(self) -> "Outbox":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, sql: str, params: Iterable[Any] = ()) -> int:
        with self._work_lock:
            if self._work is None:
                return 0
            return self._work.execute(sql, tuple(params)).rowcount

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._work_lock:
            if self._work is None:
                return []
            return self._work.execute(sql, tuple(params)).fetchall()

    # -- ingest ------------------------------------------------------------------------
    def enqueue(self, rows: list[tuple[str, str, str, str, float]], now: float | None = None) -> int:
        """Insert ``(endpoint, event_id, event_type, body, created_at)`` rows in one
        transaction, due immediately. A row already present for the same endpoint and id is
        kept as is. Returns how many rows were added."""
        if not rows:
            return 0
        now = time.time() if now is None else now
        with self._ingest_lock:
            conn = self._ingest
            if conn is None:
                raise RuntimeError("the webhook outbox is closed")
            before = conn.total_changes
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT OR IGNORE INTO deliveries (endpoint, event_id, event_type, body, "
                    "created_at, next_attempt_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(*row, now, now) for row in rows])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return conn.total_changes - before

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
        with self._work_lock:
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
        with self._work_lock:
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
        with self._work_lock:
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
        """``{endpoint: {"pending": n, "dead": n}}``."""
        result: dict[str, dict[str, int]] = {}
        for endpoint, status, count in self._read(
                "SELECT endpoint, status, COUNT(*) FROM deliveries GROUP BY endpoint, status"):
            result.setdefault(endpoint, {PENDING: 0, DEAD: 0})[status] = count
        return result

    def oldest_pending(self) -> dict[str, float]:
        return dict(self._read("SELECT endpoint, MIN(created_at) FROM deliveries "
                               "WHERE status = 'pending' GROUP BY endpoint"))

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
        clauses, params = [], []
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
