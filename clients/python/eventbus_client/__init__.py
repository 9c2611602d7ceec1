"""``eventbus_client``: the Python client for an eventbus server, python-socketio plus
per-room sequence tracking, so a reconnect resumes every room with no gap and no duplicate.
It lives outside the ``eventbus`` core, which never imports a client library.

The same protocol as ``clients/js/eventbus-client.js``: after every (re)connect the client
sends ``resume {rooms: {room: last_seq}, epoch}``; events are delivered strictly in ``seq``
order, each once; gaps that do not close and ``resync_required`` are filled from
``GET /api/events``. Each event id reaches the application once: a server that lost its
Redis delivers events at once without a ``seq`` and they come back later with one, so the
ids of the last :data:`DEDUPE_WINDOW` delivered events are remembered and skipped when they
return (their ``seq`` still advances the stream). Needs ``pip install 'eventbus[client]'``
(python-socketio's client and requests).
"""

from __future__ import annotations

import logging
import queue
import random
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from eventbus.redact import redact_url

log = logging.getLogger("eventbus.client")

T = TypeVar("T")
Handler = Callable[..., Any]

STATES = ("connecting", "connected", "reconnecting", "disconnected")
#: Rooms the server puts a client in on connect, per namespace.
DEFAULT_ROOMS = {"/monitoring": ("monitoring",), "/admin": ("admin",), "/chat": ()}
#: Refusals a retry cannot fix; the client stops reconnecting on these.
FINAL_REFUSALS = ("unauthorized", "forbidden", "token_expired")
#: How many delivered event ids the client remembers (the default of ``dedupe_window``).
DEDUPE_WINDOW = 10_000
#: History fetches per resync before the gap is skipped as unverified.
FETCH_ATTEMPTS = 5


class EventBusClientError(Exception):
    """An ``{ok: false}`` ack, a refused connection or a timeout; ``code`` says which."""

    def __init__(self, code: str, message: str = "", detail: Any = None):
        super().__init__(message or code)
        self.code = code
        self.message = message or code
        self.detail = detail


_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^\"')\]]+)")
_QUERY = re.compile(r"\?[^\s\"')]*")


