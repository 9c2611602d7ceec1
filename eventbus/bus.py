"""The event bus: blinker signals and direct calls in, sequenced events out to every transport.

Emitting builds an :class:`~eventbus.events.Event`, lets ``eventbus_event`` plugins transform
or drop it, assigns the room's ``seq`` and keeps it in history, then hands it to each
transport's worker queue. Nothing on that path waits for a transport.
"""

from __future__ import annotations

import atexit
import functools
import logging
import threading
import time
import weakref
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import signals
from .config import Config
from .events import Event, EventBusError, EventRegistry, EventTypeSpec, check_data
from .forwarder import TOKEN_ROLES, TOKEN_TTL, TOKEN_USER, Forwarder
from .history import MemoryHistory
from .identity import AuthError, Identity, RequestContext
from .plugins import PluginManager, create_plugin_manager
from .redact import clean
from .redis_streams import RedisUnavailable  # redis itself is imported only when configured
from .transport import Spawn, Transport, TransportWorker, spawn_thread

if TYPE_CHECKING:
    from .history import History
    from .redis_streams import IngestRef, RedisLink

log = logging.getLogger("eventbus.bus")

#: Signal keyword arguments that are envelope fields rather than event data.
ENVELOPE_KWARGS = ("room", "session_id", "user_id")
#: Seconds a publisher's event id is remembered (memory history; Redis keeps its own markers
#: for as long, ``MARKER_TTL``).
DEDUPE_SECONDS = 600.0
#: Seconds a forwarding bus waits at interpreter exit for the server to take its events.
EXIT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Publication:
    """What :meth:`EventBus.emit_once` did with one event: published (``seq`` assigned, or
    ``None`` for an event kept out of history), a ``duplicate`` of an id published before
    (``seq`` is the original one when known), or ``dropped`` by an ``eventbus_event`` plugin."""

    id: str
    type: str
    room: str
    seq: int | None
    duplicate: bool = False
    dropped: bool = False


class RecentIds:
    """The ids published in the last ``max_age`` seconds, at most ``size`` of them (the oldest
    forgotten first), each with its room and seq. Not thread-safe: the bus locks."""

    def __init__(self, size: int, max_age: float = DEDUPE_SECONDS):
        self.size = size
        self.max_age = max_age
        self._ids: OrderedDict[str, tuple[float, str, int | None]] = OrderedDict()

    def get(self, event_id: str) -> tuple[str, int | None] | None:
        self._expire()
        found = self._ids.get(event_id)
        return None if found is None else (found[1], found[2])

    def add(self, event_id: str, room: str, seq: int | None) -> None:
        if self.size <= 0:
            return
        self._ids[event_id] = (time.monotonic(), room, seq)
        self._ids.move_to_end(event_id)
        while len(self._ids) > self.size:
            self._ids.popitem(last=False)

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.max_age
        while self._ids:
            stamp = next(iter(self._ids.values()))[0]
            if stamp >= cutoff:
                return
            self._ids.popitem(last=False)

    def __len__(self) -> int:
        return len(self._ids)


class SignalTransport(Transport):
    """Re-sends events that did not come from a signal (clients, HTTP, ``bus.emit``) as
    blinker signals, so agents hear chat messages. Each receiver is called on its own, so
    one that raises does not stop the others."""

    name = "signals"
    local = True

    def accepts(self, event: Event) -> bool:
        return event.origin != "signal" and bool(signals.signal(event.type).receivers)

    def send(self, event: Event) -> None:
        signal = signals.signal(event.type)
        sender = event.source or "eventbus"
        failures = 0
        for receiver in list(signal.receivers_for(sender)):
            try:
                receiver(sender, event=event)
            except Exception:  # isolate each agent's receiver
                failures += 1
                log.exception("signal receiver %r failed on %s %s", receiver, event.type, event.id)
        if failures:
            raise RuntimeError(f"{failures} signal receiver(s) failed on {event.type}")


