"""``SocketManager``: adds Flask-SocketIO, the namespaces and the HTTP API to a Flask app.

Two lines in an existing app::

    socket_manager = SocketManager(bus=EventBus.from_env())
    socket_manager.init_app(app)
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask_socketio import SocketIO

from eventbus.bus import EventBus
from eventbus.events import namespace_for_room, validate_room
from eventbus.identity import AuthError, Identity

from .namespaces import NAMESPACE_CLASSES, ClientError
from .presence import Presence
from .transport import SocketIOTransport, physical_room

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger("eventbus.socketio")

#: Engine.IO's hard frame limit; payloads past it close the connection, so it sits well
#: above the event limit, which is answered with an error ack instead.
TRANSPORT_FRAME_LIMIT = 1024 * 1024


class TokenBucket:
    """Per-connection rate limit on client events."""

    __slots__ = ("rate", "capacity", "tokens", "stamp")

    def __init__(self, rate: float, capacity: int):
        self.rate = rate
        self.capacity = capacity
        self.tokens = float(capacity)
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class Connection:
    sid: str
    namespace: str
    identity: Identity
    remote_addr: str
    transport: str
    bucket: TokenBucket
    connected_at: float = field(default_factory=time.time)
    rooms: set[str] = field(default_factory=set)
    batched: bool = False  # receives `events` packets (lists of envelopes)

    def describe(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "namespace": self.namespace,
            "user_id": self.identity.user_id,
            "remote_addr": self.remote_addr,
            "transport": self.transport,
            "connected_at": self.connected_at,
            "rooms": sorted(self.rooms),
            "batched": self.batched,
        }


def _kv(**fields: Any) -> str:
    return " ".join(f"{k}={v}" for k, v in fields.items())


class SocketManager:
    """Owns the Flask-SocketIO server, connections, presence and the HTTP API.

    :param app: a Flask app to initialise now (or call :meth:`init_app` later).
    :param bus: the event bus (``EventBus.from_env()`` when omitted).
    :param socketio_options: passed to :class:`flask_socketio.SocketIO` (override with care).
    """

    def __init__(self, app: Flask | None = None, bus: EventBus | None = None, **socketio_options: Any):
        self.bus = bus
        self.socketio: SocketIO | None = None
        self.app: Flask | None = None
        self.active_connections: dict[str, Connection] = {}
        self.presence = Presence()
        self.counters: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()
        self._typing: dict[tuple[str, str], tuple[float, bool]] = {}
        self._lock = threading.Lock()
        self._options = socketio_options
        self.transport: SocketIOTransport | None = None
        self.started_at = time.time()
        if app is not None:
            self.init_app(app)

    # The brief's names.
    @property
    def connections(self) -> dict[str, Connection]:
        return self.active_connections

    @property
    def rooms(self) -> dict[str, set[str]]:
        """``{room: {sid, ...}}`` across namespaces, as the original brief shows."""
        out: dict[str, set[str]] = {}
        for conn in list(self.active_connections.values()):
            for room in conn.rooms:
                out.setdefault(room, set()).add(conn.sid)
        return out

    @property
    def config(self):  # noqa: ANN201 - Config, typed through the bus
        return self.bus.config

    @property
    def enabled(self) -> bool:
        return self.socketio is not None

    def init_app(self, app: Flask) -> SocketIO | None:
        if self.bus is None:
            self.bus = EventBus.from_env()
        config = self.bus.config
        self.app = app
        app.extensions["eventbus"] = self
        if not app.secret_key:
            app.secret_key = config.ensure_secret_key()
        from .dashboard import register_dashboard
        from .http import register_http

        register_http(app, self)
        register_dashboard(app, self)
        try:
            self.transport = self.bus.transport("socketio")  # type: ignore[assignment]
        except KeyError:
            self.transport = SocketIOTransport()
            self.bus.add_transport(self.transport)
        self.bus.serve()
        if not config.websocket_enabled:
            log.info("WEBSOCKET_ENABLED=false: HTTP API only, Socket.IO is off")
            self.bus.start()
            return None
        origins: Any = list(config.cors_origins) or None  # None: same origin only
        if origins == ["*"]:
            origins = "*"
            log.warning("WEBSOCKET_CORS_ORIGINS='*': any web site may connect with your users' tokens")
        options: dict[str, Any] = {
            "async_mode": config.async_mode,
            "cors_allowed_origins": origins,
            "max_http_buffer_size": TRANSPORT_FRAME_LIMIT,
            "async_handlers": False,  # one client's events are handled in the order sent
            "logger": False,
            "engineio_logger": False,
            "ping_interval": 25,
            "ping_timeout": 20,
        }
        if config.redis_url:
            # Socket.IO emits made outside the bus (an app's own socketio.emit, disconnects)
            # reach every server; bus events travel the ordered Redis fan-out stream instead.
            options["message_queue"] = config.redis_url
        options.update(self._options)
        self.socketio = SocketIO(app, **options)
        for namespace, cls in NAMESPACE_CLASSES.items():
            self.socketio.on_namespace(cls(namespace, self))
        self.transport.attach(self.socketio.server)
        if self.bus.started and config.async_mode != "threading":
            log.warning("the bus was started before init_app; its workers are OS threads, "
                        "not %s tasks", config.async_mode)
        self.bus.start(spawn=self.socketio.start_background_task)
        if config.batch_window_ms > 0:
            self.socketio.start_background_task(self.transport.batch_timer)
        return self.socketio

    # -- auth -----------------------------------------------------------------------
    def authenticate(self, auth: dict[str, Any], environ: dict[str, Any]) -> Identity:
        """Token from the ``auth`` payload or an ``Authorization: Bearer`` header."""
        if not auth.get("token") and not auth.get("api_key"):
            header = environ.get("HTTP_AUTHORIZATION", "")
            scheme, _, value = header.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                auth = {**auth, "token": value.strip()}
        if not auth.get("token") and not auth.get("api_key"):
            raise AuthError("a token is required: connect with auth: {token}", code="unauthorized")
        identity = self.bus.authenticate(auth, environ)
        if identity is None:
            raise AuthError("the token was not accepted", code="unauthorized")
        return identity

    def auth_failed(self, namespace: str, exc: AuthError, environ: dict[str, Any]) -> None:
        self.counters["auth_failures"] += 1
        self.refusals[exc.code] += 1
        log.warning("auth failure %s", _kv(namespace=namespace, code=exc.code,
                                           remote=_remote(environ), reason=repr(str(exc))))

    def require(self, conn: Connection, room: str, action: str) -> None:
        if not self.bus.authorize(conn.identity, conn.namespace, room, action):
            raise ClientError(f"{conn.identity.user_id} may not {action} in {room}", code="forbidden")

    # -- connections ----------------------------------------------------------------
    def connected(self, sid: str, namespace: str, identity: Identity, environ: dict[str, Any],
                  batched: bool = False) -> Connection:
        config = self.config
        conn = Connection(sid, namespace, identity, _remote(environ),
                          environ.get("HTTP_UPGRADE", "polling").lower() or "polling",
                          TokenBucket(config.client_rate, config.client_burst),
                          batched=batched and config.batch_window_ms > 0)
        self.active_connections[sid] = conn
        self.counters["connects"] += 1
        log.info("connect %s", _kv(sid=sid, user=identity.user_id, namespace=namespace,
                                   remote=conn.remote_addr, transport=conn.transport))
        return conn

    def disconnected(self, sid: str, reason: Any) -> None:
        conn = self.active_connections.pop(sid, None)
        if conn is None:
            return
        self.counters["disconnects"] += 1
        for room in list(conn.rooms):
            self._left(conn, room)
        log.info("disconnect %s", _kv(sid=sid, user=conn.identity.user_id, namespace=conn.namespace,
                                      reason=reason, duration=f"{time.time() - conn.connected_at:.1f}s"))

    def refuse(self, conn: Connection, event: str, code: str) -> None:
        self.refusals[code] += 1
        log.info("refused %s", _kv(sid=conn.sid, user=conn.identity.user_id,
                                   namespace=conn.namespace, event=event, code=code))

    # -- rooms ----------------------------------------------------------------------
    def join(self, conn: Connection, room: str, after: int | None = None,
             epoch: Any = None) -> dict[str, Any]:
        if namespace_for_room(room, conn.namespace) != conn.namespace:
            raise ClientError(f"room {room!r} belongs to {namespace_for_room(room, conn.namespace)}, "
                              f"not {conn.namespace}", code="invalid_room")
        self.require(conn, room, "join")
        if epoch is not None and not isinstance(epoch, str):
            raise ClientError("epoch must be a string", code="invalid_payload")
        first = self.presence.add(conn.namespace, room, conn.identity.user_id, conn.sid)
        result = self.transport.join(conn.sid, conn.namespace, room, after=after, epoch=epoch,
                                     batched=conn.batched)
        if result.error:
            self.presence.remove(conn.namespace, room, conn.identity.user_id, conn.sid)
            raise RuntimeError(result.error)
        conn.rooms.add(room)
        members = self.presence.members(conn.namespace, room)
        if first:
            self._presence_event("user_joined", conn, room, members)
        log.info("join %s", _kv(sid=conn.sid, user=conn.identity.user_id,
                                namespace=conn.namespace, room=room))
        ack: dict[str, Any] = {"ok": True, "room": room, "presence": members,
                               "seq": result.seq, "epoch": self.bus.history.epoch}
        if after is not None:
            ack["replayed"] = result.replayed
            ack["resync_required"] = result.resync is not None
        return ack

    def leave(self, conn: Connection, room: str) -> dict[str, Any]:
        if room not in conn.rooms:
            raise ClientError(f"not in room {room!r}", code="not_in_room")
        self.socketio.server.leave_room(conn.sid, physical_room(room, conn.batched), namespace=conn.namespace)
        self._left(conn, room)
        log.info("leave %s", _kv(sid=conn.sid, user=conn.identity.user_id,
                                 namespace=conn.namespace, room=room))
        return {"ok": True, "room": room, "presence": self.presence.members(conn.namespace, room)}

    def _left(self, conn: Connection, room: str) -> None:
        conn.rooms.discard(room)
        if self.presence.remove(conn.namespace, room, conn.identity.user_id, conn.sid):
            self._presence_event("user_left", conn, room, self.presence.members(conn.namespace, room))

    def _presence_event(self, event_type: str, conn: Connection, room: str, members: list[str]) -> None:
        try:
            self.bus.emit(event_type, {"user_id": conn.identity.user_id, "room": room, "presence": members},
                          room=room, user_id=conn.identity.user_id, source="presence", origin="client")
        except Exception:  # noqa: BLE001 - presence must never break a join or leave
            log.exception("presence event %s for %s failed", event_type, room)

    def resume(self, conn: Connection, data: dict[str, Any]) -> dict[str, Any]:
        """``{rooms: {room: last_seq}, epoch}``: rejoin each room and replay what was missed."""
        rooms = data.get("rooms")
        if not isinstance(rooms, dict) or not rooms:
            raise ClientError("resume needs rooms: {room: last_seq}", code="invalid_payload")
        epoch = data.get("epoch")
        results = {}
        for room, last in rooms.items():
            validate_room(room)
            if last is not None and (not isinstance(last, int) or isinstance(last, bool) or last < 0):
                raise ClientError(f"last seq of {room!r} must be a non-negative integer", code="invalid_payload")
            ack = self.join(conn, room, after=last, epoch=epoch)
            results[room] = {k: ack[k] for k in ("seq", "replayed", "resync_required", "presence") if k in ack}
        return {"ok": True, "epoch": self.bus.history.epoch, "rooms": results}

    def typing_allowed(self, user_id: str, room: str, typing: bool) -> bool:
        """At most one typing indicator per user and room per interval; a change of state
        (started or stopped) always passes."""
        key = (user_id, room)
        now = time.monotonic()
        with self._lock:
            last = self._typing.get(key)
            if last is not None and last[1] == typing and now - last[0] < self.config.typing_interval:
                self.counters["typing_throttled"] += 1
                return False
            self._typing[key] = (now, typing)
            if len(self._typing) > 10000:
                cutoff = now - max(self.config.typing_interval, 1.0)
                self._typing = {k: v for k, v in self._typing.items() if v[0] >= cutoff}
            return True

    # -- status ---------------------------------------------------------------------
    def namespace_counts(self) -> dict[str, int]:
        counts = Counter(conn.namespace for conn in list(self.active_connections.values()))
        return {namespace: counts.get(namespace, 0) for namespace in NAMESPACE_CLASSES}

    def status(self) -> dict[str, Any]:
        bus_status = self.bus.status()
        transports = bus_status["transports"]
        worst = "active"
        for t in transports:
            if t["health"].get("status") in ("degraded", "down"):
                worst = "degraded"
        if bus_status["redis"] is not None and bus_status["redis"]["status"] != "ok":
            worst = "degraded"
        all_latencies = next((t["latency_ms"] for t in transports if t["name"] == "socketio"), {})
        return {
            "status": worst if self.enabled else "disabled",
            "websocket_enabled": self.enabled,
            "async_mode": self.config.async_mode,
            "connections": len(self.active_connections),
            "rooms": {room: len(sids) for room, sids in self.rooms.items()},
            "namespaces": self.namespace_counts(),
            "presence": self.presence.rooms(),
            "transports": {t["name"]: t for t in transports},
            "queue_depths": {t["name"]: t["queue_depth"] for t in transports},
            "drops": {t["name"]: t["dropped"] for t in transports},
            "failures": {t["name"]: t["failed"] for t in transports},
            "latency_ms": all_latencies,
            "counters": {**bus_status["counters"], **self.counters},
            "refusals": dict(self.refusals),
            "history": bus_status["history"],
            "role": bus_status["role"],
            "redis": bus_status["redis"],
            "plugins": bus_status["plugins"],
            "plugin_failures": bus_status["plugin_failures"],
            "uptime_s": round(time.time() - self.started_at, 1),
        }


def _remote(environ: dict[str, Any]) -> str:
    return str(environ.get("HTTP_X_FORWARDED_FOR", "").split(",")[0].strip()
               or environ.get("REMOTE_ADDR", "-"))
