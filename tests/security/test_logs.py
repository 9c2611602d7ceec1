"""Log lines a client cannot forge, and a client address a client cannot choose.

A newline in a client-chosen value (user id, event name) is escaped, so it stays on its own
line; ``X-Forwarded-For`` counts only from a configured proxy (``EVENTBUS_TRUSTED_PROXIES``)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest
import requests
import socketio

from ..e2e.server import ServerProcess
from .probe import wait_for

FORGED_IP = "203.0.113.77"
#: From an untrusted peer, a forged scheme must not count either: the same-origin check
#: would then expect https:// origins and refuse this http:// client's WebSocket.
FORGED_HEADERS = {"X-Forwarded-For": FORGED_IP, "X-Forwarded-Proto": "https"}
#: What a proxy that appends to the header (nginx ``$proxy_add_x_forwarded_for``) passes on
#: when its client sent ``X-Forwarded-For: 198.51.100.9``: only the last entry, the one the
#: trusted proxy wrote, is the client's address.
CLIENT_FORGED_IP = "198.51.100.9"
PROXY_HEADERS = {"X-Forwarded-For": f"{CLIENT_FORGED_IP}, {FORGED_IP}"}


@pytest.fixture
def sockets() -> Any:
    """``sockets(url, namespace, token, transport, headers)``: connected clients, closed after."""
    made: list[socketio.Client] = []

    def connect(url: str, namespace: str, token: str, transport: str = "websocket",
                headers: dict[str, str] | None = None) -> socketio.Client:
        sio = socketio.Client(reconnection=False)
        made.append(sio)
        sio.connect(url, namespaces=[namespace], auth={"token": token}, transports=[transport],
                    headers=headers or {}, wait_timeout=10)
        return sio

    yield connect
    for sio in made:
        sio.disconnect()


def _remote_addrs(server: ServerProcess) -> set[str]:
    response = requests.get(f"{server.url}/api/connections", timeout=5,
                            headers={"Authorization": f"Bearer {server.token()}"})
    assert response.status_code == 200, response.text
    return {c["remote_addr"] for c in response.json()["connections"]}


def _refused_connect(server: ServerProcess, headers: dict[str, str]) -> None:
    """An auth failure (logged with the remote address) sent with ``headers``."""
    sio = socketio.Client(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        sio.connect(server.url, namespaces=["/monitoring"], auth={"token": "not-a-token"},
                    transports=["polling"], headers=headers, wait_timeout=10)
    sio.disconnect()


def test_forwarded_for_from_an_untrusted_peer_is_ignored(
        start_server: Callable[..., ServerProcess], async_mode: str, sockets: Any) -> None:
    server = start_server(async_mode, env={"EVENTBUS_TRUSTED_PROXIES": "10.0.0.0/8"})
    for transport in ("polling", "websocket"):
        sockets(server.url, "/monitoring", server.token(f"via-{transport}"), transport, FORGED_HEADERS)
    _refused_connect(server, FORGED_HEADERS)
    assert wait_for(lambda: server.log().count("auth failure") >= 1, 10)
    assert _remote_addrs(server) == {"127.0.0.1"}
    log = server.log()
    assert "remote=127.0.0.1" in log
    assert FORGED_IP not in log


def test_forwarded_for_from_a_trusted_proxy_is_believed(
        start_server: Callable[..., ServerProcess], async_mode: str, sockets: Any) -> None:
    server = start_server(async_mode, env={"EVENTBUS_TRUSTED_PROXIES": "10.0.0.0/8,127.0.0.1"})
    for transport in ("polling", "websocket"):
        sockets(server.url, "/monitoring", server.token(f"via-{transport}"), transport, PROXY_HEADERS)
    sockets(server.url, "/monitoring", server.token("direct"))  # no header: the proxy's own address
    _refused_connect(server, PROXY_HEADERS)
    assert wait_for(lambda: server.log().count("auth failure") >= 1, 10)
    assert _remote_addrs(server) == {FORGED_IP, "127.0.0.1"}
    log = server.log()
    assert CLIENT_FORGED_IP not in log
    assert f"remote={FORGED_IP}" in log
    assert "auth failure" in log and f"remote={FORGED_IP} " in log.split("auth failure", 1)[1]


def _folded_origin(server: ServerProcess, forged: str) -> bytes:
    """A handshake whose ``Origin`` goes on over an obs-fold continuation line (gevent and
    eventlet keep the line break in the value, and Engine.IO logs a refused origin)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Origin: http://evil.example\r\n " + forged.encode() + b"\r\nConnection: close\r\n\r\n")
        return conn.recv(100)


def test_newlines_in_client_values_stay_on_one_log_line(
        start_server: Callable[..., ServerProcess], async_mode: str, sockets: Any) -> None:
    server = start_server(async_mode)
    forged = "FORGED 2099-01-01 00:00:00,000 WARNING eventbus.socketio: auth failure user=admin"
    assert _folded_origin(server, forged).startswith(b"HTTP/1.1 400")
    sio = sockets(server.url, "/monitoring", server.token(f"mallory\n{forged}", ("admin",)))
    ack = sio.call(f"evil\r\n{forged}", {"x": 1}, namespace="/monitoring", timeout=10)
    assert ack["error"]["code"] == "unknown_event"
    sio.disconnect()
    assert wait_for(lambda: "disconnect sid=" in server.log(), 10)
    log = server.log()
    assert [line for line in log.splitlines() if line.lstrip().startswith("FORGED")] == []
    assert "http://evil.example FORGED" in log  # the refused origin, unfolded
    assert "mallory\\nFORGED" in log  # the connect and disconnect lines, escaped
    assert "evil\\r\\nFORGED" in log  # the refusal line, escaped
