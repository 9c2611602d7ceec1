"""The adapter to python-engineio, python-socketio and simple-websocket internals
(``eventbus_socketio.engine``), in process.

Several tests exist to fail when an upgrade of those libraries changes an internal the
adapter relies on: how Engine.IO builds its WebSocket class, how simple-websocket checks a
message's size, how python-socketio dispatches a client event.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import engineio
import engineio.async_drivers.threading as threading_driver
import engineio.socket
import pytest
import simple_websocket
import socketio

from eventbus_socketio import engine
from eventbus_socketio.manager import TRANSPORT_FRAME_LIMIT

from .conftest import token

KEY = base64.b64encode(b"0123456789abcdef").decode()


# -- helpers -------------------------------------------------------------------------------------
def _environ(sock: socket.socket, **headers: str) -> dict[str, Any]:
    environ = {"werkzeug.socket": sock, "HTTP_HOST": "127.0.0.1", "HTTP_UPGRADE": "websocket",
               "HTTP_CONNECTION": "Upgrade", "HTTP_SEC_WEBSOCKET_KEY": KEY, "HTTP_SEC_WEBSOCKET_VERSION": "13"}
    environ.update({f"HTTP_{k.upper()}": v for k, v in headers.items()})
    return environ


def _mask(data: bytes, key: bytes) -> bytes:
    n = len(data)
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big") if n else b""


def _frame_header(opcode: int, length: int, key: bytes) -> bytes:
    if length < 126:
        return struct.pack("!BB", 0x80 | opcode, 0x80 | length) + key
    if length < 1 << 16:
        return struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length) + key
    return struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length) + key


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, "closed during the handshake"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert not rest
    return head


def _read_frame(sock: socket.socket) -> tuple[int, bytes]:
    def read(n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("closed")
            out += chunk
        return out

    first, second = read(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", read(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", read(8))
    return first & 0x0F, read(length)


def _bounded_server(limit: int = TRANSPORT_FRAME_LIMIT, **headers: str) -> tuple[Any, socket.socket, bytes]:
    """A :class:`BoundedServer` on one end of a socket pair: (server, client end, response head)."""
    client, server_end = socket.socketpair()
    client.settimeout(10)
    cls = engine.bounded_websocket_class(limit, "threading")
    ws = cls.server_class(_environ(server_end, **headers), limit, cls.concurrency)
    return ws, client, _read_response(client)


def _in_thread(func: Callable[[], Any], timeout: float = 10.0) -> Any:
    """``func()`` run in a thread that must finish within ``timeout``; its result, or the
    exception it raised."""
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(func())
        except Exception as exc:  # noqa: BLE001 - handed back to the test
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{func} did not return within {timeout}s"
    return result[0]


# -- compatibility checks ------------------------------------------------------------------------
def test_installed_libraries_are_supported(app_manager: Any) -> None:
    _, manager = app_manager
    assert engine.compatibility_problems(manager.socketio.server) == []


@pytest.mark.parametrize("dist, version", [("python-engineio", "5.0.0"), ("python-socketio", "6.1"),
                                           ("simple-websocket", "2.0.0"), ("python-engineio", "4.13.1"),
                                           ("simple-websocket", None)])
def test_unsupported_versions_fail_at_start_up(make_app: Callable[..., Any], monkeypatch: pytest.MonkeyPatch,
                                               dist: str, version: str | None) -> None:
    found = {**engine.installed_versions(), dist: version}
    monkeypatch.setattr(engine, "installed_versions", lambda: found)
    with pytest.raises(engine.EngineCompatibilityError, match=dist):
        make_app()


def test_changed_internals_fail_at_start_up(make_app: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socketio.Server, "_handle_event_internal", lambda self, server, sid, data: None)
    monkeypatch.delattr(engineio.socket.Socket, "_upgrade_websocket")
    with pytest.raises(engine.EngineCompatibilityError) as info:
        make_app()
    assert "_handle_event_internal" in str(info.value)
    assert "_upgrade_websocket" in str(info.value)


def test_simple_websocket_options_are_checked(monkeypatch: pytest.MonkeyPatch, app_manager: Any) -> None:
    _, manager = app_manager

    def narrower(self: Any, environ: Any, subprotocols: Any = None, receive_bytes: int = 4096) -> None:
        raise AssertionError("not called")

    monkeypatch.setattr(simple_websocket.Server, "__init__", narrower)
    problems = engine.compatibility_problems(manager.socketio.server)
    assert any("max_message_size" in p for p in problems), problems


def test_unknown_async_mode_is_refused() -> None:
    server = socketio.Server(async_mode="threading")
    server.eio.async_mode = "gevent_uwsgi"
    assert any("gevent_uwsgi" in p for p in engine.compatibility_problems(server))
    with pytest.raises(engine.EngineCompatibilityError):
        engine.concurrency_for("gevent_uwsgi")


# -- the internals themselves --------------------------------------------------------------------
def test_engineio_builds_its_websocket_class_with_handler_and_server() -> None:
    """What :func:`install_bounded_websocket` relies on: Engine.IO instantiates
    ``server._async['websocket'](handler, server)`` and calls it as a WSGI app."""
    calls: list[tuple[Any, ...]] = []

    class Recorder:
        def __init__(self, handler: Any, server: Any):
            calls.append(("init", handler, server))

        def __call__(self, environ: Any, start_response: Any) -> list[bytes]:
            calls.append(("call", environ))
            return []

    eio = engineio.Server(async_mode="threading")
    eio._async = {**eio._async, "websocket": Recorder}
    sock = engineio.socket.Socket(eio, "sid")
    environ = {"marker": True}
    assert sock._upgrade_websocket(environ, lambda *a: None) == []
    assert calls[0][0] == "init" and calls[0][2] is eio
    assert calls[0][1] == sock._websocket_handler
    assert calls[1] == ("call", environ)


def test_install_replaces_the_class_for_this_server_only(app_manager: Any) -> None:
    _, manager = app_manager
    cls = manager.socketio.server.eio._async["websocket"]
    assert issubclass(cls, engine.BoundedWebSocket)
    assert cls.max_message_size == TRANSPORT_FRAME_LIMIT == manager.socketio.server.eio.max_http_buffer_size
    assert not issubclass(threading_driver._async["websocket"], engine.BoundedWebSocket)
    assert engine.install_bounded_websocket(manager.socketio.server) is cls  # idempotent


def test_oversized_message_is_refused_with_1009_before_it_is_buffered() -> None:
    """simple-websocket checks the size as the bytes arrive: a 100 MB frame is closed after
    about the limit, and a waiting receive() returns instead of hanging."""
    limit = 64 * 1024
    ws, client, _ = _bounded_server(limit)
    key = os.urandom(4)
    chunk = _mask(b"a" * 65536, key)
    sent = 0
    try:
        client.sendall(_frame_header(0x1, 100_000_000, key))
        while sent < 100_000_000:
            client.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass
    assert sent < 10_000_000, f"{sent} bytes were read"
    assert ws.incoming_message_len <= limit + engine.RECEIVE_BYTES
    opcode, payload = _read_frame(client)
    assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1009
    assert isinstance(_in_thread(ws.receive), simple_websocket.ConnectionClosed)
    client.close()


def test_message_fragments_count_towards_the_limit() -> None:
    limit = 64 * 1024
    _ws, client, _ = _bounded_server(limit)
    key = os.urandom(4)
    piece = _mask(b"b" * 4096, key)
    try:
        client.sendall(struct.pack("!BB", 0x01, 0x80 | 126) + struct.pack("!H", 4096) + key + piece)
        for _ in range(100):
            client.sendall(struct.pack("!BB", 0x00, 0x80 | 126) + struct.pack("!H", 4096) + key + piece)
    except OSError:
        pass
    opcode, payload = _read_frame(client)
    assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1009
    client.close()


def test_message_under_the_limit_is_delivered_and_large_sends_are_whole() -> None:
    ws, client, _ = _bounded_server()
    key = os.urandom(4)
    message = b"4" + b"c" * 500_000
    client.sendall(_frame_header(0x1, len(message), key) + _mask(message, key))
    assert _in_thread(ws.receive) == message.decode()
    # A send larger than the socket buffer, on a socket with a timeout (where send() may
    # write part of it), arrives whole.
    ws.sock._sock.settimeout(5)
    reply = "4" + "d" * 3_000_000
    sender = threading.Thread(target=ws.send, args=(reply,), daemon=True)
    sender.start()
    opcode, payload = _read_frame(client)
    sender.join(10)
    assert opcode == 0x1 and payload == reply.encode()
    ws.close()
    client.close()


def test_compression_is_not_negotiated() -> None:
    ws, client, head = _bounded_server(sec_websocket_extensions="permessage-deflate; client_max_window_bits")
    assert head.startswith(b"HTTP/1.1 101")
    assert b"permessage-deflate" not in head.lower()
    ws.close()
    client.close()


def test_already_upgraded_connections_fall_back_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    served: list[dict[str, Any]] = []

    class LibraryWebSocket:
        def __init__(self, handler: Any, server: Any):
            self.handler = handler

        def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
            served.append(environ)
            return []

    cls = engine.bounded_websocket_class(1024, "threading", fallback=LibraryWebSocket)
    with caplog.at_level(logging.WARNING, logger="eventbus.socketio"):
        for _ in range(2):
            assert cls(lambda ws: [], object())({"wsgi.websocket": object()}, lambda *a: None) == []
    assert len(served) == 2
    warnings = [r for r in caplog.records if "not bounded" in r.getMessage()]
    assert len(warnings) == 1


@pytest.mark.parametrize("mode", ["gevent", "eventlet"])
def test_concurrency_of_green_modes(mode: str) -> None:
    """The reader of a gevent or eventlet server runs on that library's primitives, also
    in a process that has not patched ``threading`` (checked in a child process)."""
    pytest.importorskip(mode)
    code = (
        "import _thread\n"
        "from eventbus_socketio import engine\n"
        f"c = engine.concurrency_for({mode!r})\n"
        "done = c.event_class()\n"
        "ran_on = []\n"
        "t = c.thread_class(target=lambda: (ran_on.append(_thread.get_ident()), done.set()))\n"
        "t.name = t.name.replace('x', 'y')\n"
        "t.start()\n"
        "assert done.wait(5)\n"
        "with c.lock_class():\n"
        "    c.pause()\n"
        "print('green' if ran_on == [_thread.get_ident()] else 'os thread')\n"
    )
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "green", out.stdout


# -- the lifecycle-event guard --------------------------------------------------------------------
def _connect(app: Any, manager: Any, namespace: str, user: str = "mallory") -> Any:
    client = manager.socketio.test_client(app, namespace=namespace, auth={"token": token(user, ())})
    assert client.is_connected(namespace)
    return client


def test_python_socketio_dispatch_is_where_the_guard_sits() -> None:
    """What :func:`install_event_guard` relies on: a client event reaches handlers through
    ``Server._handle_event_internal(server, sid, eio_sid, data, namespace, id)``."""
    server = socketio.Server(async_mode="threading")
    seen: list[tuple[Any, ...]] = []
    server._handle_event_internal = lambda *args: seen.append(args)  # type: ignore[method-assign]
    server.manager.connect("eio-1", "/")
    sid = server.manager.sid_from_eio_sid("eio-1", "/")
    server._handle_eio_message("eio-1", '27["disconnect",{}]')
    assert seen == [(server, sid, "eio-1", ["disconnect", {}], "/", 7)]
    assert {"connect", "disconnect"} <= engine.lifecycle_events()


@pytest.mark.parametrize("name", ["disconnect", "connect", "connect_error", "__disconnect_final", "message"])
def test_client_sent_lifecycle_names_are_refused(app_manager: Any, name: str) -> None:
    app, manager = app_manager
    client = _connect(app, manager, "/monitoring")
    [sid] = list(manager.connections)
    ack = client.emit(name, {"token": token("mallory")}, namespace="/monitoring", callback=True)
    assert ack["ok"] is False and ack["error"]["code"] == "unknown_event"
    assert name in ack["error"]["message"]
    assert manager.refusals["unknown_event"] == 1
    assert sid in manager.connections
    assert manager.presence.members("/monitoring", "monitoring") == ["mallory"]
    assert manager.counters["connects"] == 1 and manager.counters.get("disconnects", 0) == 0
    client.emit(name, namespace="/monitoring")  # no ack asked: still refused and counted
    assert manager.refusals["unknown_event"] == 2 and sid in manager.connections


def test_server_lifecycle_still_runs(app_manager: Any) -> None:
    app, manager = app_manager
    client = _connect(app, manager, "/chat")
    assert len(manager.connections) == 1
    client.disconnect(namespace="/chat")
    assert manager.connections == {} and manager.counters["disconnects"] == 1


def test_guard_covers_other_namespaces_and_is_installed_once(app_manager: Any) -> None:
    """An app's own handlers on another namespace are guarded as well."""
    app, manager = app_manager
    calls: list[Any] = []
    manager.socketio.on("disconnect", namespace="/")(lambda reason=None: calls.append(reason))
    manager.socketio.on("connect", namespace="/")(lambda auth=None: calls.append("connect"))
    client = manager.socketio.test_client(app, namespace="/")
    assert calls == ["connect"]
    ack = client.emit("disconnect", {}, namespace="/", callback=True)
    assert ack["error"]["code"] == "unknown_event" and calls == ["connect"]
    guard = manager.socketio.server._handle_event_internal
    engine.install_event_guard(manager.socketio.server, lambda *a: None)
    assert manager.socketio.server._handle_event_internal is guard


def test_unknown_names_never_block_the_guard(app_manager: Any) -> None:
    """Non-string and ordinary names pass the guard to the namespace's allow-list."""
    app, manager = app_manager
    client = _connect(app, manager, "/monitoring")
    assert client.emit("nope", {}, namespace="/monitoring", callback=True)["error"]["code"] == "unknown_event"
    assert client.emit("join_room", {"room": "monitoring"}, namespace="/monitoring", callback=True)["ok"]
    started = time.monotonic()
    odd = client.emit(42, {}, namespace="/monitoring", callback=True)
    assert odd["ok"] is False and odd["error"]["code"] in ("unknown_event", "invalid_payload")
    assert time.monotonic() - started < 5
