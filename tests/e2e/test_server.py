"""The real server in every async mode, with the python-socketio client."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import socketio

from eventbus.testing import wait_until
from eventbus_auth import create_token

from .ordered import ordered_client
from .server import ServerProcess

APPS = Path(__file__).parent / "apps"


class Client:
    """A python-socketio client that records every event it receives."""

    def __init__(self, url: str, namespace: str, token: str | None, **connect: Any):
        self.namespace = namespace
        self.events: list[tuple[str, Any]] = []
        self.errors: list[Any] = []
        self.sio = ordered_client(reconnection=False)
        self.sio.on("*", lambda event, *args: self.events.append((event, args[0] if args else None)),
                    namespace=namespace)
        self.sio.on("connect_error", self.errors.append, namespace=namespace)
        auth = {"token": token} if token is not None else {}
        try:
            self.sio.connect(url, namespaces=[namespace], auth=auth, wait_timeout=10, **connect)
        except socketio.exceptions.ConnectionError:
            pass

    def of(self, name: str) -> list[Any]:
        return [data for event, data in list(self.events) if event == name]

    def call(self, event: str, data: Any) -> Any:
        return self.sio.call(event, data, namespace=self.namespace, timeout=10)

    def close(self) -> None:
        self.sio.disconnect()


@pytest.fixture
def clients() -> Any:
    made: list[Client] = []

    def make(*args: Any, **kwargs: Any) -> Client:
        made.append(Client(*args, **kwargs))
        return made[-1]

    yield make
    for client in made:
        client.close()


def test_refusal_codes(server: ServerProcess, clients: Callable[..., Client]) -> None:
    none = clients(server.url, "/monitoring", None)
    expired = clients(server.url, "/monitoring", server.token(ttl=-60))
    not_admin = clients(server.url, "/admin", server.token("bob", ("publisher",)))
    for client, code in ((none, "unauthorized"), (expired, "token_expired"), (not_admin, "forbidden")):
        refusals = lambda: [e for e in client.errors if isinstance(e, dict)]  # noqa: E731
        wait_until(refusals, 10, message=f"connect_error {code}")
        assert not client.sio.connected
        assert refusals()[0]["code"] == code, client.errors
        assert refusals()[0]["data"] == {"code": code, "message": refusals()[0]["message"]}
    counts = server.status()["refusals"]
    assert counts == {"unauthorized": 1, "token_expired": 1, "forbidden": 1}


def test_publish_reaches_monitoring_and_chat_round_trip(server: ServerProcess, clients: Callable[..., Client]) -> None:
    monitor = clients(server.url, "/monitoring", server.token(), transports=["websocket"])
    assert monitor.sio.connected
    published = server.publish("tool_executed", {"tool": "search", "duration_ms": 12})
    wait_until(lambda: monitor.of("tool_executed"), 10, message="tool_executed")
    assert monitor.of("tool_executed")[0]["id"] == published["id"]

    alice = clients(server.url, "/chat", server.token("alice", ()))
    # Sessions are private: alice opens e2e by joining it first; bob's token lists it.
    bob_token = create_token(server.env["EVENTBUS_SECRET_KEY"], "bob", (), 600, sessions=["e2e"])
    bob = clients(server.url, "/chat", bob_token, transports=["polling"])
    assert alice.call("join_room", {"room": "session:e2e"})["ok"]
    assert bob.call("join_room", {"room": "session:e2e"})["presence"] == ["alice", "bob"]
    ack = alice.call("chat_message", {"session_id": "e2e", "message": "ping"})
    assert ack["ok"]
    wait_until(lambda: bob.of("chat_message"), 10, message="chat at bob")
    assert bob.of("chat_message")[0]["data"]["message"] == "ping"
    assert bob.of("chat_message")[0]["seq"] == ack["seq"]
    wait_until(lambda: [e for e in alice.of("user_joined") if e["user_id"] == "bob"], 10, message="presence")


def test_agent_threads_in_an_existing_app(start_server: Callable[..., ServerProcess], async_mode: str,
                                          clients: Callable[..., Client]) -> None:
    """Agents emit blinker signals from their own threads in every async mode; all arrive in order."""
    server = start_server(async_mode, command=[sys.executable, str(APPS / "agent_app.py")])
    monitor = clients(server.url, "/monitoring", server.token())
    assert monitor.sio.connected
    for run in ("a", "b", "c"):
        requests.post(f"{server.url}/agent/run?count=200&run={run}", timeout=5).raise_for_status()
    wait_until(lambda: len(monitor.of("agent_started")) >= 600, 20, message="600 agent events")
    events = monitor.of("agent_started")
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == 600
    for run in ("a", "b", "c"):
        assert [e["data"]["step"] for e in events if e["data"]["run"] == run] == list(range(200))


def test_oversized_and_malformed_messages(server: ServerProcess, clients: Callable[..., Client]) -> None:
    chat = clients(server.url, "/chat", server.token(), transports=["websocket"])
    big = chat.call("chat_message", {"session_id": "s", "message": "x" * 100_000})
    assert big["error"]["code"] == "payload_too_large"
    assert chat.call("chat_message", ["not", "an", "object"])["error"]["code"] == "invalid_payload"
    assert chat.sio.connected
    # Past the transport frame limit the connection is closed in every mode.
    chat.sio.emit("chat_message", {"session_id": "s", "message": "x" * 2_000_000}, namespace="/chat")
    wait_until(lambda: not chat.sio.connected, 15, message="oversized frame closes the connection")


def test_foreign_origin_is_refused(server: ServerProcess) -> None:
    polling = requests.get(f"{server.url}/socket.io/?EIO=4&transport=polling",
                           headers={"Origin": "https://evil.example"}, timeout=5)
    assert polling.status_code == 400
    same = requests.get(f"{server.url}/socket.io/?EIO=4&transport=polling",
                        headers={"Origin": server.url}, timeout=5)
    assert same.status_code == 200
    import websocket

    with pytest.raises((websocket.WebSocketException, OSError)):
        ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket",
                                         origin="https://evil.example", timeout=5)
        try:
            ws.send("40/chat,")
            ws.recv()
            ws.recv()
        finally:
            ws.close()


def test_allowed_origin_list(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("threading", env={"WEBSOCKET_CORS_ORIGINS": "http://localhost:3000"})
    ok = requests.get(f"{server.url}/socket.io/?EIO=4&transport=polling",
                      headers={"Origin": "http://localhost:3000"}, timeout=5)
    assert ok.status_code == 200
    assert ok.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    other = requests.get(f"{server.url}/socket.io/?EIO=4&transport=polling",
                         headers={"Origin": "http://localhost:4000"}, timeout=5)
    assert other.status_code == 400


def test_star_origin_is_refused_at_start(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, env={"WEBSOCKET_CORS_ORIGINS": "*"})
    with pytest.raises(RuntimeError, match="EVENTBUS_ALLOW_ANY_ORIGIN"):
        server.start(timeout=20)


def test_zero_config_serve_prints_a_working_token(tmp_path: Path, clients: Callable[..., Client]) -> None:
    server = ServerProcess(tmp_path, env={})
    del server.env["EVENTBUS_SECRET_KEY"]
    server.start()
    try:
        log = server.log()
        token = next(line.split(": ", 1)[1].strip() for line in log.splitlines() if "admin token" in line)
        monitor = clients(server.url, "/monitoring", token)
        assert monitor.sio.connected
        secret_file = tmp_path / "data" / "secret_key"
        assert secret_file.stat().st_mode & 0o777 == 0o600
        created = subprocess.run([sys.executable, "-m", "eventbus", "token", "create", "--user", "ops",
                                  "--role", "publisher"], env=server.env, capture_output=True, text=True,
                                 timeout=30, check=True).stdout.strip()
        assert len(created.splitlines()) == 1
        emitted = subprocess.run([sys.executable, "-m", "eventbus", "emit", "agent_started", "--data",
                                  '{"agent_name": "cli"}', "--url", server.url, "--token", created],
                                 env=server.env, capture_output=True, text=True, timeout=30)
        assert emitted.returncode == 0, emitted.stderr
        assert json.loads(emitted.stdout)["seq"] >= 1
        wait_until(lambda: monitor.of("agent_started"), 10, message="emitted event")
        assert monitor.of("agent_started")[0]["source"] == "http:ops"
    finally:
        server.stop()


def test_emit_cli_errors(server: ServerProcess) -> None:
    bad = subprocess.run([sys.executable, "-m", "eventbus", "emit", "no_such_type", "--url", server.url],
                         env=server.env, capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "unknown_event_type" in bad.stderr
    bad_json = subprocess.run([sys.executable, "-m", "eventbus", "emit", "agent_started", "--data", "{oops"],
                              env=server.env, capture_output=True, text=True, timeout=30)
    assert bad_json.returncode == 2 and "--data" in bad_json.stderr


def test_tail_prints_events(server: ServerProcess) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "eventbus", "tail", "--url", server.url, "--count", "2",
                             "--type", "tool_*", "--json"], env=server.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("# connected" in line for line in stderr), 15, message="tail connected")
        server.publish("agent_started", {"agent_name": "skip-me"})
        first = server.publish("tool_executed", {"tool": "a"})
        second = server.publish("tool_executed", {"tool": "b"})
        out = proc.stdout.read()
        proc.wait(20)
    finally:
        proc.kill()
        proc.wait(10)
        reader.join(10)  # reads to the end of stderr, so it can be closed
        proc.stdout.close()
        proc.stderr.close()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [e["id"] for e in lines] == [first["id"], second["id"]]


def test_dropped_connection_reconnects_and_kick_does_not(server: ServerProcess) -> None:
    """``mode: drop`` closes the transport as a network failure would; stock clients come
    back by themselves. ``kick`` is final."""
    connects: list[float] = []
    sio = socketio.Client(reconnection=True, reconnection_delay=0.1, reconnection_delay_max=0.5)
    sio.on("connect", lambda: connects.append(time.monotonic()), namespace="/monitoring")
    sio.connect(server.url, namespaces=["/monitoring"], auth={"token": server.token("roamer")},
                transports=["websocket"], wait_timeout=10)
    admin = {"Authorization": f"Bearer {server.token()}"}
    try:
        wait_until(lambda: len(connects) == 1, 10, message="first connect")
        dropped = requests.post(f"{server.url}/api/connections/disconnect",
                                json={"user_id": "roamer", "mode": "drop"}, headers=admin, timeout=5).json()
        assert len(dropped["disconnected"]) == 1
        wait_until(lambda: len(connects) == 2, 15, message="automatic reconnect after a drop")
        kicked = requests.post(f"{server.url}/api/connections/disconnect",
                               json={"user_id": "roamer"}, headers=admin, timeout=5).json()
        assert len(kicked["disconnected"]) == 1
        wait_until(lambda: server.status()["namespaces"]["/monitoring"] == 0, 10, message="kicked")
        bad = requests.post(f"{server.url}/api/connections/disconnect",
                            json={"user_id": "roamer", "mode": "explode"}, headers=admin, timeout=5)
        assert bad.status_code == 400
        assert len(connects) == 2
    finally:
        sio.disconnect()
