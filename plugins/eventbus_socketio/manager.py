"""``SocketManager``: adds Flask-SocketIO, the namespaces and the HTTP API to a Flask app.

Two lines in an existing app::

    socket_manager = SocketManager(bus=EventBus.from_env())
    socket_manager.init_app(app)
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask_socketio import SocketIO
from werkzeug.middleware.proxy_fix import ProxyFix

from eventbus.bus import EventBus
from eventbus.events import ADMIN_ROOM, CHAT_NAMESPACE, MONITORING_ROOM, namespace_for_room, validate_room
from eventbus.identity import AuthError, Identity, RequestContext
from eventbus.redact import clean

from .namespaces import NAMESPACE_CLASSES, ClientError
from .packets import packet_class
from .presence import Presence
from .sessions_limit import PendingSessions, limit_pending_sessions
from .settings import use as use_settings
from .transport import SocketIOTransport, physical_room

if TYPE_CHECKING:
    from flask import Flask

    from eventbus.config import Config

log = logging.getLogger("eventbus.socketio")

#: Engine.IO's hard frame limit; payloads past it close the connection, so it sits well
#: above the event limit, which is answered with an error ack instead.
TRANSPORT_FRAME_LIMIT = 1024 * 1024


class TokenBucket:
    """Per-connection rate limit on client events."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

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

    def charge(self, cost: int) -> bool:
        """Take ``cost`` tokens at once (one per room of a resume) when at least one is
        there, letting the bucket go into debt for the rest: the connection's next events
        are refused until the debt is refilled. A cost of 0 always passes."""
        if cost <= 0:
            return True
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= cost
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
    """``key=value`` fields for one log line; every value is escaped with :func:`clean`,
    so a client-chosen value (user id, event name, reason) cannot forge a line or a field."""
    return " ".join(f"{k}={clean(v)}" for k, v in fields.items())


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
        #: connections per user (all namespaces) and sids per room, kept as they change so
        #: limits and the status are counted without walking every connection
        self._user_connections: Counter[str] = Counter()
        self._members: Counter[str] = Counter()
        self.pending_sessions: PendingSessions | None = None
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
    def config(self) -> Config:
        return self._bus.config

    @property
    def _bus(self) -> EventBus:
        """The bus, given to the constructor or made by :meth:`init_app`."""
        bus = self.bus
        assert bus is not None, "SocketManager has no bus yet: pass bus= or call init_app(app) first"
        return bus

    @property
    def _transport(self) -> SocketIOTransport:
        """The Socket.IO transport, set by :meth:`init_app`."""
        transport = self.transport
        assert transport is not None, "SocketManager has no transport yet: call init_app(app) first"
        return transport

    @property
    def _socketio(self) -> SocketIO:
        """The Flask-SocketIO server, set by :meth:`init_app` when WebSockets are enabled."""
        socketio = self.socketio
        assert socketio is not None, ("SocketManager has no Socket.IO server: WebSockets are off "
                                      "or init_app(app) was not called")
        return socketio

    @property
    def enabled(self) -> bool:
        return self.socketio is not None

    def init_app(self, app: Flask) -> SocketIO | None:
        if self.bus is None:
            self.bus = EventBus.from_env()
        config = self.bus.config
        use_settings(config)  # declared already when this plugin is loaded; checked again here
        self.app = app
        app.extensions["eventbus"] = self
        if not app.secret_key:
            app.secret_key = config.ensure_secret_key()
        from .dashboard import register_dashboard
        from .http import DrainUnreadBody, register_http

        register_http(app, self)
        register_dashboard(app, self)
        self.bus.pm.hook.eventbus_register_routes(app=app, bus=self.bus)
        try:
            self.transport = self.bus.transport("socketio")  # type: ignore[assignment]
        except KeyError:
            self.transport = SocketIOTransport()
            self.bus.add_transport(self.transport)
        self.bus.serve()
        if not config.websocket_enabled:
            log.info("WEBSOCKET_ENABLED=false: HTTP API only, Socket.IO is off")
            app.wsgi_app = DrainUnreadBody(TrustedProxies(app.wsgi_app, config.trusted_proxies))  # type: ignore[method-assign]
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
            "serializer": packet_class(config.max_json_depth),  # bad packets get an error ack
        }
        if config.redis_url:
            # Socket.IO emits made outside the bus (an app's own socketio.emit, disconnects)
            # reach every server; bus events travel the ordered Redis fan-out stream instead.
            options["message_queue"] = config.redis_url
        options.update(self._options)
        self.socketio = SocketIO(app, **options)
        from .engine import install as install_engine
        from .namespaces import error_ack

        def lifecycle_refused(sid: str, namespace: str, event: str) -> dict[str, Any]:
            """A client sent an event named like a lifecycle event: refused and counted."""
            conn = self.active_connections.get(sid)
            if conn is not None:
                self.refuse(conn, event, "unknown_event")
            else:
                self.refusals["unknown_event"] += 1
                log.info("refused %s", _kv(sid=sid, namespace=namespace, event=event, code="unknown_event"))
            return error_ack("unknown_event", f"{namespace} does not handle {event!r}")

        # WebSocket messages bounded before they are buffered, in every async mode, and no
        # client-sent connect/disconnect; fails here if the libraries are not as expected.
        install_engine(self.socketio.server, refused=lifecycle_refused)
        # Outside Flask-SocketIO's middleware, so Socket.IO requests pass through them too.
        app.wsgi_app = DrainUnreadBody(TrustedProxies(app.wsgi_app, config.trusted_proxies),  # type: ignore[method-assign]
                                       engineio_path=options.get("path", "socket.io"))
        for namespace, cls in NAMESPACE_CLASSES.items():
            self.socketio.on_namespace(cls(namespace, self))
        self.pending_sessions = limit_pending_sessions(self.socketio.server, config.max_pending_sessions,
                                                       on_refused=self._pending_refused)
        transport = self._transport
        transport.attach(self.socketio.server)
        if self.bus.started and config.async_mode != "threading":
            log.warning("the bus was started before init_app; its workers are OS threads, "
                        "not %s tasks", config.async_mode)
        self.bus.start(spawn=self.socketio.start_background_task)
        if config.batch_window_ms > 0:
            self.socketio.start_background_task(transport.batch_timer)
        return self.socketio

    # -- auth -----------------------------------------------------------------------
    def authenticate(self, auth: dict[str, Any], environ: dict[str, Any]) -> Identity:
        """Ask the auth strategies about a Socket.IO connect: the ``auth`` payload (a token
        in it, or in an ``Authorization: Bearer`` header) and the request itself (cookies,
        headers, query), so strategies that need no token see it too."""
        return self._bus.identify(RequestContext.from_environ(environ, "socketio"), auth)

    def auth_failed(self, namespace: str, exc: AuthError, environ: dict[str, Any]) -> None:
        self.counters["auth_failures"] += 1
        self.refusals[exc.code] += 1
        log.warning("auth failure %s", _kv(namespace=namespace, code=exc.code,
                                           remote=_remote(environ), reason=str(exc)))

    def require(self, conn: Connection, room: str, action: str) -> None:
        if not self._bus.authorize(conn.identity, conn.namespace, room, action):
            raise ClientError(f"{conn.identity.user_id} may not {action} in {room}", code="forbidden")

    # -- connections ----------------------------------------------------------------
    def connected(self, sid: str, namespace: str, identity: Identity, environ: dict[str, Any],
                  batched: bool = False) -> Connection:
        """Register a signed-in connection. Raises :class:`ClientError`
        ``too_many_connections`` when the user already holds ``max_connections_per_user``
        connections on this server (all namespaces)."""
        config = self.config
        conn = Connection(sid, namespace, identity, _remote(environ),
                          environ.get("HTTP_UPGRADE", "polling").lower() or "polling",
                          TokenBucket(config.client_rate, config.client_burst),
                          batched=batched and config.batch_window_ms > 0)
        limit = config.max_connections_per_user
        with self._lock:
            if self._user_connections[identity.user_id] >= limit:
                raise ClientError(f"{identity.user_id} already has {limit} connections to this server; "
                                  "close one first", code="too_many_connections")
            self._user_connections[identity.user_id] += 1
            self.active_connections[sid] = conn
        if self.pending_sessions is not None:
            self.pending_sessions.signed_in(sid, namespace)
        self.counters["connects"] += 1
        log.info("connect %s", _kv(sid=sid, user=identity.user_id, namespace=namespace,
                                   remote=conn.remote_addr, transport=conn.transport))
        return conn

    def disconnected(self, sid: str, reason: Any) -> None:
        with self._lock:
            conn = self.active_connections.pop(sid, None)
            if conn is None:
                return
            user = conn.identity.user_id
            self._user_connections[user] -= 1
            if self._user_connections[user] <= 0:
                del self._user_connections[user]
        self.counters["disconnects"] += 1
        for room in list(conn.rooms):
            self._left(conn, room)
        log.info("disconnect %s", _kv(sid=sid, user=conn.identity.user_id, namespace=conn.namespace,
                                      reason=reason, duration=f"{time.time() - conn.connected_at:.1f}s"))

    def refuse(self, conn: Connection, event: str, code: str) -> None:
        self.refusals[code] += 1
        log.info("refused %s", _kv(sid=conn.sid, user=conn.identity.user_id,
                                   namespace=conn.namespace, event=event, code=code))

    def connect_refused(self, namespace: str, identity: Identity, code: str, environ: dict[str, Any]) -> None:
        """Count and log a signed-in client refused at connect (a limit, not its token)."""
        self.refusals[code] += 1
        log.info("connect refused %s", _kv(namespace=namespace, user=identity.user_id, code=code,
                                              remote=_remote(environ)))

    def _pending_refused(self, environ: dict[str, Any]) -> None:
        self.refusals["too_many_pending_sessions"] += 1
        log.info("session refused %s", _kv(code="too_many_pending_sessions", remote=_remote(environ),
                                              limit=self.config.max_pending_sessions))

    # -- rooms ----------------------------------------------------------------------
    def join(self, conn: Connection, room: str, after: int | None = None,
             epoch: Any = None) -> dict[str, Any]:
        if namespace_for_room(room, conn.namespace) != conn.namespace:
            raise ClientError(f"room {room!r} belongs to {namespace_for_room(room, conn.namespace)}, "
                              f"not {conn.namespace}", code="invalid_room")
        self.require(conn, room, "join")
        if epoch is not None and not isinstance(epoch, str):
            raise ClientError("epoch must be a string", code="invalid_payload")
        limit = self.config.max_rooms_per_connection
        if room not in conn.rooms and len(conn.rooms) >= limit:
            raise ClientError(f"a connection may be in at most {limit} rooms; leave one first",
                              code="too_many_rooms")
        first = self.presence.add(conn.namespace, room, conn.identity.user_id, conn.sid)
        start: list[int] = []
        start_seq = getattr(self._bus.history, "start_seq", None)  # memory history only
        on_joined: Callable[[], None] | None = None
        if after is None and start_seq is not None:
            def on_joined() -> None:  # runs in the stream, at the join point
                start.append(start_seq(room))
        result = self._transport.join(conn.sid, conn.namespace, room, after=after, epoch=epoch,
                                      batched=conn.batched, on_joined=on_joined)
        if result.error:
            self.presence.remove(conn.namespace, room, conn.identity.user_id, conn.sid)
            raise RuntimeError(result.error)
        seq = result.seq
        if seq == 0 and start:
            # Nothing sent in this room yet: its numbering may start above 0 (the history
            # forgot other rooms), and the first event the client gets is start + 1.
            seq = start[0]
        with self._lock:
            if room not in conn.rooms:
                conn.rooms.add(room)
                self._members[room] += 1
        members = self.presence.members(conn.namespace, room)
        if first:
            self._presence_event("user_joined", conn, room, members)
        log.info("join %s", _kv(sid=conn.sid, user=conn.identity.user_id,
                                namespace=conn.namespace, room=room))
        ack: dict[str, Any] = {"ok": True, "room": room, "presence": members,
                               "seq": seq, "epoch": self._bus.history.epoch}
        if after is not None:
            ack["replayed"] = result.replayed
            ack["resync_required"] = result.resync is not None
        return ack

    def leave(self, conn: Connection, room: str) -> dict[str, Any]:
        if room not in conn.rooms:
            raise ClientError(f"not in room {room!r}", code="not_in_room")
        self._socketio.server.leave_room(conn.sid, physical_room(room, conn.batched), namespace=conn.namespace)
        self._left(conn, room)
        log.info("leave %s", _kv(sid=conn.sid, user=conn.identity.user_id,
                                 namespace=conn.namespace, room=room))
        return {"ok": True, "room": room, "presence": self.presence.members(conn.namespace, room)}

    def _left(self, conn: Connection, room: str) -> None:
        with self._lock:
            if room in conn.rooms:
                conn.rooms.discard(room)
                self._members[room] -= 1
                if self._members[room] <= 0:
                    del self._members[room]
        if self.presence.remove(conn.namespace, room, conn.identity.user_id, conn.sid):
            self._presence_event("user_left", conn, room, self.presence.members(conn.namespace, room))

    def _presence_event(self, event_type: str, conn: Connection, room: str, members: list[str]) -> None:
        try:
            self._bus.emit(event_type, {"user_id": conn.identity.user_id, "room": room, "presence": members},
                           room=room, user_id=conn.identity.user_id, source="presence", origin="client")
        except Exception:  # presence must never break a join or leave
            log.exception("presence event %s for %s failed", event_type, clean(room))

    def resume(self, conn: Connection, data: dict[str, Any], paid: int = 1) -> dict[str, Any]:
        """``{rooms: {room: last_seq}, epoch}``: rejoin each room and replay what was missed.

        Refused as a whole, before any room is joined, when it lists more than
        ``max_resume_rooms`` rooms or would take the connection past
        ``max_rooms_per_connection`` (``too_many_rooms``), or when the connection's rate
        limit cannot pay one token per room (``rate_limited``; ``paid`` tokens were taken
        already, for the event itself)."""
        rooms = data.get("rooms")
        if not isinstance(rooms, dict) or not rooms:
            raise ClientError("resume needs rooms: {room: last_seq}", code="invalid_payload")
        config = self.config
        if len(rooms) > config.max_resume_rooms:
            raise ClientError(f"resume lists {len(rooms)} rooms; the limit is {config.max_resume_rooms}",
                              code="too_many_rooms")
        epoch = data.get("epoch")
        for room, last in rooms.items():
            validate_room(room)
            if last is not None and (not isinstance(last, int) or isinstance(last, bool) or last < 0):
                raise ClientError(f"last seq of {room!r} must be a non-negative integer", code="invalid_payload")
        total = len(conn.rooms | rooms.keys())
        if total > config.max_rooms_per_connection:
            raise ClientError(f"resume would put the connection in {total} rooms; the limit is "
                              f"{config.max_rooms_per_connection}", code="too_many_rooms")
        if not conn.bucket.charge(len(rooms) - paid):
            raise ClientError(f"resuming {len(rooms)} rooms costs {len(rooms)} events; slow down",
                              code="rate_limited")
        results = {}
        for room, last in rooms.items():
            ack = self.join(conn, room, after=last, epoch=epoch)
            results[room] = {k: ack[k] for k in ("seq", "replayed", "resync_required", "presence") if k in ack}
        return {"ok": True, "epoch": self._bus.history.epoch, "rooms": results}

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

    def status(self, detail: bool = False) -> dict[str, Any]:
        """The status page. Public by default: counts and totals only, whatever the number
        of rooms. ``detail`` (for admins) adds ``detail``: every room with its connections,
        presence per room, retained history per room and connections per user."""
        bus_status = self._bus.status()
        members = self.room_members()
        chat_rooms = [room for room in members if namespace_for_room(room, "") == CHAT_NAMESPACE]
        public_rooms = {MONITORING_ROOM: members.get(MONITORING_ROOM, 0), ADMIN_ROOM: members.get(ADMIN_ROOM, 0),
                        "chat": sum(members[room] for room in chat_rooms)}
        room_totals = {"rooms": len(members), "chat_sessions": len(chat_rooms),
                       "memberships": sum(members.values())}
        transports = bus_status["transports"]
        worst = "active"
        for t in transports:
            if t["health"].get("status") in ("degraded", "down"):
                worst = "degraded"
        if bus_status["redis"] is not None and bus_status["redis"]["status"] != "ok":
            worst = "degraded"
        all_latencies: dict[str, Any] = next((t["latency_ms"] for t in transports if t["name"] == "socketio"), {})
        status: dict[str, Any] = {
            "status": worst if self.enabled else "disabled",
            "websocket_enabled": self.enabled,
            "async_mode": self.config.async_mode,
            "connections": len(self.active_connections),
            "rooms": public_rooms,
            "room_totals": room_totals,
            "namespaces": self.namespace_counts(),
            "transports": {t["name"]: t for t in transports},
            "queue_depths": {t["name"]: t["queue_depth"] for t in transports},
            "drops": {t["name"]: t["dropped"] for t in transports},
            "failures": {t["name"]: t["failed"] for t in transports},
            "latency_ms": all_latencies,
            "counters": {**bus_status["counters"], **self.counters},
            "refusals": dict(self.refusals),
            "history": _history_summary(self._bus.history, bus_status["history"]),
            "pending_sessions": None if self.pending_sessions is None else self.pending_sessions.snapshot(),
            "limits": {name: getattr(self.config, name) for name in LIMIT_SETTINGS},
            "role": bus_status["role"],
            "redis": bus_status["redis"],
            "plugins": bus_status["plugins"],
            "plugin_failures": bus_status["plugin_failures"],
            "uptime_s": round(time.time() - self.started_at, 1),
        }
        if detail:
            with self._lock:
                users = dict(self._user_connections)
            status["detail"] = {
                "rooms": members,
                "presence": self.presence.rooms(),
                "history": bus_status["history"]["rooms"],
                "users": users,
            }
        return status

    def room_members(self) -> dict[str, int]:
        """``{room: connections in it}`` (all namespaces)."""
        with self._lock:
            return dict(self._members)


