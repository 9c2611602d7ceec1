"""A cap on Engine.IO sessions that have not signed in to any namespace yet.

An Engine.IO session (polling or websocket) costs the server a queue, a socket object and
a ping task before the client ever shows a token. :class:`PendingSessions` counts the
sessions that have not connected to a namespace, refuses new ones beyond ``limit`` (HTTP
401 from Engine.IO, body ``{"code": "too_many_pending_sessions", "message": ...}``) and
closes those still unsigned after ``connect_timeout`` seconds when room is needed.
Sessions that stop answering pings are closed by Engine.IO's own ping timeout as before;
their disconnect removes them here.

Library internals touched (python-engineio 4.x, python-socketio 5.x), all in this module:

- ``engineio.Server.handlers['connect']`` and ``['disconnect']``: wrapped, the handlers
  python-socketio registered still run; a ``connect`` handler that returns something other
  than ``None``/``True`` makes Engine.IO refuse the session with that value as the body.
- ``engineio.Server.sockets`` and ``engineio.Socket.close(wait, abort)``: to close a
  session past the connect timeout.
- ``socketio.Server.eio`` and ``socketio.Server.manager.eio_sid_from_sid(sid, namespace)``:
  to find the Engine.IO session of a namespace connection.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

log = logging.getLogger("eventbus.socketio")

#: Socket.IO's default ``connectTimeout``: a session that has not signed in to a namespace
#: within it may be closed to make room for a new one.
CONNECT_TIMEOUT = 45.0
REFUSAL_CODE = "too_many_pending_sessions"


class PendingSessions:
    """Engine.IO sessions not yet connected to a namespace, oldest first.

    :param limit: pending sessions allowed at once (server-wide).
    :param connect_timeout: seconds after which a pending session may be closed when the
        cap is reached.
    :param on_refused: called with the WSGI environ of each refused session (count it).
    """

    def __init__(self, limit: int, connect_timeout: float = CONNECT_TIMEOUT,
                 on_refused: Callable[[dict[str, Any]], None] | None = None):
        self.limit = limit
        self.connect_timeout = connect_timeout
        self.on_refused = on_refused
        self.refused = 0
        self.timed_out = 0
        self._pending: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        self._server: Any = None

    def __len__(self) -> int:
        return len(self._pending)

    def install(self, server: Any) -> None:
        """Wrap the Engine.IO ``connect``/``disconnect`` handlers of ``server`` (a
        ``socketio.Server`` whose handlers are already registered)."""
        self._server = server
        eio = server.eio
        connect = eio.handlers["connect"]
        disconnect = eio.handlers.get("disconnect")

        def on_eio_connect(eio_sid: str, environ: dict[str, Any]) -> Any:
            if not self._admit(eio_sid):
                self.refused += 1
                if self.on_refused is not None:
                    self.on_refused(environ)
                return {"code": REFUSAL_CODE,
                        "message": f"more than {self.limit} sessions are waiting to sign in; retry later"}
            return connect(eio_sid, environ)

        def on_eio_disconnect(eio_sid: str, *args: Any) -> Any:
            self.discard(eio_sid)
            if disconnect is not None:
                return disconnect(eio_sid, *args)
            return None

        eio.on("connect", on_eio_connect)
        eio.on("disconnect", on_eio_disconnect)

    def _admit(self, eio_sid: str) -> bool:
        with self._lock:
            if len(self._pending) >= self.limit:
                stale = self._take_stale(time.monotonic() - self.connect_timeout)
            else:
                stale = []
            admitted = len(self._pending) < self.limit
            if admitted:
                self._pending[eio_sid] = time.monotonic()
        for sid in stale:
            self._close(sid)
        return admitted

    def _take_stale(self, cutoff: float) -> list[str]:
        """Remove and return pending sessions opened before ``cutoff`` (caller holds the lock)."""
        stale = []
        while self._pending:
            sid, opened = next(iter(self._pending.items()))
            if opened >= cutoff:
                break
            del self._pending[sid]
            stale.append(sid)
        return stale

    def _close(self, eio_sid: str) -> None:
        socket = self._server.eio.sockets.get(eio_sid) if self._server is not None else None
        if socket is None or socket.closed:
            return
        self.timed_out += 1
        log.info("closing engine.io session %s: no namespace connect within %.0fs", eio_sid,
                 self.connect_timeout)
        try:
            socket.close(wait=False, abort=False)
        except Exception:  # a session already going away
            log.debug("closing session %s failed", eio_sid, exc_info=True)

    def discard(self, eio_sid: str) -> None:
        with self._lock:
            self._pending.pop(eio_sid, None)

    def signed_in(self, sid: str, namespace: str) -> None:
        """The namespace connection ``sid`` succeeded: its Engine.IO session is no longer
        pending."""
        if self._server is None:
            return
        try:
            eio_sid = self._server.manager.eio_sid_from_sid(sid, namespace)
        except Exception:  # noqa: BLE001 - a test client without Engine.IO sessions
            eio_sid = None
        if eio_sid is not None:
            self.discard(eio_sid)

    def snapshot(self) -> dict[str, int]:
        return {"pending": len(self._pending), "limit": self.limit, "refused": self.refused,
                "timed_out": self.timed_out}


def limit_pending_sessions(server: Any, limit: int,
                           on_refused: Callable[[dict[str, Any]], None] | None = None,
                           connect_timeout: float = CONNECT_TIMEOUT) -> PendingSessions:
    """Install a :class:`PendingSessions` cap on ``server`` (a ``socketio.Server``)."""
    pending = PendingSessions(limit, connect_timeout, on_refused)
    pending.install(server)
    return pending
