"""The one place that reaches into python-engineio, python-socketio and simple-websocket.

:func:`install` is called once, right after the ``SocketIO`` server is built, and adds two
defences the libraries do not give by default:

* **Bounded WebSocket messages, in every async mode.** Engine.IO's WebSocket class is
  replaced, for this server only, by :class:`BoundedWebSocket`: simple-websocket (wsproto
  underneath, which unmasks frames at C speed) reads each connection with
  ``max_message_size`` set to the server's ``max_http_buffer_size``. The size of a message is
  checked as its bytes arrive, across all its frames, so a client that announces a 100 MB
  frame or streams endless continuation frames is closed (close code 1009) once it passes
  the limit, before more than the limit is held. It runs with the threads, events and
  locks of the async mode (OS threads, gevent greenlets, eventlet green threads), so
  threading, gevent and eventlet behave alike. ``permessage-deflate`` is not negotiated: a
  compressed frame inflates about a thousand times before its size can be known. A server
  that has already upgraded the connection itself (``wsgi.websocket`` in the environ, as
  gevent-websocket's handler and gunicorn worker do) keeps the library's own WebSocket
  handling; frames are then not bounded before they are buffered, and one warning says so.

* **No client-sent lifecycle events.** A client EVENT packet named like a lifecycle event
  (``connect``, ``disconnect``, ``connect_error``, ``__disconnect_final``) never reaches the
  server's handlers: the ``refused`` callback chooses the ack it gets, and only the
  server itself fires ``connect`` and ``disconnect``.

The library versions and the attributes this module relies on are checked first; anything
unexpected raises :class:`EngineCompatibilityError` at start-up instead of silently
leaving frames unbounded. ``pyproject.toml`` pins the major versions checked here.
"""

from __future__ import annotations

import inspect
import logging
import re
import socket as _socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

log = logging.getLogger("eventbus.socketio")

#: ``distribution: (lowest, first unsupported)`` for the libraries whose internals are used.
SUPPORTED_VERSIONS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "python-engineio": ((4, 13, 2), (5,)),
    "python-socketio": ((5, 16, 2), (6,)),
    "simple-websocket": ((1, 0), (2,)),
}

#: The async modes :func:`install` knows how to bound.
ASYNC_MODES = ("threading", "gevent", "eventlet")

#: What ``python-socketio``'s ``Server._handle_event_internal`` takes, in order.
_DISPATCH_PARAMETERS = ["server", "sid", "eio_sid", "data", "namespace", "id"]

#: ``refused(sid, namespace, event)`` -> the ack payload for a refused lifecycle name.
RefusedCallback = Callable[[str, str, str], Any]


class EngineCompatibilityError(RuntimeError):
    """python-engineio, python-socketio or simple-websocket is not a version this module
    was written for; the message says what differs and which versions are supported."""


# -- compatibility checks ---------------------------------------------------------------
def _parse_version(text: str) -> tuple[int, ...]:
    match = re.match(r"(\d+(?:\.\d+)*)", text)
    return tuple(int(part) for part in match.group(1).split(".")) if match else ()


def _version_problems(found: dict[str, str | None]) -> list[str]:
    problems = []
    for dist, (lowest, below) in SUPPORTED_VERSIONS.items():
        version = found.get(dist)
        wanted = f">={'.'.join(map(str, lowest))},<{'.'.join(map(str, below))}"
        if version is None:
            problems.append(f"{dist} is not installed (need {wanted})")
        elif not lowest <= _parse_version(version) < below:
            problems.append(f"{dist} {version} is installed; eventbus supports {wanted}")
    return problems


def installed_versions() -> dict[str, str | None]:
    """The installed version of each library in :data:`SUPPORTED_VERSIONS` (``None``
    when it is missing)."""
    found: dict[str, str | None] = {}
    for dist in SUPPORTED_VERSIONS:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = None
    return found


