"""Agents in other processes: a bus that does not serve, and has no Redis, forwards its events
to the local server over HTTP.

Where the server is: ``EVENTBUS_URL``, else ``<EVENTBUS_DATA_DIR>/server.json``, which
``eventbus serve`` writes (mode 0600, in the private data dir) while it listens, with its
``url``, ``pid`` and ``started_at``, and removes when it stops; a file whose process is gone,
or whose URL does not answer, is ignored. A port is never probed on the chance that a
server listens there: another local user's program could answer, and would get the events
and the token.

Delivery: events wait in a bounded buffer (``EVENTBUS_FORWARD_BUFFER``; when it is full the
oldest is dropped and counted) and go to ``POST /api/events`` in batches (JSON arrays) on one
keep-alive connection, one batch in flight at a time, in emit order. A failed batch is sent
again, the same batch with the same event ids, after a growing pause; the server publishes
each id once, so a retry never delivers an event twice. With no server to be found the
forwarder says so once (a WARNING line, which Python prints on stderr when logging is not
configured), keeps buffering and keeps looking; what it could not deliver by
:meth:`Forwarder.close` is counted as dropped and reported in one line.

The token is ``EVENTBUS_TOKEN``, else one minted through the ``eventbus_issue_token`` hook
(the auth plugin signs it with the local secret key) for user :data:`TOKEN_USER` with roles
``publisher`` and ``agent``, so events keep their own ``user_id`` and ``source``.

Only the standard library is used (``http.client``): the core needs no HTTP package.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .redact import clean, redact_url

if TYPE_CHECKING:
    from .config import Config
    from .events import Event

log = logging.getLogger("eventbus.forwarder")

#: The server file's name in the data dir.
SERVER_FILE = "server.json"
#: User and roles of the token an agent process mints for itself.
TOKEN_USER = "agent-process"
TOKEN_ROLES = ("publisher", "agent")
#: Lifetime of a minted token (seconds); a new one is minted at half of it.
TOKEN_TTL = 3600
#: Most events, and most body bytes, in one batch (the server's defaults allow more).
BATCH_EVENTS = 500
BATCH_BYTES = 1024 * 1024
#: First and longest pause between attempts (seconds); each failure doubles it.
BACKOFF = (0.1, 2.0)
#: Seconds to wait for the server's answer to a batch, and for a probe of /api/health.
REQUEST_TIMEOUT = 10.0
PROBE_TIMEOUT = 2.0


# -- the server file ----------------------------------------------------------------------

def server_url(host: str, port: int) -> str:
    """The URL a local client uses for a server listening on ``host:port`` (a wildcard
    address becomes the loopback address)."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def server_file(config: Config) -> Path:
    return config.data_path / SERVER_FILE


def write_server_file(config: Config, url: str) -> Path:
    """Announce a listening server: ``{"url", "pid", "started_at"}`` in the data dir
    (created 0700), written 0600 through a temporary file and renamed into place, so a
    reader never sees half a file. Returns the path."""
    from .files import open_private

    path = config.ensure_data_dir() / SERVER_FILE
    temporary = path.with_name(f".{SERVER_FILE}.{os.getpid()}")
    with open_private(temporary, "w", encoding="utf-8") as fh:
        json.dump({"url": url, "pid": os.getpid(), "started_at": time.time()}, fh)
    os.replace(temporary, path)
    return path


def announce(config: Config, host: str, port: int) -> Path | None:
    """:func:`write_server_file` for a server listening on ``host:port``; a data dir that
    cannot be written is logged (agents then need ``EVENTBUS_URL``) and ``None`` returned."""
    try:
        return write_server_file(config, server_url(host, port))
    except OSError as exc:
        log.warning("cannot write %s (%s): agents in other processes need EVENTBUS_URL to find "
                    "this server", server_file(config), exc.strerror or exc)
        return None


