"""The official ``socket.io-client`` under Node against real servers, in every async mode.

The Node scripts in ``tests/e2e/js`` print one JSON record per line; these tests drive them
through stdin and assert on what they print. Run ``npm ci`` in ``tests/e2e/js`` first.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from eventbus_auth import create_token

from .server import ServerProcess
from .test_python_client import Publisher, redis_outage
from .test_redis import own_redis  # noqa: F401 - fixture: a private redis-server on a free port

JS_DIR = Path(__file__).parent / "js"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(NODE is None, reason="node is not installed"),
    pytest.mark.skipif(not (JS_DIR / "node_modules" / "socket.io-client").is_dir(),
                       reason="tests/e2e/js/node_modules is missing: run `npm ci` in tests/e2e/js"),
]

Record = dict[str, Any]


class NodeScript:
    """One ``node script.mjs ...`` process: JSON records from stdout, commands to stdin."""

    _ids = itertools.count(1)

    def __init__(self, script: str, *args: str):
        # --preserve-symlinks: node_modules/eventbus-client links to clients/js, whose imports
        # must resolve from this node_modules (where socket.io-client is installed).
        self.argv = [NODE, "--preserve-symlinks", str(JS_DIR / script), *args]
        self.proc = subprocess.Popen(self.argv, cwd=JS_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self.records: list[Record] = []
        self.stderr: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            try:
                record = json.loads(line)
            except ValueError:
                record = {"kind": "unparsed", "line": line}
            with self._cond:
                self.records.append(record)
                self._cond.notify_all()
        with self._cond:
            self.records.append({"kind": "exit"})
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:  # type: ignore[union-attr]
            self.stderr.append(line)

    def describe(self) -> str:
        tail = "\n".join(json.dumps(r)[:300] for r in self.records[-25:])
        return f"{' '.join(self.argv[2:3])}: last records:\n{tail}\nstderr:\n{''.join(self.stderr)[-2000:]}"

    def wait_for(self, predicate: Callable[[Record], bool], timeout: float = 15.0, what: str = "") -> Record:
        """The first record (oldest) matching ``predicate``; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for record in self.records:
                    if predicate(record):
                        return record
                    if record.get("kind") in ("fatal", "command_failed"):
                        pytest.fail(f"node script failed: {record}\n{self.describe()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}\n{self.describe()}")
                self._cond.wait(remaining)

    def wait_kind(self, kind: str, timeout: float = 15.0, **fields: Any) -> Record:
        return self.wait_for(lambda r: r.get("kind") == kind and all(r.get(k) == v for k, v in fields.items()),
                             timeout, f"{kind} {fields or ''}")

    def events(self, name: str | None = None) -> list[Record]:
        with self._cond:
            return [r for r in self.records if r.get("kind") == "event" and (name is None or r["event"] == name)]

    def send(self, cmd: str, **fields: Any) -> int:
        command_id = next(self._ids)
        self.proc.stdin.write(json.dumps({"cmd": cmd, "id": command_id, **fields}) + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return command_id

    def request(self, cmd: str, timeout: float = 15.0, **fields: Any) -> Record:
        command_id = self.send(cmd, **fields)
        return self.wait_kind("ack", timeout, id=command_id)

    def emit(self, event: str, data: Any) -> dict[str, Any]:
        """Raw client: emit with an ack and return the ack."""
        return self.request("emit", event=event, data=data)["ack"]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("close")
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()  # type: ignore[union-attr]
            except OSError:
                pass


@pytest.fixture
def node() -> Iterator[Callable[..., NodeScript]]:
    """``node("raw_client.mjs", url, token, namespace)``; every script is stopped afterwards."""
    started: list[NodeScript] = []

    def start(script: str, *args: str) -> NodeScript:
        started.append(NodeScript(script, *args))
        return started[-1]

    yield start
    for script in started:
        script.close()


def envelope(record: Record) -> dict[str, Any]:
    return record["args"][0]


def wait_positioned(client: NodeScript, room: str, seq: int, epoch: str, timeout: float = 20.0) -> Record:
    """Ask the helper for its positions until ``room`` stands at ``seq`` of ``epoch``."""
    deadline = time.monotonic() + timeout
    while True:
        record = client.wait_kind("positions", id=client.send("positions"))
        if record["positions"].get(room) == {"seq": seq, "epoch": epoch}:
            return record
        if time.monotonic() > deadline:
            pytest.fail(f"{room} not at {seq} of {epoch}: {record}\n{client.describe()}")
        time.sleep(0.05)  # then ask again


def test_client_unit_tests_pass_under_node() -> None:
    """The helper's own unit tests (fake socket, no server): ordering, de-duplication,
    batches and resync."""
    result = subprocess.run([NODE, "--preserve-symlinks", "--test", "client_unit.test.mjs"], cwd=JS_DIR,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_token_connect_and_refusal_codes(server: ServerProcess, node: Callable[..., NodeScript]) -> None:
    expired = server.token("carol", (), ttl=-120)
    admin = node("raw_client.mjs", server.url, server.token("root", ("admin",)), "/admin")
    anonymous = node("raw_client.mjs", server.url, "-", "/monitoring")
    stale = node("raw_client.mjs", server.url, expired, "/monitoring")
    viewer = node("raw_client.mjs", server.url, server.token("dave", ()), "/admin")
    forged = node("raw_client.mjs", server.url, server.token("eve", ("admin",))[:-4] + "AAAA", "/monitoring")

    assert admin.wait_kind("connect")["sid"]
    for client, code in ((anonymous, "unauthorized"), (stale, "token_expired"), (viewer, "forbidden"),
                         (forged, "unauthorized")):
        refusal = client.wait_kind("connect_error")
        assert refusal["data"]["code"] == code, refusal
        assert refusal["data"]["message"], refusal
        assert refusal["active"] is False, "a refusal must not be retried by socket.io-client"
    assert server.status()["refusals"].get("forbidden", 0) >= 1


def test_agent_event_arrives_in_monitoring(server: ServerProcess, node: Callable[..., NodeScript]) -> None:
    watcher = node("raw_client.mjs", server.url, server.token("watcher", ()), "/monitoring")
    watcher.wait_kind("connect")
    published = server.publish("tool_executed", {"agent_name": "researcher", "tool": "search", "ok": True},
                               session_id="s-9")
    record = watcher.wait_for(lambda r: r.get("event") == "tool_executed", what="tool_executed")
    env = envelope(record)
    assert env["id"] == published["id"]
    assert env["seq"] == published["seq"]
    assert env["type"] == "tool_executed" and env["room"] == "monitoring"
    assert env["data"] == {"agent_name": "researcher", "tool": "search", "ok": True}
    assert env["session_id"] == "s-9" and env["source"] == "http:admin"
    assert set(env) == {"id", "type", "data", "timestamp", "room", "seq", "user_id", "session_id", "source"}


def test_chat_round_trip_and_presence(server: ServerProcess, node: Callable[..., NodeScript]) -> None:
    room = "session:s-1"
    alice_token = server.token("alice", ())
    alice1 = node("raw_client.mjs", server.url, alice_token, "/chat")
    # Sessions are private: alice opens s-1 by joining it first; bob's token lists it.
    bob_token = create_token(server.env["EVENTBUS_SECRET_KEY"], "bob", (), 600, sessions=["s-1"])
    bob = node("raw_client.mjs", server.url, bob_token, "/chat")
    alice1.wait_kind("connect")
    bob.wait_kind("connect")

    ack = alice1.emit("join_room", {"room": room})
    assert ack["ok"] is True and ack["room"] == room and ack["presence"] == ["alice"]
    ack = bob.emit("join_room", {"room": room})
    assert ack["presence"] == ["alice", "bob"]
    joined = envelope(alice1.wait_for(lambda r: r.get("event") == "user_joined"
                                      and envelope(r)["data"]["user_id"] == "bob", what="bob joined"))
    assert joined["room"] == room and joined["data"]["presence"] == ["alice", "bob"]

    # A second tab of alice joins: presence lists her once and nobody hears user_joined again.
    alice2 = node("raw_client.mjs", server.url, alice_token, "/chat")
    alice2.wait_kind("connect")
    assert alice2.emit("join_room", {"room": room})["presence"] == ["alice", "bob"]

    sent = bob.emit("chat_message", {"session_id": "s-1", "message": "hello from bob"})
    assert sent["ok"] is True and sent["room"] == room and isinstance(sent["seq"], int)
    for tab in (alice1, alice2, bob):
        got = envelope(tab.wait_for(lambda r: r.get("event") == "chat_message", what="chat_message"))
        assert got["id"] == sent["id"] and got["seq"] == sent["seq"]
        assert got["data"]["message"] == "hello from bob" and got["user_id"] == "bob"
    # Events in a room are ordered by seq: anything sent before the message was received first.
    assert [envelope(r)["data"]["user_id"] for r in bob.events("user_joined")] == ["bob"]

    bob.emit("typing_indicator", {"session_id": "s-1", "typing": True})
    typing = envelope(alice1.wait_for(lambda r: r.get("event") == "typing_indicator", what="typing"))
    assert typing["seq"] is None and typing["data"] == {"typing": True, "user": "bob"}

    # One of alice's two tabs closes: she is still present, so no user_left.
    alice2.close()
    reply = alice1.emit("chat_message", {"session_id": "s-1", "message": "still here"})
    bob.wait_for(lambda r: r.get("event") == "chat_message" and envelope(r)["id"] == reply["id"], what="reply")
    assert bob.events("user_left") == []

    # Her last tab closes: user_left with the remaining members.
    alice1.close()
    left = envelope(bob.wait_for(lambda r: r.get("event") == "user_left", what="user_left"))
    assert left["room"] == room and left["data"]["user_id"] == "alice" and left["data"]["presence"] == ["bob"]
    assert left["seq"] > reply["seq"]


def test_helper_message_sent_at_creation_reaches_its_own_handlers(server: ServerProcess,
                                                                  node: Callable[..., NodeScript]) -> None:
    """The helper sends only after the room's join point, so its own message comes back."""
    send = json.dumps({"event": "chat_message", "data": {"session_id": "early", "message": "first words"}})
    client = node("helper_client.mjs", server.url, server.token("early-bird", ()), "/chat", "session:early",
                  f"--send={send}")
    ack = client.wait_kind("ack", id="start")
    assert ack.get("ack", {}).get("ok") is True, ack
    mine = client.wait_for(lambda r: r.get("kind") == "deliver" and r["type"] == "chat_message", what="own message")
    assert mine["envelope"]["id"] == ack["ack"]["id"] and mine["envelope"]["seq"] == ack["ack"]["seq"]
    assert mine["envelope"]["data"]["message"] == "first words"


@pytest.mark.parametrize("mode", ["kick", "drop"])  # a server-side disconnect; a killed transport
def test_helper_reconnects_and_ends_contiguous(server: ServerProcess, node: Callable[..., NodeScript],
                                               mode: str) -> None:
    client = node("helper_client.mjs", server.url, server.token("watcher", ()), "/monitoring")
    client.wait_kind("state", state="connected")
    first = server.publish("agent_started", {"agent_name": "a", "details": {"n": 0}})
    client.wait_for(lambda r: r.get("kind") == "deliver" and r["envelope"]["id"] == first["id"], what="first")

    admin = {"Authorization": f"Bearer {server.token()}"}
    for n in range(1, 11):
        server.publish("agent_started", {"agent_name": "a", "details": {"n": n}})
    response = requests.post(f"{server.url}/api/connections/disconnect",
                             json={"user_id": "watcher", "mode": mode}, headers=admin, timeout=10)
    assert response.status_code == 200 and len(response.json()["disconnected"]) == 1, response.text
    client.wait_kind("state", state="reconnecting")
    for n in range(11, 31):  # while the client is away
        server.publish("agent_started", {"agent_name": "a", "details": {"n": n}})
    client.wait_for(lambda r: r.get("kind") == "state" and r["state"] == "connected"
                    and r["previous"] == "reconnecting", what="reconnected")
    for n in range(31, 41):
        server.publish("agent_started", {"agent_name": "a", "details": {"n": n}})
    client.wait_for(lambda r: r.get("kind") == "deliver" and r["envelope"]["data"].get("details", {}).get("n") == 40,
                    what="the last event")

    delivered = [r["envelope"] for r in client.records if r.get("kind") == "deliver"
                 and r["envelope"]["room"] == "monitoring"]
    seqs = [env["seq"] for env in delivered]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"not contiguous: {seqs}"
    numbers = [env["data"]["details"]["n"] for env in delivered if env["type"] == "agent_started"]
    assert numbers == list(range(41))
    assert len({env["id"] for env in delivered}) == len(delivered)
    # The events published while away came back by replay, not by a history fetch.
    assert server.status()["transports"]["socketio"]["health"]["replayed"] >= 20
    assert not [r for r in client.records if r.get("kind") == "fetch"]
    assert not [r for r in client.records if r.get("kind") == "error"], "the reconnect raised an error"
    positions = client.wait_kind("positions", id=client.send("positions"))
    assert positions["positions"]["monitoring"]["seq"] == seqs[-1]


def test_helper_redis_outage_delivers_each_event_once_and_reports_no_loss(
        start_server: Callable[..., ServerProcess], async_mode: str, own_redis: Any,
        node: Callable[..., NodeScript]) -> None:
    """While Redis is away the server delivers at once without a seq; when Redis returns the
    same events get seqs of a new epoch and come back through history. Each reaches the
    application once, in order, and the resync reports no loss."""
    server = start_server(async_mode, env={"EVENTBUS_REDIS_URL": own_redis.url})
    client = node("helper_client.mjs", server.url, server.token("noderedis", ()), "/monitoring")
    client.wait_kind("state", state="connected")
    publisher = Publisher(server.url, server.token(), rate=150, total=450).start()
    try:
        publisher.wait_accepted(100)
        redis_outage(server, own_redis, publisher)
    finally:
        publisher.stop()
    accepted = publisher.ids()
    assert len(accepted) == 450 and publisher.failed == 0
    history = requests.get(f"{server.url}/api/events", params={"room": "monitoring", "after": 0},
                           headers={"Authorization": f"Bearer {server.token()}"}, timeout=10).json()
    final = wait_positioned(client, "monitoring", history["latest_seq"], history["epoch"])
    delivered = [r["envelope"] for r in client.records if r.get("kind") == "deliver"]
    assert [e["id"] for e in delivered if e.get("type") == "agent_started"] == accepted, \
        "each accepted event once, in the order accepted"
    assert any(e.get("id") and e["seq"] is None for e in delivered), "the outage delivered events without a seq"
    resyncs = [r for r in client.records if r.get("kind") == "resync"]
    assert resyncs and all(r["lost"] == 0 and r["unverified"] == 0 for r in resyncs), resyncs
    assert final["stats"]["lost"] == 0