#: The per-client limits shown (as settings) on the status page.
LIMIT_SETTINGS = ("max_rooms_per_connection", "max_resume_rooms", "max_connections_per_user",
                  "max_pending_sessions", "client_rate", "client_burst")


def _history_summary(history: Any, bus_history: dict[str, Any]) -> dict[str, Any]:
    """``{"epoch", "rooms": count, ...}``: the history backend's totals (``stats()``) when it
    has them, else the number of rooms it reports."""
    summary: dict[str, Any] = {"epoch": bus_history["epoch"]}
    stats = getattr(history, "stats", None)
    if callable(stats):
        summary.update(stats())
    else:
        summary["rooms"] = len(bus_history["rooms"])
    return summary


def _remote(environ: dict[str, Any]) -> str:
    """The client's address: the peer's, or for a configured proxy the address it forwarded
    (:class:`TrustedProxies` has already put it in ``REMOTE_ADDR``)."""
    return str(environ.get("REMOTE_ADDR") or "-")


#: Request headers through which a proxy tells the client's address, scheme and host.
FORWARDED_HEADERS = ("HTTP_FORWARDED", "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO",
                     "HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_PORT", "HTTP_X_FORWARDED_PREFIX")


def unfold_headers(environ: dict[str, Any]) -> None:
    """Replace line breaks in request header values (obs-fold continuation lines, which
    gevent and eventlet keep) with spaces, as RFC 9112 allows, so a header that a library
    logs (Engine.IO logs a refused ``Origin``) cannot start a forged log line."""
    for name, value in environ.items():
        if name.startswith("HTTP_") and isinstance(value, str) and ("\n" in value or "\r" in value):
            environ[name] = " ".join(value.split())