def remove_server_file(path: Path | None) -> None:
    """Remove the server file at ``path`` if this process wrote it (another server may have
    replaced it since)."""
    if path is None:
        return
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def read_server_file(config: Config) -> dict[str, Any] | None:
    """The server file's content when it names a live process and an http(s) URL."""
    try:
        info = json.loads(server_file(config).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not isinstance(info.get("url"), str):
        return None
    pid = info.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or not pid_alive(pid):
        return None
    if urlsplit(info["url"]).scheme not in ("http", "https"):
        return None
    return info


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one of another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


# -- HTTP ---------------------------------------------------------------------------------

def _connection(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    """A connection to ``url``'s host and the URL's path prefix (without a trailing ``/``)."""
    parts = urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    return cls(parts.hostname or "127.0.0.1", parts.port, timeout=timeout), parts.path.rstrip("/")


def probe(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether ``url`` answers ``GET /api/health`` as an eventbus server does (a JSON object
    with ``status`` and ``transports``, whatever the HTTP status)."""
    try:
        conn, prefix = _connection(url, timeout)
    except (ValueError, OSError):
        return False
    try:
        conn.request("GET", f"{prefix}/api/health", headers={"Accept": "application/json"})
        response = conn.getresponse()
        body = json.loads(response.read(64 * 1024))
        return isinstance(body, dict) and "status" in body and "transports" in body
    except (OSError, ValueError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def locate(config: Config) -> tuple[str | None, str]:
    """``(url, how)`` of the server to forward to; ``(None, what was tried)`` when none."""
    if config.url:
        return config.url, "EVENTBUS_URL"
    path = server_file(config)
    info = read_server_file(config)
    if info is not None and probe(info["url"]):
        return info["url"], str(path)
    tried = f"no live server file at {path}" if info is None else f"{path} names a server that does not answer"
    return None, f"EVENTBUS_URL is not set and {tried}"


class _Channel:
    """One keep-alive HTTP connection to the server, opened again after any failure."""

    def __init__(self, url: str):
        self.url = url
        self._conn: http.client.HTTPConnection | None = None
        self._prefix = ""

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self._conn is None:
            self._conn, self._prefix = _connection(self.url, REQUEST_TIMEOUT)
        try:
            self._conn.request("POST", self._prefix + path, body=body, headers=headers)
            response = self._conn.getresponse()
            data = response.read()
            if response.will_close:
                self.close()
            return response.status, data
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def wire_item(event: Event) -> dict[str, Any]:
    """One batch item: the envelope's fields the server accepts from an agent process.
    ``user_id`` and ``source`` are sent even when ``None`` (the event has none)."""
    item: dict[str, Any] = {"id": event.id, "type": event.type, "data": event.data, "room": event.room,
                            "user_id": event.user_id, "source": event.source}
    if event.session_id is not None:
        item["session_id"] = event.session_id
    return item


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"[:200]


# -- the forwarder ------------------------------------------------------------------------

class Forwarder:
    """Sends a bus's events to the server, in order, in batches, from one background task.

    :param config: the bus settings (``url``, ``data_dir``, ``port``, ``forward_buffer``,
        ``env["EVENTBUS_TOKEN"]``).
    :param issue_token: returns a fresh token (or ``None``); called when one is needed.
    """

    def __init__(self, config: Config, issue_token: Callable[[], str | None]):
        self.config = config
        self.buffer_size = config.forward_buffer
        self._issue_token = issue_token
        self._buffer: deque[Event] = deque()
        self._inflight: list[Event] = []
        self._cond = threading.Condition(threading.Lock())
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._started = False
        self._closing = False
        self._abandoned = False
        self._limit = BATCH_EVENTS
        self._channel: _Channel | None = None
        self._token: str | None = None
        self._token_at = 0.0
        self._warned_no_server = False
        self._failing = False
        self.url: str | None = None
        self.found_by: str | None = None
        self.state = "idle"
        self.last_error: str | None = None
        self.counters = {"sent": 0, "retries": 0, "dropped": 0, "rejected": 0, "duplicates": 0}

    # -- the emitting side (any thread) ------------------------------------------------
    def submit(self, event: Event) -> None:
        """Buffer ``event``; never blocks. When the buffer is full the oldest waiting event
        (not one of the batch in flight) is dropped."""
        with self._cond:
            self._buffer.append(event)
            if len(self._buffer) + len(self._inflight) > self.buffer_size:
                dropped = self._buffer.popleft()
                self.counters["dropped"] += 1
                if self.counters["dropped"] == 1 or self.counters["dropped"] % 1000 == 0:
                    log.warning("forwarder buffer full (%d events, EVENTBUS_FORWARD_BUFFER): dropped the "
                                "oldest, %s; %d dropped so far", self.buffer_size, dropped.id,
                                self.counters["dropped"])
            self._cond.notify()

    @property
    def buffered(self) -> int:
        return len(self._buffer) + len(self._inflight)

    # -- life cycle -------------------------------------------------------------------
    def start(self, spawn: Callable[[Callable[[], None]], Any]) -> None:
        if self._started:
            return
        self._started = True
        spawn(self._run)

    def close(self, timeout: float = 5.0) -> bool:
        """Deliver what is buffered within ``timeout`` seconds, then stop. With no server to
        be found it stops at once. Whatever is left is dropped, counted and reported in one
        WARNING line. Returns True when nothing was left."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._wake.set()
        if self._started:
            self._stopped.wait(timeout)
        with self._cond:
            self._abandoned = True
            left = self.buffered
            self._buffer.clear()
            self._inflight.clear()
            self._cond.notify_all()
        self._wake.set()
        if left:
            self.counters["dropped"] += left
            why = (f"{self.last_error or 'not sent in time'}" if self.url else
                   "no server was found: is `eventbus serve` running? (EVENTBUS_URL)")
            log.warning("eventbus: %d event(s) not delivered (%s); dropped, %d dropped in all",
                        left, why, self.counters["dropped"])
        if self._channel is not None:
            self._channel.close()
        self.state = "closed"
        return left == 0

    def stop(self) -> list[Event]:
        """Stop at once and hand back the events not sent yet, oldest first (nothing is
        counted as dropped: the caller delivers them)."""
        with self._cond:
            self._closing = self._abandoned = True
            unsent = [*self._inflight, *self._buffer]
            self._inflight.clear()
            self._buffer.clear()
            self._cond.notify_all()
        self._wake.set()
        if self._channel is not None:
            self._channel.close()
        self.state = "stopped"
        return unsent

    # -- the background task ----------------------------------------------------------
    def _run(self) -> None:
        delay = BACKOFF[0]
        try:
            while True:
                if not self._wait_for_events():
                    return
                if self._channel is None and not self._find_server():
                    if self._closing:
                        return  # nobody to deliver to: close() reports what is left
                    delay = self._pause(delay)
                    continue
                batch = self._next_batch()
                if batch is None:
                    return
                outcome = self._send(batch)
                if outcome == "answered":
                    delay = BACKOFF[0]
                    continue
                if outcome == "split":
                    continue  # the first half goes at once
                self.counters["retries"] += 1
                delay = self._pause(delay)
        except Exception:  # never die silently; close() counts what is left
            log.exception("forwarder stopped by an unexpected error")
            self.state = "failed"
        finally:
            self._stopped.set()

    def _pause(self, delay: float) -> float:
        """Wait ``delay`` seconds (less when closing starts); returns the next delay."""
        if not self._closing:
            self._wake.wait(delay)
            self._wake.clear()
        elif self._abandoned:
            return delay
        else:
            time.sleep(min(delay, 0.2))  # closing: keep trying until close() gives up
        return min(delay * 2, BACKOFF[1])

    def _wait_for_events(self) -> bool:
        """Wait until there is something to send; False to stop (closing with nothing
        left, or abandoned)."""
        with self._cond:
            while not self._inflight and not self._buffer and not self._closing:
                self._cond.wait(0.5)
            return not self._abandoned and bool(self._inflight or self._buffer)

    def _next_batch(self) -> list[Event] | None:
        """The events to send next (the unsent rest of the batch in flight first), or
        ``None`` to stop."""
        with self._cond:
            if self._abandoned or (not self._inflight and not self._buffer):
                return None
            if not self._inflight:
                while self._buffer and len(self._inflight) < BATCH_EVENTS:
                    self._inflight.append(self._buffer.popleft())
                self._limit = BATCH_EVENTS
            return self._inflight[:self._limit]

    def _find_server(self) -> bool:
        url, how = locate(self.config)
        if url is None:
            self.state = "no_server"
            self.last_error = "no server found"
            if not self._warned_no_server:
                self._warned_no_server = True
                log.warning("eventbus: no server to deliver events to (%s); keeping up to %d events "
                            "(EVENTBUS_FORWARD_BUFFER) until `eventbus serve` runs or EVENTBUS_URL "
                            "names one", how, self.buffer_size)
            return False
        if url != self.url:
            log.info("forwarding events to %s (found through %s)", redact_url(url), clean(how))
        self.url, self.found_by = url, how
        self._channel = _Channel(url)
        self.state = "connecting"
        return True

    def _token_value(self) -> str | None:
        given = self.config.env.get("EVENTBUS_TOKEN")
        if given:
            return given
        if self._token is None or time.monotonic() - self._token_at > TOKEN_TTL / 2:
            try:
                self._token = self._issue_token()
            except Exception as exc:  # noqa: BLE001 - a broken key file must not stop the task
                log.warning("forwarder: cannot mint a token: %s", _reason(exc))
                self._token = None
            self._token_at = time.monotonic()
        return self._token

    def _send(self, batch: list[Event]) -> str:
        """POST one batch: ``answered`` (each event published, a duplicate, or refused for
        good), ``split`` (too large for the server: half of it goes next) or ``retry``
        (send it again after a pause)."""
        items = [json.dumps(wire_item(e), separators=(",", ":"), ensure_ascii=False).encode() for e in batch]
        while len(items) > 1 and sum(map(len, items)) + len(items) + 1 > BATCH_BYTES:
            items.pop()
        batch = batch[:len(items)]
        headers = {"Content-Type": "application/json"}
        token = self._token_value()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        assert self._channel is not None
        try:
            status, body = self._channel.post("/api/events", b"[" + b",".join(items) + b"]", headers)
        except (OSError, http.client.HTTPException) as exc:
            self._failed(f"cannot reach {redact_url(self.url)}: {_reason(exc)}")
            if self.found_by != "EVENTBUS_URL":
                self._channel = None  # look again: the server may have moved (server file)
            return "retry"
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            self._failed(f"{redact_url(self.url)} answered {status} without JSON: is it an eventbus server?")
            return "retry"
        if status in (200, 202) and isinstance(answer.get("results"), list) \
                and len(answer["results"]) == len(batch):
            self._answered(batch, answer["results"])
            return "answered"
        error: dict[str, Any] = answer["error"] if isinstance(answer.get("error"), dict) else {}
        code, message = str(error.get("code")), str(error.get("message"))[:300]
        if status == 401:
            self._token = None  # mint a new one next time (it may have expired)
        if status in (400, 413):
            if len(batch) > 1:
                self._limit = max(1, len(batch) // 2)
                return "split"
            self._answered(batch, [answer])  # one event the server will never take
            return "answered"
        self._failed(f"{redact_url(self.url)} answered {status} {code}: {message}")
        return "retry"

    def _answered(self, batch: list[Event], results: list[Any]) -> None:
        """Count the server's answer for each event of ``batch`` and forget them."""
        for event, result in zip(batch, results):
            if isinstance(result, dict) and result.get("ok"):
                self.counters["sent"] += 1
                if result.get("duplicate"):
                    self.counters["duplicates"] += 1
                continue
            self.counters["rejected"] += 1
            error = result.get("error", {}) if isinstance(result, dict) else {}
            if self.counters["rejected"] <= 10 or self.counters["rejected"] % 1000 == 0:
                log.warning("forwarder: the server refused event %s (%s): %s %s; %d refused so far",
                            clean(event.id), clean(event.type), clean(error.get("code")),
                            clean(error.get("message")), self.counters["rejected"])
        with self._cond:
            del self._inflight[:len(batch)]
        if self._failing:
            log.info("forwarder: delivering to %s again", redact_url(self.url))
        self._failing = False
        self.state = "connected"
        self.last_error = None

    def _failed(self, reason: str) -> None:
        self.last_error = reason
        self.state = "retrying"
        if not self._failing:
            log.warning("forwarder: %s; retrying (%d event(s) waiting)", reason, self.buffered)
        self._failing = True

    # -- status -----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "url": redact_url(self.url) if self.url else None,
            "found_by": self.found_by,
            "buffered": self.buffered,
            "buffer_size": self.buffer_size,
            **self.counters,
            "last_error": self.last_error,
        }
