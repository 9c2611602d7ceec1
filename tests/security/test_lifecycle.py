"""A client that emits lifecycle event names (``disconnect``, ``connect``, ...) against a
real server in every async mode: refused with ``unknown_event``, counted, and the
connection list, presence and admin kicks stay true."""

from __future__ import annotations

import json
from typing import Any

import requests
import websocket

from ..e2e.server import ServerProcess
from .probe import wait_for

NAMESPACE = "/monitoring"
LIFECYCLE_NAMES = ("disconnect", "connect", "connect_error", "__disconnect_final", "message")


class RawSocketIO:
    """A Socket.IO client spoken by hand over websocket-client, so it can send what the
    stock clients refuse to (they reserve these names)."""

    def __init__(self, server: ServerProcess, namespace: str, token: str):
        self.namespace = namespace
        self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket", timeout=10)
        self.acks: dict[int, Any] = {}
        self.events: list[tuple[str, Any]] = []
        self.disconnected = False
        assert self.ws.recv().startswith("0{")  # Engine.IO OPEN
        self.ws.send(f"40{namespace},{json.dumps({'token': token})}")
        self.sid: str | None = None
        while self.sid is None:  # events of the joins made on connect may come first
            self.pump()
        self._ids = iter(range(1, 1000))

    def _next(self) -> str:
        """The next Socket.IO packet, answering Engine.IO pings on the way."""
        while True:
            message = self.ws.recv()
            if message == "2":
                self.ws.send("3")
                continue
            return message

    def pump(self) -> None:
        """Read one packet into :attr:`sid`, :attr:`acks`, :attr:`events` or
        :attr:`disconnected`."""
        message = self._next()
        prefix = f"{message[:2]}{self.namespace},"
        body = message[len(prefix):] if message.startswith(prefix) else ""
        if message.startswith("40"):
            self.sid = json.loads(body)["sid"]
        elif message.startswith("44"):
            raise AssertionError(f"connect refused: {message}")
        elif message.startswith("43"):
            digits = len(body) - len(body.lstrip("0123456789"))
            self.acks[int(body[:digits])] = json.loads(body[digits:])[0]
        elif message.startswith("42"):
            name, *args = json.loads(body)
            self.events.append((name, args[0] if args else None))
        elif message.startswith("41"):
            self.disconnected = True

    def call(self, event: str, *args: Any) -> Any:
        ack_id = next(self._ids)
        self.ws.send(f"42{self.namespace},{ack_id}{json.dumps([event, *args])}")
        while ack_id not in self.acks:
            self.pump()
        return self.acks.pop(ack_id)

    def emit(self, event: str, *args: Any) -> None:
        self.ws.send(f"42{self.namespace},{json.dumps([event, *args])}")

    def close(self) -> None:
        self.ws.close()


def _admin(server: ServerProcess) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.token()}"}


def _listed(server: ServerProcess, sid: str) -> bool:
    body = requests.get(f"{server.url}/api/connections", headers=_admin(server), timeout=5).json()
    return any(c["sid"] == sid for c in body["connections"])


def _present(server: ServerProcess) -> int:
    """Users present in the monitoring room (the admin view of the status page)."""
    body = requests.get(f"{server.url}/api/websocket/status", headers=_admin(server), timeout=5).json()
    return body.get("detail", body)["presence"].get(NAMESPACE, {}).get("monitoring", 0)


def test_lifecycle_names_from_a_client_are_refused(server: ServerProcess) -> None:
    client = RawSocketIO(server, NAMESPACE, server.token("mallory", roles=()))
    try:
        wait_for(lambda: _listed(server, client.sid), 10, message="the client is not listed")
        assert _present(server) == 1
        refused_before = server.status()["refusals"].get("unknown_event", 0)
        for name in LIFECYCLE_NAMES:
            ack = client.call(name, {})
            assert ack == {"ok": False, "error": {"code": "unknown_event", "message": ack["error"]["message"]}}, ack
            assert name in ack["error"]["message"]
        # The server's own connect handler takes (auth); a look-alike is refused too.
        assert client.call("connect", {"token": server.token("mallory")})["error"]["code"] == "unknown_event"
        client.emit("disconnect")  # without an ack: refused all the same
        assert client.call("join_room", {"room": "monitoring"})["ok"]  # ordinary events still work

        status = server.status()
        assert status["refusals"].get("unknown_event", 0) - refused_before == len(LIFECYCLE_NAMES) + 2
        assert _listed(server, client.sid), "a client-sent disconnect removed the connection"
        assert _present(server) == 1, "a client-sent disconnect removed the presence"

        # Still connected for real: events arrive, and an admin kick reaches it.
        server.publish("agent_started", {"agent": "a"}, room="monitoring")
        while not any(name == "agent_started" for name, _ in client.events):
            client.pump()
        kicked = requests.post(f"{server.url}/api/connections/disconnect", json={"user_id": "mallory"},
                               headers=_admin(server), timeout=5).json()
        assert kicked["disconnected"] == [client.sid]
        while not client.disconnected:
            client.pump()
        wait_for(lambda: not _listed(server, client.sid), 10, message="the kicked client is still listed")
        assert _present(server) == 0
    finally:
        client.close()


def test_client_sent_connect_does_not_rejoin(server: ServerProcess) -> None:
    """A repeated ``connect`` re-ran the join handlers; now each is one cheap refusal and
    the connection joins nothing new."""
    client = RawSocketIO(server, NAMESPACE, server.token("looper", roles=()))
    try:
        wait_for(lambda: _listed(server, client.sid), 10, message="the client is not listed")
        joins_before = server.status()["counters"].get("connects", 0)
        for _ in range(50):
            assert client.call("connect", {"token": server.token("looper")})["error"]["code"] == "unknown_event"
        status = server.status()
        assert status["counters"].get("connects", 0) == joins_before
        assert status["namespaces"][NAMESPACE] == 1
    finally:
        client.close()