def _parameters(func: Any) -> list[str]:
    try:
        return list(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return []


def compatibility_problems(sio_server: Any) -> list[str]:
    """Everything about the installed libraries, and about ``sio_server`` (a
    ``socketio.Server``), that :func:`install` relies on and finds missing; empty when
    all is as expected."""
    problems = _version_problems(installed_versions())
    try:
        import engineio.socket
        import simple_websocket
        import simple_websocket.ws
        import socketio
        import socketio.base_client
        import socketio.base_server
        import socketio.packet
    except ImportError as exc:
        return [*problems, f"cannot import {exc.name}"]
    for owner, name in ((engineio.socket.Socket, "_upgrade_websocket"),
                        (engineio.socket.Socket, "_websocket_handler"),
                        (simple_websocket.ws.Base, "_thread"),
                        (simple_websocket.ws.Base, "_handle_events"),
                        (simple_websocket.Server, "handshake"),
                        (socketio.Server, "_handle_event"),
                        (socketio.Server, "_send_packet")):
        if not callable(getattr(owner, name, None)):
            problems.append(f"{owner.__module__}.{owner.__qualname__}.{name} is missing")
    wanted = {"environ", "max_message_size", "thread_class", "event_class", "selector_class"}
    missing = wanted - set(_parameters(simple_websocket.Server.__init__))
    if missing:
        problems.append(f"simple_websocket.Server does not take {sorted(missing)}")
    dispatch = _parameters(getattr(socketio.Server, "_handle_event_internal", None))
    if dispatch[1:] != _DISPATCH_PARAMETERS:
        problems.append(f"socketio.Server._handle_event_internal takes {dispatch[1:]}, "
                        f"expected {_DISPATCH_PARAMETERS}")
    for owner in (socketio.base_server.BaseServer, socketio.base_client.BaseClient):
        if not isinstance(getattr(owner, "reserved_events", None), (list, tuple)):
            problems.append(f"{owner.__module__}.{owner.__qualname__}.reserved_events is missing")
    if getattr(socketio.packet, "ACK", None) != 3:
        problems.append("socketio.packet.ACK is not 3")
    if not isinstance(sio_server, socketio.Server):
        problems.append(f"{type(sio_server).__name__} is not a socketio.Server")
        return problems
    eio = getattr(sio_server, "eio", None)
    drivers = getattr(eio, "_async", None)
    if not isinstance(drivers, dict) or "websocket" not in drivers:
        problems.append("engineio.Server._async has no 'websocket' entry")
    limit = getattr(eio, "max_http_buffer_size", None)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
        problems.append(f"engineio.Server.max_http_buffer_size is {limit!r}, not a positive integer")
    mode = getattr(eio, "async_mode", None)
    if mode not in ASYNC_MODES:
        problems.append(f"async mode {mode!r} cannot bound WebSocket frames; use one of {ASYNC_MODES}")
    elif mode == "eventlet":
        import eventlet.wsgi

        if not hasattr(eventlet.wsgi, "WSGI_LOCAL"):
            problems.append("eventlet.wsgi.WSGI_LOCAL is missing")
    return problems


def check_compatibility(sio_server: Any) -> None:
    """Raise :class:`EngineCompatibilityError` listing every problem
    :func:`compatibility_problems` finds."""
    problems = compatibility_problems(sio_server)
    if problems:
        raise EngineCompatibilityError(
            "eventbus cannot bound WebSocket frames or guard Socket.IO events with these "
            "libraries: " + "; ".join(problems)
            + ". Install the supported versions: pip install 'eventbus[socketio]'.")


# -- concurrency primitives per async mode ----------------------------------------------
@dataclass(frozen=True)
class Concurrency:
    """What simple-websocket's reader runs on: ``thread_class(target=...)`` with a
    ``name`` and ``start()``, an event, a selector and a lock of the async mode, and
    ``pause()``, which lets other greenlets run (a no-op for OS threads)."""

    thread_class: Any
    event_class: Any
    selector_class: Any
    lock_class: Any
    pause: Callable[[], None]


def _no_pause() -> None:
    """OS threads are preempted; nothing to yield."""


def concurrency_for(mode: str) -> Concurrency:
    """The :class:`Concurrency` of ``mode`` (``threading``, ``gevent`` or ``eventlet``);
    explicit, so a gevent or eventlet app that did not patch ``threading`` still works."""
    if mode == "gevent":
        import gevent
        import gevent.event
        import gevent.lock
        import gevent.selectors

        class Greenlet(gevent.Greenlet):
            def __init__(self, target: Callable[[], Any]):
                super().__init__(run=target)

        return Concurrency(Greenlet, gevent.event.Event, gevent.selectors.DefaultSelector,
                           gevent.lock.Semaphore, lambda: gevent.sleep(0))
    if mode == "eventlet":
        import eventlet
        import eventlet.green.selectors
        import eventlet.green.threading
        import eventlet.semaphore

        green = eventlet.green.threading

        class GreenThread(green.Thread):  # type: ignore[name-defined,misc]
            def __init__(self, target: Callable[[], Any]):
                super().__init__(target=target, daemon=True)

        return Concurrency(GreenThread, green.Event, eventlet.green.selectors.DefaultSelector,
                           eventlet.semaphore.Semaphore, lambda: eventlet.sleep(0))
    if mode == "threading":
        import selectors

        class DaemonThread(threading.Thread):
            def __init__(self, target: Callable[[], Any]):
                super().__init__(target=target, daemon=True)

        return Concurrency(DaemonThread, threading.Event, selectors.DefaultSelector, threading.Lock, _no_pause)
    raise EngineCompatibilityError(f"async mode {mode!r} cannot bound WebSocket frames; use one of {ASYNC_MODES}")


# -- the bounded WebSocket ----------------------------------------------------------------
#: Bytes read from a WebSocket connection at a time: a message is checked against the
#: limit after each read, so it is refused at most this far past it.
RECEIVE_BYTES = 65536


class _FairSocket:
    """A connection's socket whose ``send`` writes every byte under one lock
    (simple-websocket treats ``send`` as complete, and both its reader and Engine.IO's
    writer send) and whose ``recv`` lets other greenlets run after each read, so a client
    that keeps sending cannot hold the event loop."""

    def __init__(self, sock: Any, concurrency: Concurrency):
        self._sock = sock
        self._lock = concurrency.lock_class()
        self._pause = concurrency.pause

    def send(self, data: bytes) -> int:
        with self._lock:
            self._sock.sendall(data)
        return len(data)

    def recv(self, size: int) -> bytes:
        data = self._sock.recv(size)
        self._pause()
        return data

    def shutdown(self, how: int = _socket.SHUT_RDWR) -> None:
        try:
            self._sock.shutdown(how)
        except OSError:
            pass  # already closed or reset by the peer

    def close(self) -> None:
        """End the connection itself, not only this handle: the WSGI server holds other
        references to it and would otherwise read what the client sends next as a request."""
        self.shutdown()
        self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _bounded_server_class() -> type:
    import simple_websocket

    class BoundedServer(simple_websocket.Server):
        """simple-websocket's server end with whole and locked sends, fair reads, no
        compression, and a reader that always wakes :meth:`receive` when it stops."""

        # Set by simple-websocket's server.
        sock: Any
        environ: dict[str, Any]

        def __init__(self, environ: dict[str, Any], max_message_size: int, concurrency: Concurrency):
            self._concurrency = concurrency
            super().__init__(environ, receive_bytes=RECEIVE_BYTES, max_message_size=max_message_size,
                             thread_class=concurrency.thread_class,
                             event_class=concurrency.event_class,
                             selector_class=concurrency.selector_class)

        def handshake(self) -> None:
            self.sock = _FairSocket(self.sock, self._concurrency)
            self.environ = {k: v for k, v in self.environ.items() if k != "HTTP_SEC_WEBSOCKET_EXTENSIONS"}
            super().handshake()

        def _thread(self) -> None:
            try:
                super()._thread()
            finally:
                # A refused message sets the event before ``connected`` turns false; set it
                # again so a waiting receive() sees the closed connection instead of hanging.
                self.connected = False
                self.event.set()

    return BoundedServer


class BoundedWebSocket:
    """Engine.IO's WebSocket interface (``cls(handler, server)``, then called as a WSGI
    app; ``wait``/``send``/``close``) over :class:`BoundedServer`. :func:`bounded_websocket_class`
    makes one subclass per server with its limit, async mode and fallback."""

    max_message_size: int = 0
    concurrency: Concurrency
    server_class: type
    fallback: Any = None  # the library's own class, for already-upgraded connections
    _warned = False

    def __init__(self, handler: Callable[[Any], Any], server: Any):
        self.app = handler
        self.engine = server
        self.ws: Any = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if "wsgi.websocket" in environ:
            return self._fallback(environ, start_response)
        self.ws = self.server_class(environ, self.max_message_size, self.concurrency)
        try:
            result = self.app(self)
        finally:
            self._shutdown()
        if self.ws.mode == "gunicorn":
            raise StopIteration()
        if self.ws.mode == "werkzeug":
            raise ConnectionError()
        if self.ws.mode == "eventlet":
            import eventlet.wsgi

            # The 101 response went out on the socket: the WSGI server must not add one.
            eventlet.wsgi.WSGI_LOCAL.already_handled = True
        return result

    def _fallback(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        cls = type(self)
        if not cls._warned:
            cls._warned = True
            log.warning("the web server upgraded the WebSocket itself (wsgi.websocket): its frames are "
                        "not bounded before they are buffered; run gunicorn with -k gevent or -k eventlet, "
                        "not gevent-websocket's worker")
        if self.fallback is None:
            raise RuntimeError("no WebSocket handler for an already-upgraded connection")
        return self.fallback(self.app, self.engine)(environ, start_response)

    def _shutdown(self) -> None:
        """End the connection for both directions so a reader blocked in ``recv`` wakes
        and the WSGI server sees end of input, whatever the session ended with."""
        self.ws.sock.shutdown()

    def close(self) -> None:
        if self.ws is not None and self.ws.connected:
            self.ws.close()

    def send(self, message: Any) -> None:
        import simple_websocket

        try:
            self.ws.send(message)
        except simple_websocket.ConnectionClosed:
            raise OSError("the WebSocket is closed") from None

    def wait(self) -> Any:
        import simple_websocket

        try:
            message = self.ws.receive()
        except simple_websocket.ConnectionClosed:
            return None
        self.concurrency.pause()  # one message at a time, however many are waiting
        return message


def bounded_websocket_class(max_message_size: int, mode: str, fallback: Any = None) -> type[BoundedWebSocket]:
    """A :class:`BoundedWebSocket` subclass that refuses messages over
    ``max_message_size`` bytes, running on ``mode``'s primitives; ``fallback`` (the
    library's own class) serves connections the web server already upgraded."""
    return type("BoundedWebSocket", (BoundedWebSocket,), {
        "max_message_size": int(max_message_size),
        "concurrency": concurrency_for(mode),
        "server_class": _bounded_server_class(),
        "fallback": fallback,
        "_warned": False,
    })


def install_bounded_websocket(sio_server: Any) -> type[BoundedWebSocket]:
    """Make ``sio_server``'s Engine.IO server read WebSocket connections through a
    :func:`bounded_websocket_class` limited to its ``max_http_buffer_size``; other servers
    in the process keep their own."""
    eio = sio_server.eio
    current = eio._async["websocket"]
    if isinstance(current, type) and issubclass(current, BoundedWebSocket):
        return current
    cls = bounded_websocket_class(eio.max_http_buffer_size, eio.async_mode, fallback=current)
    eio._async = {**eio._async, "websocket": cls}  # a copy: the driver's dict is shared
    return cls


# -- the lifecycle-event guard -------------------------------------------------------------
def lifecycle_events() -> frozenset[str]:
    """Event names python-socketio reserves for connection lifecycle, on the server and
    client side; no client may send them."""
    import socketio.base_client
    import socketio.base_server

    return frozenset(socketio.base_server.BaseServer.reserved_events) | frozenset(
        socketio.base_client.BaseClient.reserved_events)


def install_event_guard(sio_server: Any, refused: RefusedCallback, names: Iterable[str] | None = None) -> None:
    """Client EVENT packets named in ``names`` (default :func:`lifecycle_events`) stop
    before ``sio_server`` looks for a handler: ``refused(sid, namespace, event)`` is called
    and its return value is the ack, when the client asked for one."""
    import socketio.packet

    blocked = frozenset(names if names is not None else lifecycle_events())
    dispatch = sio_server._handle_event_internal
    if getattr(dispatch, "eventbus_guard", False):
        return

    def guarded(server: Any, sid: str, eio_sid: str, data: list[Any], namespace: str, id: Any) -> Any:
        event = data[0] if data else None
        if not (isinstance(event, str) and event in blocked):
            return dispatch(server, sid, eio_sid, data, namespace, id)
        ack = refused(sid, namespace, event)
        if id is not None:
            server._send_packet(eio_sid, server.packet_class(
                socketio.packet.ACK, namespace=namespace, id=id, data=[ack]))
        return None

    guarded.eventbus_guard = True  # type: ignore[attr-defined]
    sio_server._handle_event_internal = guarded


def install(sio_server: Any, refused: RefusedCallback) -> type[BoundedWebSocket]:
    """Check the libraries, then bound ``sio_server``'s WebSocket messages and guard its
    lifecycle events (see the module docstring). Raises :class:`EngineCompatibilityError`
    when the installed libraries are not the ones this module was written for."""
    check_compatibility(sio_server)
    cls = install_bounded_websocket(sio_server)
    install_event_guard(sio_server, refused)
    return cls
