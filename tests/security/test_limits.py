"""What one client may hold: rooms, resumes, connections, unsigned Engine.IO sessions, and
how much the public status tells. Each attack runs against a real server in every async
mode; the history budget and the pending-session expiry are checked in process too."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import socketio
import websocket

from eventbus import Config, EventBus
from eventbus.history import MemoryHistory

from ..e2e.ordered import ordered_client
from ..e2e.server import ServerProcess
from .probe import rss_kib, wait_for

FLOOD_ROOMS = 5000
PUBLIC_STATUS_LIMIT = 64 * 1024
RSS_GROWTH_LIMIT_KIB = 20 * 1024


class Client:
    """A python-socketio client on one namespace that records events and connect errors."""

    def __init__(self, url: str, token: str, namespace: str = "/monitoring", auth: dict[str, Any] | None = None):
        self.namespace = namespace
        self.events: list[tuple[str, Any]] = []
        self.errors: list[Any] = []
        self.sio = ordered_client(reconnection=False)
        self.sio.on("*", lambda event, *args: self.events.append((event, args[0] if args else None)),
                    namespace=namespace)
        self.sio.on("connect_error", self.errors.append, namespace=namespace)
        try:
            self.sio.connect(url, namespaces=[namespace], auth={"token": token, **(auth or {})},
                             transports=["websocket"], wait_timeout=10)
        except socketio.exceptions.ConnectionError:
            pass

    @property
    def connected(self) -> bool:
        return self.sio.connected and self.namespace in self.sio.namespaces

    def of(self, name: str) -> list[Any]:
        return [data for event, data in list(self.events) if event == name]

    def call(self, event: str, data: Any) -> Any:
        return self.sio.call(event, data, namespace=self.namespace, timeout=20)

    def refusal(self) -> dict[str, Any]:
        """The ``connect_error`` data of a refused connect."""
        return wait_for(lambda: next((e for e in self.errors if isinstance(e, dict)), None), 10,
                        message="connect_error")

    def close(self) -> None:
        self.sio.disconnect()


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(*args: Any, **kwargs: Any) -> Client:
        made.append(Client(*args, **kwargs))
        return made[-1]

    yield make
    for client in made:
        client.close()


def rooms(count: int, prefix: str = "flood") -> dict[str, int]:
    return {f"{prefix}-{i}": 0 for i in range(count)}


def error_code(ack: Any) -> str | None:
    return ack.get("error", {}).get("code") if isinstance(ack, dict) and ack.get("ok") is False else None


def admin_status(server: ServerProcess) -> dict[str, Any]:
    response = requests.get(f"{server.url}/api/websocket/status",
                            headers={"Authorization": f"Bearer {server.token()}"}, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def metric(server: ServerProcess, line_start: str) -> float:
    text = requests.get(f"{server.url}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# -- the room flood --------------------------------------------------------------------------


def test_room_flood_is_refused_and_the_server_does_not_grow(
        start_server: Callable[..., ServerProcess], async_mode: str, clients: Callable[..., Client]) -> None:
    server = start_server(async_mode)
    token = server.token("mallory", ())
    attacker = clients(server.url, token)
    assert attacker.connected
    error_code(attacker.call("resume", {"rooms": rooms(FLOOD_ROOMS, "warm")}))  # warm the code paths
    before = rss_kib(server.proc.pid)

    acks = [attacker.call("resume", {"rooms": rooms(FLOOD_ROOMS, f"flood{n}")}) for n in range(5)]
    assert [error_code(ack) for ack in acks] == ["too_many_rooms"] * 5, acks[0]

    # In the connect itself: the connection stands, the resume part is refused and told.
    at_connect = clients(server.url, token, auth={"resume": {"rooms": rooms(FLOOD_ROOMS, "auth")}})
    assert at_connect.connected
    [told] = wait_for(lambda: at_connect.of("error"), 10, message="error event for the refused resume")
    assert told["code"] == "too_many_rooms"

    grown = rss_kib(server.proc.pid) - before
    assert grown < RSS_GROWTH_LIMIT_KIB, f"server RSS grew {grown} KiB"
    public = requests.get(f"{server.url}/api/websocket/status", timeout=5)
    assert len(public.content) < PUBLIC_STATUS_LIMIT
    status = public.json()
    assert status["refusals"]["too_many_rooms"] == 7  # warm-up, 5 resumes, the connect
    assert metric(server, 'eventbus_refusals_total{code="too_many_rooms"}') == 7
    assert status["room_totals"]["rooms"] == 1  # monitoring only: nothing else was joined
    detail = admin_status(server)["detail"]
    assert detail["rooms"] == {"monitoring": 2}


# -- each limit, small enough to reach -------------------------------------------------------

SMALL_LIMITS = {
    "EVENTBUS_MAX_ROOMS_PER_CONNECTION": "5",
    "EVENTBUS_MAX_RESUME_ROOMS": "4",
    "EVENTBUS_MAX_CONNECTIONS_PER_USER": "3",
    "EVENTBUS_CLIENT_BURST": "8",
    "EVENTBUS_CLIENT_RATE": "0.1",  # next to nothing refills during the test
}


def test_rooms_resumes_rate_and_connections_are_limited(
        start_server: Callable[..., ServerProcess], async_mode: str, clients: Callable[..., Client]) -> None:
    server = start_server(async_mode, env=SMALL_LIMITS)
    token = server.token("mallory", ())
    client = clients(server.url, token)  # in monitoring: 1 room, 8 tokens
    assert error_code(client.call("resume", {"rooms": rooms(5)})) == "too_many_rooms"  # 5 > 4 (7 left)
    ack = client.call("resume", {"rooms": rooms(4)})  # 4 rooms, 4 tokens (3 left)
    assert ack["ok"] is True and set(ack["rooms"]) == set(rooms(4)), ack
    assert error_code(client.call("join_room", {"room": "one-more"})) == "too_many_rooms"  # 6 > 5 (2 left)
    assert client.call("leave_room", {"room": "flood-3"})["ok"] is True  # (1 left)
    assert client.call("join_room", {"room": "one-more"})["ok"] is True  # (0 left)
    # A resume costs one token per room, and the bucket is empty.
    assert error_code(client.call("resume", {"rooms": rooms(3)})) == "rate_limited"

    # In the connect: too many rooms refused (the connection stands), a few accepted.
    second = clients(server.url, token, auth={"resume": {"rooms": rooms(5, "auth")}})
    assert second.connected
    assert wait_for(lambda: second.of("error"), 10)[0]["code"] == "too_many_rooms"
    third = clients(server.url, token, auth={"resume": {"rooms": rooms(3, "auth")}})
    assert third.connected and not third.of("error")
    detail = admin_status(server)["detail"]
    assert detail["rooms"]["one-more"] == 1 and detail["rooms"]["auth-2"] == 1 and "auth-4" not in detail["rooms"]
    assert detail["presence"]["/monitoring"]["flood-0"] == 1

    # Three connections per user: the fourth is refused at connect, another user is not.
    fourth = clients(server.url, token)
    assert not fourth.connected and fourth.refusal()["code"] == "too_many_connections"
    assert clients(server.url, server.token("bob", ())).connected
    third.close()
    wait_for(lambda: admin_status(server)["detail"]["users"].get("mallory") == 2, 10)
    assert clients(server.url, token).connected

    status = server.status()
    assert {code: status["refusals"].get(code) for code in ("too_many_rooms", "rate_limited", "too_many_connections")} \
        == {"too_many_rooms": 3, "rate_limited": 1, "too_many_connections": 1}
    assert metric(server, 'eventbus_refusals_total{code="too_many_connections"}') == 1


# -- the public status -----------------------------------------------------------------------


def test_public_status_has_counts_and_admins_get_the_detail(
        start_server: Callable[..., ServerProcess], async_mode: str, clients: Callable[..., Client]) -> None:
    server = start_server(async_mode)
    client = clients(server.url, server.token("alice", ()))
    assert client.call("resume", {"rooms": rooms(30, "team")})["ok"] is True
    chat = clients(server.url, server.token("carol", ("admin",)), namespace="/chat")
    assert chat.call("join_room", {"room": "session:s-1"})["ok"] is True

    status = server.status()
    assert {"status", "connections", "rooms"} <= set(status)
    assert status["rooms"] == {"monitoring": 1, "admin": 0, "chat": 1}
    assert status["room_totals"] == {"rooms": 32, "chat_sessions": 1, "memberships": 32}
    assert "detail" not in status and "presence" not in status
    assert isinstance(status["history"]["rooms"], int) and status["history"]["rooms"] >= 31
    flat = json.dumps(status)
    assert "team-" not in flat and "session:s-1" not in flat and "alice" not in flat

    detail = admin_status(server)["detail"]
    assert detail["rooms"]["team-7"] == 1 and detail["rooms"]["session:s-1"] == 1
    assert detail["presence"]["/chat"]["session:s-1"] == 1
    assert detail["history"]["team-7"] >= 1
    url = f"{server.url}/api/websocket/status?detail=1"
    assert requests.get(url, timeout=5).status_code == 401
    reader = {"Authorization": f"Bearer {server.token('alice', ())}"}
    assert requests.get(url, headers=reader, timeout=5).status_code == 403
    # A non-admin token on the plain endpoint gets the public view.
    assert "detail" not in requests.get(f"{server.url}/api/websocket/status", headers=reader, timeout=5).json()


# -- sessions that never sign in --------------------------------------------------------------


def open_polling_session(url: str) -> requests.Response:
    return requests.get(f"{url}/socket.io/?EIO=4&transport=polling", timeout=5)


def test_unsigned_engineio_sessions_are_capped(
        start_server: Callable[..., ServerProcess], async_mode: str, clients: Callable[..., Client]) -> None:
    server = start_server(async_mode, env={"EVENTBUS_MAX_PENDING_SESSIONS": "10"})
    sids = []
    for _ in range(8):
        response = open_polling_session(server.url)
        assert response.status_code == 200, response.text
        sids.append(json.loads(response.text[1:])["sid"])
    sockets = [websocket.create_connection(f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket",
                                           timeout=5) for _ in range(2)]
    try:
        for ws in sockets:
            assert ws.recv().startswith("0{")  # the Engine.IO open packet: a session, never signed in
        refused = open_polling_session(server.url)
        assert refused.status_code == 401 and refused.json()["code"] == "too_many_pending_sessions"
        late = clients(server.url, server.token("alice", ()))
        assert not late.connected
        status = server.status()
        assert status["pending_sessions"]["pending"] == 10
        assert status["refusals"]["too_many_pending_sessions"] == 2
        assert metric(server, "eventbus_pending_sessions ") == 10

        # A session that goes away frees its place; one that signs in is no longer pending.
        for sid in sids[:3]:
            requests.post(f"{server.url}/socket.io/?EIO=4&transport=polling&sid={sid}", data="1", timeout=5)
        wait_for(lambda: server.status()["pending_sessions"]["pending"] == 7, 10, message="closed sessions released")
        signed = [clients(server.url, server.token(f"user{n}", ())) for n in range(3)]
        assert all(client.connected for client in signed)
        assert server.status()["pending_sessions"]["pending"] == 7
    finally:
        for ws in sockets:
            ws.close()
    wait_for(lambda: server.status()["pending_sessions"]["pending"] == 5, 10, message="websocket sessions released")


def test_pending_sessions_expire_by_ping_timeout_and_connect_timeout() -> None:
    """In process, with short timings: a session that stops answering pings is closed by
    Engine.IO and leaves the count; past the connect timeout one is closed to make room."""
    from eventbus_socketio.sessions_limit import limit_pending_sessions

    sio = socketio.Server(async_mode="threading", ping_interval=0.2, ping_timeout=0.2, logger=False)
    refused: list[Any] = []
    pending = limit_pending_sessions(sio, 2, on_refused=refused.append, connect_timeout=60)
    app = socketio.WSGIApp(sio)

    def open_session() -> str:
        status: list[str] = []
        environ = {"REQUEST_METHOD": "GET", "QUERY_STRING": "EIO=4&transport=polling", "wsgi.url_scheme": "http",
                   "HTTP_HOST": "localhost", "SERVER_NAME": "localhost", "SERVER_PORT": "80", "PATH_INFO": "/socket.io/"}
        body = b"".join(app(environ, lambda s, h: status.append(s)))
        return status[0] if not status[0].startswith("200") else json.loads(body.decode()[1:])["sid"]

    try:
        opened = [open_session(), open_session()]
        assert len(pending) == 2 and open_session().startswith("401") and len(refused) == 1
        # Nobody answers the pings: Engine.IO closes both, and the places are free again.
        wait_for(lambda: len(pending) == 0, 10, message="ping timeout closed the sessions")
        assert all(sid not in sio.eio.sockets or sio.eio.sockets[sid].closed for sid in opened)
        third = open_session()
        assert len(pending) == 1 and third in sio.eio.sockets
        pending.connect_timeout = 0.0  # every pending session is now past its connect timeout
        open_session()
        fourth = open_session()  # the cap is reached: the stale ones are closed for room
        assert not fourth.startswith("401") and pending.timed_out >= 1
        assert (third not in sio.eio.sockets or sio.eio.sockets[third].closed) and len(pending) == 1
    finally:
        for socket in list(sio.eio.sockets.values()):
            socket.close(wait=False, abort=True)
        sio.shutdown()


# -- resuming a room the history forgot -------------------------------------------------------


def test_resume_of_a_forgotten_room_asks_for_resync_and_new_rooms_start_clean(tmp_path: Any) -> None:
    import eventbus_auth
    import eventbus_socketio
    from eventbus_auth import create_token

    secret = "limits-secret-" + "s" * 40
    config = Config(secret_key=secret, data_dir=str(tmp_path / "data"))
    bus = EventBus(config, plugins=[eventbus_auth, eventbus_socketio], load_entrypoints=False,
                   history=MemoryHistory(max_rooms=2))
    try:
        app = eventbus_socketio.create_app(bus=bus)
        manager = app.extensions["eventbus"]
        token = create_token(secret, "alice", ["admin"], 600)
        for n in range(3):
            bus.emit("chat_response", {"n": n}, session_id="old")
        epoch = bus.history.epoch
        for room in ("x", "y"):  # session:old is forgotten: its seq 3 is folded into the floor
            bus.emit("agent_started", {}, room=room)
        client = manager.socketio.test_client(app, namespace="/chat", auth={"token": token})
        ack = client.emit("resume", {"rooms": {"session:old": 2}, "epoch": epoch}, namespace="/chat", callback=True)
        assert ack["ok"] and ack["rooms"]["session:old"]["resync_required"] is True
        resync = [p["args"][0] for p in client.get_received("/chat") if p["name"] == "resync_required"]
        assert resync and resync[0]["room"] == "session:old"

        # A room the transport never sent in starts at the floor: the first event follows it.
        ack = client.emit("join_room", {"room": "session:fresh"}, namespace="/chat", callback=True)
        assert ack["seq"] >= 3  # above every seq a forgotten room had reached
        received: list[dict[str, Any]] = []

        def joined() -> list[dict[str, Any]]:
            received.extend(p["args"][0] for p in client.get_received("/chat") if p["name"] == "user_joined")
            return [e for e in received if e["room"] == "session:fresh"]

        [first] = wait_for(joined, 5, message="user_joined in session:fresh")
        assert first["seq"] == ack["seq"] + 1
    finally:
        bus.close()