def _failure_reason(exc: BaseException) -> str:
    """Why a connection attempt failed, in a few words: the innermost operating-system
    reason under the client library's errors (``Connection refused``, ``timed out``; the
    polling transport passes it on only as text), else the first line of the error
    without any URL query."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        if isinstance(current, TimeoutError):
            return "timed out"
        current = current.__cause__ or current.__context__
    text = str(exc)
    found = _ERRNO_TEXT.search(text)
    if found:
        return found.group(1).strip()
    if "timed out" in text:
        return "timed out"
    return _QUERY.sub("", (text.splitlines() or [type(exc).__name__])[0])[:200]


def _missing(extra_of: str, exc: ImportError) -> ImportError:
    return ImportError(f"EventBusClient needs {extra_of}: pip install 'eventbus[socketio]' ({exc})")


@dataclass
class _Waiter:
    done: threading.Event = field(default_factory=threading.Event)
    ack: dict[str, Any] | None = None
    error: EventBusClientError | None = None

    def settle(self, ack: dict[str, Any] | None = None, error: EventBusClientError | None = None) -> None:
        self.ack, self.error = ack, error
        self.done.set()


class _RecentIds:
    """The ids of the last ``size`` delivered events, oldest first."""

    def __init__(self, size: int):
        self.size = max(1, size)
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, event_id: str) -> None:
        self._ids[event_id] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)


@dataclass
class _RoomStream:
    last: int | None = None  # last delivered seq; None until the first join ack
    epoch: str | None = None  # the server history epoch ``last`` belongs to
    confirmed: bool = False  # False from (re)connect until this room's join/resume ack
    held: list[dict[str, Any]] = field(default_factory=list)
    pending: dict[int, dict[str, Any]] = field(default_factory=dict)  # ahead of a gap
    resyncing: bool = False
    resync_hint: dict[str, Any] | None = None
    gap_timer: threading.Timer | None = None
    waiters: list[_Waiter] = field(default_factory=list)
    #: ids (-> type) delivered here without a seq that have not come back with one yet
    unmatched: OrderedDict[str, str] = field(default_factory=OrderedDict)

    def cancel_gap_timer(self) -> None:
        if self.gap_timer is not None:
            self.gap_timer.cancel()
            self.gap_timer = None


_STOP = object()


class EventBusClient:
    """Connect to one namespace, follow rooms across reconnects, deliver each event once.

    :param url: the server origin, e.g. ``http://localhost:5050``.
    :param namespace: ``/monitoring`` (default), ``/chat`` or ``/admin``.
    :param token: a token, or a callable returning one (called at every connection attempt
        and history fetch, so it can refresh).
    :param rooms: rooms to follow; the namespace's default room is always followed.
    :param on_resync: ``fn(info)`` after a history fetch, ``info`` =
        ``{room, epoch, previous_epoch, fetched, lost, unverified, gaps, complete}``:
        ``gaps`` are the ``[first, last]`` seq ranges the stream skipped; ``lost`` counts
        those events that were neither delivered nor in history; ``unverified`` those that
        may have been delivered already without a seq (or history could not be read), so
        they are not reported lost; ``complete`` means nothing was skipped.
    :param on_state_change: ``fn(state, previous)``.
    :param on_error: ``fn(exc)`` for refusals, failed fetches and handler exceptions.
    :param gap_timeout: seconds a seq gap may stay open before it is filled from history
        (events may arrive out of order: python-socketio handles each in its own thread).
    :param reconnect_on_server_disconnect: reconnect when the server closes the namespace
        (python-socketio does not).
    :param socket: a ``socketio.Client``-like object (tests); built on :meth:`connect` otherwise.
    :param session: a ``requests.Session`` for history fetches.
    :param batch: ask for `events` packets (lists of envelopes) when the server batches
        (``EVENTBUS_BATCH_WINDOW_MS``); handlers still get one envelope at a time.
    :param dedupe_window: how many delivered event ids to remember, so an event that comes
        back (with a seq after being delivered without one, or under a second seq) is not
        delivered again. Keep it above the number of events a Redis outage may buffer.
    :param fetch_retry_delay: seconds before the second history fetch of a resync; doubled
        for each further one (at most 2 s), :data:`FETCH_ATTEMPTS` in all.

    Handlers run one at a time, in delivery order, on the client's dispatch thread.
    """

    def __init__(self, url: str, namespace: str = "/monitoring", token: str | Callable[[], str] | None = None,
                 rooms: Iterable[str] = (), *, on_resync: Handler | None = None,
                 on_state_change: Handler | None = None, on_error: Handler | None = None,
                 ack_timeout: float = 10.0, gap_timeout: float = 1.0, reconnect_delay: float = 0.5,
                 reconnect_delay_max: float = 10.0, reconnect_on_server_disconnect: bool = True,
                 transports: Iterable[str] = ("websocket",), socket: Any = None, session: Any = None,
                 batch: bool = False, dedupe_window: int = DEDUPE_WINDOW, fetch_retry_delay: float = 0.25):
        self.url = url.rstrip("/")
        self.batch = batch
        self.namespace = namespace
        self._token = token
        self._on_resync = on_resync
        self._on_error = on_error
        self.ack_timeout = ack_timeout
        self.gap_timeout = gap_timeout
        self.fetch_retry_delay = fetch_retry_delay
        self.reconnect_delay = reconnect_delay
        self.reconnect_delay_max = reconnect_delay_max
        self.reconnect_on_server_disconnect = reconnect_on_server_disconnect
        self.transports = list(transports)
        self._session = session
        self._sio = socket
        self._handlers_installed = False
        self._lock = threading.RLock()
        self._cond = threading.Condition()
        self._handlers: dict[str, list[Handler]] = {}
        self._state_listeners: list[Handler] = [on_state_change] if on_state_change else []
        self._rooms: dict[str, _RoomStream] = {}
        self._delivered = _RecentIds(dedupe_window)
        self._seq_types: set[str] = set()  # event types seen with a seq (kept in history)
        self._generation = 0  # bumped at every disconnect; stale acks and fetches are ignored
        self._ever_connected = False
        self._closed = threading.Event()
        self._reconnecting = False
        self._refusal: EventBusClientError | None = None
        self.state = "disconnected"
        self.last_error: BaseException | None = None
        self.stats = {"delivered": 0, "duplicates": 0, "lost": 0, "unverified": 0, "resyncs": 0, "fetches": 0}
        for room in (*DEFAULT_ROOMS.get(namespace, ()), *rooms):
            self._rooms.setdefault(room, _RoomStream())
        self._outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name="eventbus-client-dispatch",
                                            daemon=True)
        self._dispatcher.start()

    # -- public API ---------------------------------------------------------------------
    def on(self, event_type: str, handler: Handler) -> Callable[[], None]:
        """Call ``handler(envelope)`` for each event of ``event_type``; ``"*"`` gets
        ``handler(event_type, envelope)`` for all. Returns a function that unsubscribes."""
        with self._lock:
            self._handlers.setdefault(event_type, []).append(handler)
        return lambda: self.off(event_type, handler)

    def off(self, event_type: str, handler: Handler) -> None:
        with self._lock:
            handlers = self._handlers.get(event_type, [])
            if handler in handlers:
                handlers.remove(handler)

    def on_state_change(self, handler: Handler) -> Callable[[], None]:
        with self._lock:
            self._state_listeners.append(handler)
        return lambda: self._state_listeners.remove(handler)

    def connect(self, timeout: float = 10.0) -> EventBusClient:
        """Connect and resume the rooms (returns once every room is followed); raises :class:`EventBusClientError` (``code``
        ``unauthorized``, ``forbidden``, ``token_expired`` or ``connection_failed``)."""
        self._closed.clear()
        self._set_state("reconnecting" if self._ever_connected else "connecting")
        with self._lock:
            waiters = [_Waiter() for _ in self._rooms]
            for stream, waiter in zip(self._rooms.values(), waiters):
                stream.waiters.append(waiter)
        try:
            self._open(timeout)
        except EventBusClientError:
            self._set_state("disconnected")
            raise
        for waiter in waiters:  # every room followed from here on
            self._wait(waiter, timeout, "resume")
        return self

    def close(self) -> None:
        """Disconnect for good and stop the dispatch thread."""
        self._closed.set()
        with self._lock:
            for stream in self._rooms.values():
                stream.cancel_gap_timer()
        if self._sio is not None and getattr(self._sio, "connected", False):
            self._sio.disconnect()
        self._set_state("disconnected")
        self._outbox.put(_STOP)
        if threading.current_thread() is not self._dispatcher:
            self._dispatcher.join(5)

    def __enter__(self) -> EventBusClient:
        return self.connect()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def join(self, room: str, timeout: float | None = None) -> dict[str, Any]:
        """Follow ``room`` (now and after every reconnect); returns the join ack."""
        waiter = _Waiter()
        with self._lock:
            stream = self._rooms.setdefault(room, _RoomStream())
            stream.waiters.append(waiter)
            connected = self._connected()
        if connected:
            self._resume([room])
        return self._wait(waiter, timeout, f"join {room}")

    def leave(self, room: str, timeout: float | None = None) -> dict[str, Any]:
        """Stop following ``room``."""
        with self._lock:
            stream = self._rooms.pop(room, None)
            if stream is not None:
                stream.cancel_gap_timer()
        if not self._connected():
            return {"ok": True, "room": room}
        return self.send("leave_room", {"room": room}, timeout)

    def send(self, event: str, data: Any, timeout: float | None = None) -> dict[str, Any]:
        """Emit a client event and return its ack; raises :class:`EventBusClientError` on
        ``{ok: false}`` or when no ack arrives within ``timeout``."""
        waiter = _Waiter()

        def answered(ack: Any = None, *_: Any) -> None:
            if isinstance(ack, dict) and ack.get("ok") is True:
                waiter.settle(ack)
            else:
                error = ack.get("error", {}) if isinstance(ack, dict) else {}
                waiter.settle(error=EventBusClientError(error.get("code", "error"), error.get("message", ""), ack))

        try:
            self._sio.emit(event, data, namespace=self.namespace, callback=answered)
        except Exception as exc:  # noqa: BLE001 - python-socketio: namespace not connected
            raise EventBusClientError("disconnected", f"{event} not sent: {exc}") from None
        return self._wait(waiter, timeout, event)

    def positions(self) -> dict[str, dict[str, Any]]:
        """``{room: {"seq", "epoch"}}``: where each followed room's stream stands."""
        with self._lock:
            return {room: {"seq": s.last, "epoch": s.epoch} for room, s in self._rooms.items()}

    def wait_for(self, predicate: Callable[[], T], timeout: float = 10.0) -> T:
        """Block until ``predicate()`` is truthy (re-checked after every delivery and state
        change) and return its value; raises ``TimeoutError`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"condition not met within {timeout}s (state {self.state})")
                self._cond.wait(min(remaining, 0.25))

    # -- connection lifecycle -----------------------------------------------------------
    def _auth(self) -> dict[str, Any]:
        token = self._token() if callable(self._token) else self._token
        auth: dict[str, Any] = {"token": token} if token else {}
        if self.batch:
            auth["batch"] = True  # the server may then send `events` lists; unpacked below
        return auth

    def _connected(self) -> bool:
        return self.state == "connected" and self._sio is not None and bool(getattr(self._sio, "connected", False))

    def _ensure_socket(self) -> Any:
        if self._sio is None:
            try:
                import socketio
            except ImportError as exc:
                raise _missing("python-socketio", exc) from None
            self._sio = socketio.Client(reconnection=False, logger=False, engineio_logger=False)
        if not self._handlers_installed:
            ns = self.namespace
            self._sio.on("connect", self._on_connect, namespace=ns)
            self._sio.on("disconnect", self._on_disconnect, namespace=ns)
            self._sio.on("connect_error", self._on_connect_error, namespace=ns)
            self._sio.on("*", self._on_server_event, namespace=ns)
            self._handlers_installed = True
        return self._sio

    def _open(self, timeout: float) -> None:
        sio = self._ensure_socket()
        self._refusal = None
        try:
            sio.connect(self.url, namespaces=[self.namespace], auth=self._auth, transports=self.transports,
                        wait_timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - socketio/engineio raise several kinds
            if self._refusal is not None and self._refusal.code != "connection_failed":
                raise self._refusal from None  # the server's refusal, with its code
            raise EventBusClientError("connection_failed", self._cannot_connect(_failure_reason(exc)),
                                      exc) from None

    def _cannot_connect(self, reason: Any) -> str:
        """``cannot connect to URL/NAMESPACE: REASON``, the URL without user info or query."""
        return f"cannot connect to {redact_url(self.url).rstrip('/')}{self.namespace}: {reason}"

    def _set_state(self, state: str) -> None:
        with self._lock:
            previous, self.state = self.state, state
            if previous == state:
                return
            listeners = list(self._state_listeners)
        for listener in listeners:
            self._outbox.put((listener, (state, previous)))
        with self._cond:
            self._cond.notify_all()

    def _error(self, exc: BaseException) -> None:
        self.last_error = exc
        if self._on_error is not None:
            self._outbox.put((self._on_error, (exc,)))

    def _on_connect(self) -> None:
        self._ever_connected = True
        self._set_state("connected")
        with self._lock:
            rooms = list(self._rooms)
        self._resume(rooms)

    def _on_connect_error(self, data: Any = None, *_: Any) -> None:
        if isinstance(data, Mapping) and isinstance(data.get("data"), Mapping):
            data = data["data"]  # python-socketio passes {message, data: {code, message}}
        if isinstance(data, Mapping) and data.get("code"):
            self._refusal = EventBusClientError(str(data["code"]), str(data.get("message", "")), dict(data))
        else:  # the client library's own failure ("Connection error"): no server answered
            self._refusal = EventBusClientError("connection_failed", self._cannot_connect(data), data)
        self._error(self._refusal)
        with self._lock:
            for stream in self._rooms.values():
                waiters, stream.waiters = stream.waiters, []
                for waiter in waiters:
                    waiter.settle(error=self._refusal)

    def _on_disconnect(self, reason: Any = None) -> None:
        with self._lock:
            self._generation += 1
            for stream in self._rooms.values():
                stream.cancel_gap_timer()
                stream.confirmed = stream.resyncing = False
                stream.resync_hint = None
                stream.held.clear()
                stream.pending.clear()  # not delivered yet, so the resume replays them
        if self._closed.is_set() or str(reason) == "client disconnect" or (str(reason) == "server disconnect" and not self.reconnect_on_server_disconnect):
            self._set_state("disconnected")
        else:
            self._set_state("reconnecting")
            self._start_reconnect()

    def _start_reconnect(self) -> None:
        with self._lock:
            if self._reconnecting:
                return
            self._reconnecting = True
        threading.Thread(target=self._reconnect_loop, name="eventbus-client-reconnect", daemon=True).start()

    def _reconnect_loop(self) -> None:
        delay = self.reconnect_delay
        try:
            while not self._closed.is_set():
                if self._closed.wait(delay * random.uniform(0.75, 1.25)):
                    return
                # The socket finishes closing on its own thread; connect() refuses until then.
                deadline = time.monotonic() + 5
                eio = getattr(self._sio, "eio", None)
                while (getattr(self._sio, "connected", False)
                       or (eio is not None and eio.state not in ("disconnected",))) and time.monotonic() < deadline:
                    if self._closed.wait(0.05):
                        return
                try:
                    self._open(10.0)
                    return
                except EventBusClientError as exc:
                    if exc.code in FINAL_REFUSALS:
                        self._set_state("disconnected")
                        return
                    log.info("reconnect to %s%s failed: %s", redact_url(self.url), self.namespace, exc)
                delay = min(delay * 2, self.reconnect_delay_max)
        finally:
            with self._lock:
                self._reconnecting = False

    # -- joins and resume ---------------------------------------------------------------
    def _resume(self, rooms: Iterable[str]) -> None:
        groups: dict[str | None, dict[str, int | None]] = {}
        with self._lock:
            generation = self._generation
            for room in rooms:
                stream = self._rooms.get(room)
                if stream is None:
                    continue
                stream.confirmed = False
                groups.setdefault(stream.epoch, {})[room] = stream.last
        for epoch, rooms_at in groups.items():
            def answered(ack: Any = None, *_: Any, rooms_at: dict[str, int | None] = rooms_at) -> None:
                self._on_resume_ack(generation, rooms_at, ack)

            try:
                self._sio.emit("resume", {"rooms": rooms_at, "epoch": epoch}, namespace=self.namespace,
                               callback=answered)
            except Exception as exc:  # noqa: BLE001 - disconnected meanwhile: the next connect resumes
                log.info("resume not sent: %s", exc)

    def _on_resume_ack(self, generation: int, rooms_at: dict[str, int | None], ack: Any) -> None:
        with self._lock:
            if generation != self._generation:
                return
            if not isinstance(ack, dict) or ack.get("ok") is not True:
                error = ack.get("error", {}) if isinstance(ack, dict) else {}
                exc = EventBusClientError(error.get("code", "error"), error.get("message", ""), ack)
                self._error(exc)
                for room in rooms_at:  # refused (forbidden, invalid_room): stop following it
                    stream = self._rooms.pop(room, None)
                    if stream is not None:
                        for waiter in stream.waiters:
                            waiter.settle(error=exc)
                return
            for room in rooms_at:
                result = (ack.get("rooms") or {}).get(room)
                if result is not None:
                    self._room_ack(room, {"ok": True, "room": room, "epoch": ack.get("epoch"), **result})

    def _room_ack(self, room: str, ack: dict[str, Any]) -> None:
        stream = self._rooms.get(room)
        if stream is None:
            return
        hint, stream.resync_hint = stream.resync_hint, None
        if stream.last is None:
            # A fresh room starts at its join point, or earlier when the server had already
            # put the client in it (the namespace's default room) and events came meanwhile.
            start = ack.get("seq") or 0
            stream.last = min([start, *(e["seq"] - 1 for e in stream.held)])
            stream.epoch = ack.get("epoch")
        if ack.get("resync_required") or hint:
            self._start_resync(room, stream, ack.get("epoch"), ack.get("seq"))
        else:
            stream.confirmed = True
            held, stream.held = stream.held, []
            for envelope in held:
                self._accept(stream, envelope)
            self._drain(room, stream)
        waiters, stream.waiters = stream.waiters, []
        for waiter in waiters:
            waiter.settle(ack)

    def _wait(self, waiter: _Waiter, timeout: float | None, what: str) -> dict[str, Any]:
        timeout = self.ack_timeout if timeout is None else timeout
        if not waiter.done.wait(timeout):
            raise EventBusClientError("timeout", f"no ack for {what} within {timeout}s")
        if waiter.error is not None:
            raise waiter.error
        return waiter.ack or {}

    # -- receiving ----------------------------------------------------------------------
    def _on_server_event(self, event: str, *args: Any) -> None:
        """Every server event of the namespace arrives here (python-socketio's ``"*"``)."""
        payload = args[0] if args else None
        if event == "events" and isinstance(payload, list):
            # A batch: each envelope as if it had arrived as its own event.
            for envelope in payload:
                if isinstance(envelope, dict) and isinstance(envelope.get("type"), str):
                    self._receive(envelope["type"], envelope, (envelope,))
            return
        if event == "resync_required" and isinstance(payload, dict):
            with self._lock:
                room: Any = payload.get("room")  # as the server sent it: not always a str
                stream = self._rooms.get(room)
                if stream is not None:
                    if stream.confirmed and not stream.resyncing:
                        self._start_resync(payload["room"], stream, payload.get("epoch"), payload.get("latest_seq"))
                    else:  # acted on at the room's ack, or when the running resync ends
                        stream.resync_hint = payload
                self._queue(event, args)
            return
        self._receive(event, payload, args)

    def _receive(self, event_type: str, envelope: Any, args: tuple[Any, ...]) -> None:
        with self._lock:
            stream = None
            if isinstance(envelope, dict) and isinstance(envelope.get("seq"), int):
                room: Any = envelope.get("room")  # as the server sent it: not always a str
                stream = self._rooms.get(room)
            if stream is None:  # no seq (ephemeral, or Redis away), a room not followed, not an envelope
                self._deliver_untracked(event_type, envelope, args)
            elif not stream.confirmed or stream.resyncing:
                stream.held.append(envelope)
            else:
                self._accept(stream, envelope)
                self._drain(envelope["room"], stream)

    def _deliver_untracked(self, event_type: str, envelope: Any, args: tuple[Any, ...]) -> None:
        """Deliver at once; remember the id, because a server that delivered it without a
        seq (its Redis was away) publishes it later, and then it comes back with one."""
        event_id = envelope.get("id") if isinstance(envelope, dict) else None
        if isinstance(event_id, str):
            if event_id in self._delivered:
                self.stats["duplicates"] += 1
                return
            self._delivered.add(event_id)
            stream = self._rooms.get(envelope.get("room")) if envelope.get("seq") is None else None
            if stream is not None:
                stream.unmatched[event_id] = event_type
                if len(stream.unmatched) > self._delivered.size:
                    stream.unmatched.popitem(last=False)
        self._queue(event_type, args)

    def _accept(self, stream: _RoomStream, envelope: dict[str, Any]) -> None:
        seq = envelope["seq"]
        if seq <= (stream.last or 0) or seq in stream.pending:
            self.stats["duplicates"] += 1
        else:
            stream.pending[seq] = envelope
            stream.unmatched.pop(envelope.get("id"), None)  # type: ignore[arg-type]

    def _drain_contiguous(self, stream: _RoomStream) -> None:
        while stream.last is not None and stream.last + 1 in stream.pending:
            envelope = stream.pending.pop(stream.last + 1)
            stream.last += 1
            self._seq_types.add(envelope["type"])
            event_id = envelope.get("id")
            if event_id in self._delivered:
                # Delivered already (without a seq, or under another seq): its seq only
                # moves the stream on.
                self.stats["duplicates"] += 1
                continue
            if isinstance(event_id, str):
                self._delivered.add(event_id)
            self.stats["delivered"] += 1
            self._queue(envelope["type"], (envelope,))

    def _drain(self, room: str, stream: _RoomStream) -> None:
        self._drain_contiguous(stream)
        if not stream.pending:
            stream.cancel_gap_timer()
        elif stream.gap_timer is None:
            generation = self._generation
            timer = threading.Timer(self.gap_timeout, self._gap_expired, (room, stream, generation))
            timer.daemon = True
            stream.gap_timer = timer
            timer.start()

    def _gap_expired(self, room: str, stream: _RoomStream, generation: int) -> None:
        with self._lock:
            stream.gap_timer = None
            if generation == self._generation and stream.pending and not stream.resyncing \
                    and self._rooms.get(room) is stream:
                self._start_resync(room, stream, stream.epoch, max(stream.pending))

    def _queue(self, event_type: str, args: tuple[Any, ...]) -> None:
        self._outbox.put((event_type, args))

    def _dispatch_loop(self) -> None:
        while True:
            item = self._outbox.get()
            if item is _STOP:
                break
            target, args = item
            if callable(target):  # a state listener or the error callback
                self._call(target, args)
            else:
                with self._lock:
                    handlers = list(self._handlers.get(target, ())), list(self._handlers.get("*", ()))
                for handler in handlers[0]:
                    self._call(handler, args)
                for handler in handlers[1]:
                    self._call(handler, (target, *args))
            with self._cond:
                self._cond.notify_all()

    def _call(self, handler: Handler, args: tuple[Any, ...]) -> None:
        try:
            handler(*args)
        except Exception as exc:  # one handler must not stop the stream
            log.exception("eventbus client handler %r failed", handler)
            self.last_error = exc
            if self._on_error is not None and handler is not self._on_error:
                self._call(self._on_error, (exc,))

    # -- resync from history ------------------------------------------------------------
    def _start_resync(self, room: str, stream: _RoomStream, epoch: str | None, latest_seq: int | None) -> None:
        if stream.resyncing:
            return
        stream.resyncing = True
        stream.cancel_gap_timer()
        self.stats["resyncs"] += 1
        args = (room, stream, self._generation, epoch, latest_seq, stream.epoch)
        threading.Thread(target=self._resync, args=args, name="eventbus-client-resync", daemon=True).start()

    def _resync(self, room: str, stream: _RoomStream, generation: int, epoch: str | None,
                latest_seq: int | None, previous_epoch: str | None) -> None:
        """Fetch what the room's stream misses, merge it with the held live events, and
        report what could not be had. ``previous_epoch`` is the epoch ``stream.last``
        counts in: seqs of another epoch mean nothing, so that one is read from its start."""
        page, fetched = self._fetch_for_resync(room, stream, generation, epoch, previous_epoch)
        with self._lock:
            if generation != self._generation or self._rooms.get(room) is not stream or self._closed.is_set():
                return
            now = page["epoch"] if page is not None else epoch
            new_epoch = previous_epoch is not None and now is not None and now != previous_epoch
            info: dict[str, Any] = {"room": room, "epoch": None, "previous_epoch": previous_epoch,
                                    "fetched": len(fetched), "lost": 0, "unverified": 0, "gaps": [],
                                    "complete": True}
            if new_epoch:
                # Events of the old epoch received ahead of a gap are real events not yet
                # delivered: deliver them before switching. What they skipped cannot be
                # checked any more (that history is gone), so it counts as unverified.
                old: dict[str, Any] = {"gaps": [], "lost": 0, "unverified": 0}
                self._skip_to(stream, max(stream.pending, default=0), old, verified=False)
                info["unverified"] += old["unverified"]
                stream.last = 0
                stream.pending.clear()
            stream.epoch = page["epoch"] if page else (epoch or stream.epoch)
            target = page["latest_seq"] if page else max(latest_seq or 0, stream.last or 0)
            for envelope in fetched:
                self._accept(stream, envelope)
            held, stream.held = stream.held, []
            for envelope in held:
                self._accept(stream, envelope)
            stream.resyncing = False
            stream.confirmed = True
            # Everything up to ``target`` that neither history nor the socket had is gone,
            # unless it may be an event this client already delivered without a seq.
            self._skip_to(stream, target, info, verified=page is not None)
            self._drain(room, stream)
            self.stats["lost"] += info["lost"]
            self.stats["unverified"] += info["unverified"]
            info["epoch"] = stream.epoch
            info["complete"] = not info["gaps"] and not info["unverified"]
            if self._on_resync is not None:
                self._outbox.put((self._on_resync, (info,)))
            hint, stream.resync_hint = stream.resync_hint, None
            if hint is not None and hint.get("epoch") not in (None, stream.epoch):
                self._start_resync(room, stream, hint.get("epoch"), hint.get("latest_seq"))

    def _fetch_for_resync(self, room: str, stream: _RoomStream, generation: int, epoch: str | None,
                          previous_epoch: str | None) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The history after the room's position (from 0 in another epoch), or ``(None, [])``
        when it could not be read in :data:`FETCH_ATTEMPTS` tries."""
        from_start = previous_epoch is not None and epoch is not None and epoch != previous_epoch
        for attempt in range(FETCH_ATTEMPTS):
            if generation != self._generation or self._closed.is_set():
                break
            after = 0 if from_start else (stream.last or 0)
            try:
                page, fetched = self._fetch_history(room, after)
            except Exception as exc:  # noqa: BLE001 - reported, then retried
                self._error(exc)
                delay = min(self.fetch_retry_delay * 2 ** attempt, 2.0)
                if attempt + 1 < FETCH_ATTEMPTS and self._closed.wait(delay):
                    break
                continue
            if after and previous_epoch is not None and page["epoch"] != previous_epoch:
                from_start = True  # the server's epoch changed meanwhile: its seqs start again
                continue
            return page, fetched
        return None, []

    def _skip_to(self, stream: _RoomStream, target: int, info: dict[str, Any], verified: bool) -> None:
        """Deliver the stream up to ``target``, jumping over the seqs nobody has. A skipped
        seq counts as lost only when history was read (``verified``) and no event this
        client delivered without a seq can be it; otherwise it counts as unverified."""
        while True:
            self._drain_contiguous(stream)
            last = stream.last or 0
            if last >= target:
                return
            ahead = [seq for seq in stream.pending if seq > last]
            jump = min(min(ahead, default=target + 1) - 1, target)
            missing = jump - last
            maybe_delivered = self._take_unmatched(stream, missing) if verified else missing
            info["gaps"].append([last + 1, jump])
            info["unverified"] += maybe_delivered
            info["lost"] += missing - maybe_delivered
            stream.last = jump

    def _take_unmatched(self, stream: _RoomStream, count: int) -> int:
        """Use up to ``count`` of the room's events delivered without a seq (of types that
        history keeps) as possible explanations of skipped seqs; returns how many."""
        taken = 0
        for event_id, event_type in list(stream.unmatched.items()):
            if taken == count:
                break
            if event_type in self._seq_types:
                del stream.unmatched[event_id]
                taken += 1
        return taken

    def _fetch_history(self, room: str, after: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        if self._session is None:
            try:
                import requests
            except ImportError as exc:
                raise _missing("requests", exc) from None
            self._session = requests.Session()
        events: list[dict[str, Any]] = []
        cursor = after
        while True:
            token = self._auth().get("token", "")
            self.stats["fetches"] += 1
            response = self._session.get(f"{self.url}/api/events", params={"room": room, "after": cursor},
                                         headers={"Authorization": f"Bearer {token}"}, timeout=10)
            try:
                body = response.json()
            except ValueError:
                body = {}
            if response.status_code != 200 or not body.get("ok"):
                error = body.get("error") or {}
                raise EventBusClientError(error.get("code", f"http_{response.status_code}"),
                                          error.get("message", f"GET /api/events: {response.status_code}"), body)
            events.extend(body["events"])
            if not body["events"] or body["events"][-1]["seq"] >= body["latest_seq"]:
                return body, events
            cursor = body["events"][-1]["seq"]