class EventBus:
    """One bus per application. ``EventBus.from_env()`` reads the environment; tests build
    one with explicit ``plugins`` and ``load_entrypoints=False``.

    The first emit starts a bus that was not started (:meth:`start`), and :meth:`close`
    delivers what was emitted, within its timeout. Which role the bus takes is decided when
    it starts: a server (``serve()`` was called: the Socket.IO plugin does it), a Redis
    producer (``EVENTBUS_REDIS_URL`` without ``serve()``), a *forwarder* (``config.forward``,
    true for ``from_env()``, without ``serve()`` or Redis: its events go to the running
    server over HTTP, see :mod:`eventbus.forwarder`), or local (everything in-process).
    A producer or a forwarder delivers to its ``local`` transports only (agents' receivers
    in this process); the server delivers to the rest.

    :param config: settings (defaults when omitted).
    :param plugins: plugin objects registered before entry points.
    :param load_entrypoints: load installed plugins from the ``eventbus`` entry-point group.
    :param connect_signals: listen to the global blinker signals (agents' ``send``).
    :param history: a history backend (memory when omitted).
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        plugins: Iterable[Any] = (),
        load_entrypoints: bool = True,
        connect_signals: bool = True,
        history: History | None = None,
    ):
        self.config = config or Config()
        self.registry = EventRegistry()
        self.pm: PluginManager = create_plugin_manager(self.config, plugins, load_entrypoints)
        self.pm.hook.eventbus_register_event_types(register=self.registry.register)
        self.redis: RedisLink | None = None
        #: "local" (one process), "server" (Redis: serves clients), "producer" (Redis: an
        #: agent process whose events the servers deliver)
        self.role = "local"
        if self.config.redis_url and history is None:
            from .redis_streams import RedisLink

            self.redis = RedisLink(self.config)
            self.redis.on_fanout = self._deliver_fanout
            self.redis.on_ingest = self._publish_ingested
            self.redis.on_epoch_change = self._epoch_changed
            self.role = "producer"
            history = self.redis.history
        self.history: History = history or MemoryHistory.from_config(self.config)
        self.workers: list[TransportWorker] = []
        self._lock = threading.Lock()
        self._start_lock = threading.RLock()
        self._started = False
        self._closed = False
        self._serving = False
        #: Sends this bus's events to the server when the bus is a forwarder.
        self.forwarder: Forwarder | None = None
        self._recent_ids = RecentIds(self.config.publish_dedupe_size)
        self._dedupe_lock = threading.Lock()
        self._counted = threading.local()  # the id of the last event this thread counted
        self._spawn: Spawn = spawn_thread
        self.counters = {"emitted": 0, "rejected": 0, "dropped_by_hook": 0}
        self.type_counts: Counter[str] = Counter()
        self._event_hook = self.pm.hook.eventbus_event
        self._receivers: list[tuple[Any, Callable[..., None]]] = []
        self.pm.hook.eventbus_register_transports(register=self.add_transport, config=self.config)
        self.add_transport(SignalTransport())
        signals.bus_created(self)
        if connect_signals:
            self._connect_signals()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> EventBus:
        """A bus configured from environment variables (and ``eventbus.toml``)."""
        return cls(Config.from_env(environ), **kwargs)

    # -- transports -----------------------------------------------------------------
    def add_transport(self, transport: Transport) -> TransportWorker:
        if any(w.name == transport.name for w in self.workers):
            raise EventBusError(f"a transport named {transport.name!r} is already registered")
        worker = TransportWorker(transport, self.config.queue_size, self.config.overflow)
        self.workers.append(worker)
        if self._started and self._runs_here(worker):
            worker.start(self, self._spawn)
        return worker

    def _runs_here(self, worker: TransportWorker) -> bool:
        """A forwarder runs only its local transports: the server delivers to the others
        (a webhook outbox or a log sink opened here too would deliver twice)."""
        return self.role != "forwarder" or worker.transport.local

    def transport(self, name: str) -> Transport:
        for worker in self.workers:
            if worker.name == name:
                return worker.transport
        raise KeyError(name)

    def start(self, spawn: Spawn | None = None) -> None:
        """Start every transport worker and decide the bus's role (see the class). ``spawn(target)``
        runs a background task; the Socket.IO plugin passes the server's
        ``start_background_task`` so workers run in the server's async mode. The first emit
        starts a bus that was not started."""
        with self._start_lock:
            if self._started:
                return
            if spawn is not None:
                self._spawn = spawn
            if self.redis is None and self.config.forward and not self._serving:
                self.role = "forwarder"
                self.forwarder = Forwarder(self.config, self._issue_token)
            self._started = True
            for worker in self.workers:
                if self._runs_here(worker):
                    worker.start(self, self._spawn)
            if self.forwarder is not None:
                self.forwarder.start(self._spawn)
                atexit.register(_close_at_exit, weakref.ref(self))
            if self.redis is not None:
                self.redis.start(self.role, self._spawn)

    def serve(self) -> None:
        """Make this process a server: it never forwards, and with Redis it assigns ``seq``,
        delivers the events it accepts (and those it takes from the ingest stream) to its
        transports, and tails the fan-out stream for its Socket.IO clients. Called by the
        Socket.IO plugin. A bus that started forwarding already (an event was emitted before
        ``init_app``) stops and delivers its unsent events here instead."""
        with self._start_lock:
            self._serving = True
            if self.redis is not None:
                if self._started and self.role != "server":
                    raise EventBusError("serve() must be called before start()")
                self.role = "server"
            elif self.forwarder is not None:
                self._stop_forwarding()

    def _stop_forwarding(self) -> None:
        forwarder, self.forwarder = self.forwarder, None
        assert forwarder is not None
        unsent = forwarder.stop()
        self.role = "local"
        for worker in self.workers:
            worker.start(self, self._spawn)  # no-op for the ones already running
        for event in unsent:
            self._publish_local(event, self.registry.get(event.type).history
                                if event.type in self.registry else True, count=False)

    def _issue_token(self) -> str | None:
        """A token for the forwarder: ``eventbus_issue_token`` (the auth plugin signs one
        with the local secret key)."""
        token: str | None = self.pm.hook.eventbus_issue_token(user=TOKEN_USER, roles=list(TOKEN_ROLES),
                                                              ttl=TOKEN_TTL)
        return token

    @property
    def started(self) -> bool:
        return self._started

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, timeout: float = 5.0) -> bool:
        """Disconnect from signals and drain every transport within ``timeout`` seconds in
        all. Returns True when nothing was abandoned."""
        if self._closed:
            return True
        if not self._started and any(worker.depth for worker in self.workers):
            self.start()  # events were queued before any start: deliver them now
        self._closed = True
        self._disconnect_signals()
        deadline = time.monotonic() + timeout
        ok = True
        if self.forwarder is not None:
            ok = self.forwarder.close(timeout)  # bounded; reports what the server did not take
        if self.redis is not None:
            self.redis.close(timeout)  # waits (bounded) for Redis to take what is buffered
        for worker in self.workers:
            ok = worker.close(max(0.0, deadline - time.monotonic())) and ok
        return ok

    def __enter__(self) -> EventBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- signals --------------------------------------------------------------------
    def _connect_signals(self) -> None:
        for spec in self.registry:
            signal = signals.signal(spec.name)

            def receiver(sender: Any, _type: str = spec.name, **kwargs: Any) -> None:
                self._on_signal(_type, sender, kwargs)

            signal.connect(receiver, weak=False)
            self._receivers.append((signal, receiver))
        signals.bus_connected(self)

    def _disconnect_signals(self) -> None:
        for signal, receiver in self._receivers:
            signal.disconnect(receiver)
        self._receivers.clear()
        signals.bus_disconnected(self)

    def _on_signal(self, event_type: str, sender: Any, kwargs: dict[str, Any]) -> None:
        if isinstance(kwargs.get("event"), Event):
            return  # our own re-broadcast of an event that came from a client
        envelope = {name: kwargs.pop(name) for name in ENVELOPE_KWARGS if name in kwargs}
        try:
            self.emit(event_type, kwargs, source=_source_name(sender), origin="signal", **envelope)
        except EventBusError as exc:
            # The sender is an agent: never raise into it; count and log instead.
            log.warning("signal %s from %s refused: %s", clean(event_type), clean(repr(sender)), clean(str(exc)))
        except Exception:  # exiting anyway
            log.exception("signal %s from %s failed", clean(event_type), clean(repr(sender)))

    # -- emitting -------------------------------------------------------------------
    def emit(
        self,
        event_type: str,
        data: Mapping[str, Any] | None = None,
        *,
        room: str | None = None,
        session_id: str | None = None,
        user_id: str | None = None,
        source: str | None = None,
        origin: str = "api",
    ) -> Event | None:
        """Build, sequence and deliver one event. Safe from any thread.

        Raises :class:`~eventbus.events.InvalidEventError` (with a ``code``) for an unknown
        type, data that is not a JSON object, data over the size limit or a bad room.
        Returns the event, or ``None`` when an ``eventbus_event`` plugin dropped it.
        """
        event, spec = self._build(event_type, data, room, session_id, user_id, source, origin)
        return self.publish(event, keep=spec.history)

    def emit_once(
        self,
        event_id: str,
        event_type: str,
        data: Mapping[str, Any] | None = None,
        *,
        room: str | None = None,
        session_id: str | None = None,
        user_id: str | None = None,
        source: str | None = None,
        origin: str = "api",
    ) -> Publication:
        """:meth:`emit` an event whose id the publisher chose, once: an id published before
        within the dedupe window is not delivered again. Without Redis the window is this
        bus's last ``publish_dedupe_size`` ids of the last 10 minutes; with Redis it is
        Redis's id markers (10 minutes, shared by every server). Raises like :meth:`emit`."""
        event, spec = self._build(event_type, data, room, session_id, user_id, source, origin, event_id)
        if self.redis is not None:
            self._counted.id = None
            published = self.publish(event, keep=spec.history)
            if published is None:
                return Publication(event.id, event.type, event.room, None, dropped=True)
            # Redis recognised the id when the event was not counted (its marker gave the seq).
            duplicate = getattr(self._counted, "id", None) != event.id
            seq = event.seq
            if duplicate and seq is None:
                seq = self._marker_seq(event.id)  # known from the fan-out stream: ask the marker
            return Publication(event.id, event.type, event.room, seq, duplicate=duplicate)
        with self._dedupe_lock:
            seen = self._recent_ids.get(event.id)
            if seen is not None:
                return Publication(event.id, event.type, seen[0], seen[1], duplicate=True)
            published = self.publish(event, keep=spec.history)
            if published is None:
                return Publication(event.id, event.type, event.room, None, dropped=True)
            self._recent_ids.add(event.id, event.room, event.seq)
        return Publication(event.id, event.type, event.room, event.seq)

    def _marker_seq(self, event_id: str) -> int | None:
        """The seq Redis's id marker holds for ``event_id``; ``None`` when it is gone, the
        event was kept out of history, or Redis does not answer."""
        redis = self.redis
        assert redis is not None
        try:
            value = redis.client.get(redis.key(f"id:{event_id}"))
            return int(value) or None
        except Exception:  # noqa: BLE001 - the seq is a courtesy; the duplicate is still known
            return None

    def _build(self, event_type: str, data: Any, room: str | None, session_id: str | None,
               user_id: str | None, source: str | None, origin: str,
               event_id: str | None = None) -> tuple[Event, EventTypeSpec]:
        """A validated event (not yet published); counts and raises what is refused."""
        try:
            spec = self.registry.get(str(event_type))
            payload = check_data(dict(data) if isinstance(data, Mapping) else data,
                                 self.config.max_event_bytes, max_depth=self.config.max_json_depth)
            event = Event(
                type=spec.name,
                data=payload,
                room=self.registry.resolve_room(spec, room, session_id),
                user_id=None if user_id is None else str(user_id),
                session_id=None if session_id is None else str(session_id),
                source=source,
                origin=origin,
            )
        except EventBusError:
            self.counters["rejected"] += 1
            raise
        if event_id is not None:
            event.id = event_id
        return event, spec

    def publish(self, event: Event, keep: bool | None = None) -> Event | None:
        """Deliver an already-built event (from another process, or a test). Starts the bus
        when it was not started."""
        if self._closed:
            raise EventBusError("the bus is closed", code="closed")
        if not self._started:
            self.start()
        if self._event_hook.get_hookimpls():
            results = self._event_hook(event=event)
            if any(result is False for result in results):
                self.counters["dropped_by_hook"] += 1
                return None
        if keep is None:
            keep = self.registry.get(event.type).history
        if self.redis is not None:
            return self._publish_redis(event, keep)
        forwarder = self.forwarder
        if forwarder is not None:
            # An agent process: the server assigns seq and delivers; never wait for it.
            with self._lock:
                self._count(event)
                forwarder.submit(event)
                for worker in self.workers:
                    if worker.transport.local and worker.transport.accepts(event):
                        worker.submit(event)
            return event
        return self._publish_local(event, keep)

    def _publish_local(self, event: Event, keep: bool, count: bool = True) -> Event:
        with self._lock:
            # Assigning seq and queueing under one lock keeps each room's queue in seq order.
            self.history.append(event, keep)
            if count:
                self._count(event)
            for worker in self.workers:
                if worker.transport.accepts(event):
                    worker.submit(event)
        return event

    def _count(self, event: Event) -> None:
        self.counters["emitted"] += 1
        self.type_counts[event.type] += 1
        self._counted.id = event.id

    def _publish_redis(self, event: Event, keep: bool) -> Event:
        redis = self.redis
        assert redis is not None
        if self.role == "producer":
            # An agent process: the servers assign seq and deliver; never wait for Redis.
            with self._lock:
                self._count(event)
                redis.buffer(event, keep, delivered_locally=False)
                for worker in self.workers:
                    if worker.transport.local and worker.transport.accepts(event):
                        worker.submit(event)
            return event
        with self._lock:
            try:
                if redis.pending:
                    # Older events still wait for Redis: keep the order by queueing behind them.
                    raise RedisUnavailable("events are still waiting for Redis")
                if not redis.publish(event, keep):
                    return event  # published already (the same event id came twice)
                local_fanout = False
            except RedisUnavailable:
                # Redis is away: deliver here now, without a seq, and publish later so the
                # other servers and the history get it too.
                event.seq = None
                redis.buffer(event, keep, delivered_locally=True)
                local_fanout = True
            self._count(event)
            self._submit_redis(event, local_fanout)
        return event

    def _submit_redis(self, event: Event, local_fanout: bool) -> None:
        for worker in self.workers:
            transport = worker.transport
            if transport.fanout and not local_fanout:
                continue  # reaches this server's clients through the fan-out stream
            if transport.accepts(event):
                worker.submit(event)

    def _deliver_fanout(self, event: Event) -> None:
        """An event from the fan-out stream: hand it to the transports that serve every
        server's own clients (Socket.IO)."""
        for worker in self.workers:
            if worker.transport.fanout and worker.transport.accepts(event):
                worker.submit(event)

    def _epoch_changed(self, epoch: str) -> None:
        """The shared history lost continuity: tell each fan-out transport, in stream order."""
        for worker in self.workers:
            if worker.transport.fanout:
                worker.call_soon(functools.partial(worker.transport.epoch_changed, epoch))

    def _publish_ingested(self, event: Event, ref: IngestRef) -> None:
        """An agent process's event, taken from an ingest partition by this server.

        Published (once per event id) in the partition's order, or skipped past; never
        buffered here: while Redis is away the entry waits in its partition, and
        :class:`~eventbus.redis_streams.RedisUnavailable` tells the ingest loop to retry it."""
        redis = self.redis
        assert redis is not None
        if self._event_hook.get_hookimpls():
            if any(result is False for result in self._event_hook(event=event)):
                self.counters["dropped_by_hook"] += 1
                redis.skip_ingest(ref)
                return
        if event.type not in self.registry:
            self.counters["rejected"] += 1
            log.warning("ingested event %s has unknown type %s; skipped", clean(event.id), clean(event.type))
            redis.skip_ingest(ref)
            return
        with self._lock:
            if not redis.publish(event, self.registry.get(event.type).history, ingest=ref):
                return  # published already: a resend, or a cursor Redis had lost
            self._count(event)
            self._submit_redis(event, local_fanout=False)

    # -- auth -----------------------------------------------------------------------
    def authenticate(self, auth: Mapping[str, Any] | None, environ: Mapping[str, Any] | None = None,
                     request: RequestContext | None = None) -> Identity | None:
        """Ask the ``eventbus_authenticate`` strategies; ``None`` when none recognises the
        request. Strategies may raise :class:`~eventbus.identity.AuthError`. Without a
        ``request``, one is read from ``environ`` (transport ``api``)."""
        if request is None:
            request = RequestContext.from_environ(environ or {}, "api")
        identity: Identity | None = self.pm.hook.eventbus_authenticate(
            auth=dict(auth or {}), environ=environ or {}, request=request)
        return identity

    def identify(self, request: RequestContext, auth: Mapping[str, Any] | None = None) -> Identity:
        """The caller of ``request``: its credentials (``auth``, else an ``Authorization:
        Bearer`` token) and the request itself, put to the ``eventbus_authenticate``
        strategies. Raises :class:`~eventbus.identity.AuthError` (``unauthorized``) when
        none accepts it, saying whether credentials were missing or not accepted."""
        credentials = dict(auth or {})
        if not credentials.get("token") and not credentials.get("api_key"):
            bearer = request.bearer_token()
            if bearer:
                credentials["token"] = bearer
        identity = self.authenticate(credentials, request.environ, request)
        if identity is None:
            if not credentials.get("token") and not credentials.get("api_key"):
                hint = ("connect with auth: {token}" if request.transport == "socketio"
                        else "send Authorization: Bearer <token>")
                raise AuthError(f"a token is required: {hint}", code="unauthorized")
            raise AuthError("the token was not accepted", code="unauthorized")
        return identity

    def authorize(self, identity: Identity, namespace: str, room: str | None, action: str) -> bool:
        """``eventbus_authorize``; no answer means deny."""
        return bool(self.pm.hook.eventbus_authorize(
            identity=identity, namespace=namespace, room=room, action=action))

    # -- status ---------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {
            "counters": dict(self.counters),
            "events_by_type": dict(self.type_counts),
            "transports": [worker.snapshot() for worker in self.workers],
            "history": {"epoch": self.history.epoch, "rooms": self.history.rooms()},
            "role": self.role,
            "redis": None if self.redis is None else self.redis.health(),
            "forwarder": None if self.forwarder is None else self.forwarder.status(),
            "plugins": [row["name"] for row in self.pm.describe()],
            "plugin_failures": [f.__dict__ for f in self.pm.failures],
            "signal_receiver_failures": signals.receiver_failures(),
        }


def _close_at_exit(ref: weakref.ReferenceType[EventBus]) -> None:
    """At interpreter exit: give a forwarding bus :data:`EXIT_TIMEOUT` seconds to deliver
    what it buffered; what is left is counted and reported by the forwarder."""
    bus = ref()
    if bus is not None and not bus.closed:
        try:
            bus.close(EXIT_TIMEOUT)
        except Exception:
            log.exception("closing the bus at exit failed")


def _source_name(sender: Any) -> str | None:
    if sender is None or isinstance(sender, str):
        return sender
    return getattr(sender, "name", None) or getattr(sender, "__name__", None) or type(sender).__name__