class TrustedProxies:
    """WSGI middleware: ``X-Forwarded-For`` and ``X-Forwarded-Proto`` count only when the
    peer (``REMOTE_ADDR``) is one of ``proxies`` (addresses or CIDR networks), through
    Werkzeug's :class:`ProxyFix` (one proxy hop). From any other peer the forwarded headers
    are removed before the app sees them, so a client cannot choose the address shown in
    logs and ``/api/connections``, nor the scheme or host the same-origin check compares.
    Header values are unfolded first (:func:`unfold_headers`)."""

    def __init__(self, app: Callable[..., Any], proxies: Iterable[str]):
        self.app = app
        self.networks = tuple(ipaddress.ip_network(p, strict=False) for p in proxies)
        self.proxied = ProxyFix(app, x_for=1, x_proto=1)

    def trusted(self, peer: str | None) -> bool:
        """Whether ``peer`` (an address, IPv4-mapped IPv6 included) is a configured proxy."""
        if not self.networks or not peer:
            return False
        try:
            addr = ipaddress.ip_address(peer)
        except ValueError:
            return False
        mapped = getattr(addr, "ipv4_mapped", None)
        return any(addr in net or (mapped is not None and mapped in net) for net in self.networks)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        unfold_headers(environ)
        if self.trusted(environ.get("REMOTE_ADDR")):
            return self.proxied(environ, start_response)
        for name in FORWARDED_HEADERS:
            environ.pop(name, None)
        return self.app(environ, start_response)
