"""A bus in a process that does not serve forwards its events to the server over HTTP:
batches in order on one connection, retries with the same ids, a bounded buffer, the server
file, the token (``eventbus_issue_token``), and the default bus behind agents' signals.

The server here is a small stand-in (``http.server``) whose answers each test chooses; the
real server is in tests/e2e/test_any_process.py."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import eventbus_auth
from eventbus import Config, Event, EventBus
from eventbus.forwarder import (
    SERVER_FILE,
    TOKEN_ROLES,
    TOKEN_USER,
    Forwarder,
    locate,
    read_server_file,
    remove_server_file,
    write_server_file,
)
from eventbus.testing import RecordingTransport, wait_until

SECRET = "forwarder-test-secret-" + "k" * 30
Answer = Callable[[list[dict[str, Any]]], tuple[int, dict[str, Any]]]


def accept_all(items: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    return 202, {"ok": True, "results": [{"ok": True, "id": item["id"], "seq": None} for item in items]}


class FakeServer:
    """``/api/health`` and ``POST /api/events`` (batches) on a free port, HTTP/1.1 keep-alive.
    ``answer(items)`` decides each answer; every request is recorded."""

    def __init__(self, answer: Answer = accept_all, prefix: str = ""):
        self.answer = answer
        self.prefix = prefix
        self.requests: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == f"{fake.prefix}/api/health":
                    self.reply(200, {"status": "ok", "transports": {}})
                else:
                    self.reply(404, {"ok": False})

            def do_POST(self) -> None:
                items = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, body = fake.answer(items)
                with fake.cond:
                    fake.requests.append({"path": self.path, "items": items, "status": status,
                                          "peer": self.client_address,
                                          "authorization": self.headers.get("Authorization")})
                    fake.cond.notify_all()
                self.reply(status, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}{prefix}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def accepted_ids(self) -> list[str]:
        with self.cond:
            return [item["id"] for r in self.requests if r["status"] == 202 for item in r["items"]]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


def events(count: int, start: int = 0) -> list[Event]:
    return [Event(type="tool_executed", data={"n": n}, room="monitoring", source="researcher")
            for n in range(start, start + count)]


def forwarder_for(tmp_path: Path, url: str | None, **settings: Any) -> Forwarder:
    config = Config(data_dir=str(tmp_path / "data"), url=url, forward=True, **settings)
    forwarder = Forwarder(config, lambda: "a-token")
    forwarder.start(lambda target: threading.Thread(target=target, daemon=True).start())
    return forwarder


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- delivery ---------------------------------------------------------------------------

def test_events_go_in_batches_in_emit_order_on_one_connection(tmp_path, fake):
    forwarder = forwarder_for(tmp_path, fake.url)
    sent = events(1200)
    for event in sent:
        forwarder.submit(event)
    wait_until(lambda: forwarder.counters["sent"] == 1200, timeout=10)
    assert fake.accepted_ids() == [e.id for e in sent]
    assert all(len(r["items"]) <= 500 for r in fake.requests) and len(fake.requests) >= 3
    assert len({r["peer"] for r in fake.requests}) == 1, "one keep-alive connection"
    first = fake.requests[0]["items"][0]
    assert first == {"id": sent[0].id, "type": "tool_executed", "data": {"n": 0}, "room": "monitoring",
                     "user_id": None, "source": "researcher"}
    assert fake.requests[0]["authorization"] == "Bearer a-token"
    status = forwarder.status()
    assert (status["state"], status["buffered"], status["retries"], status["dropped"]) == ("connected", 0, 0, 0)
    assert forwarder.close(2) is True


def test_a_failed_batch_is_sent_again_with_the_same_ids_after_a_pause(tmp_path):
    failures = iter([503, 503])

    def flaky(items: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        status = next(failures, None)
        if status is not None:
            return status, {"ok": False, "error": {"code": "unavailable", "message": "backend away"}}
        return accept_all(items)

    server = FakeServer(flaky)
    try:
        forwarder = forwarder_for(tmp_path, server.url)
        sent = events(20)
        for event in sent:
            forwarder.submit(event)
        wait_until(lambda: forwarder.counters["sent"] == 20, timeout=10)
        attempts = [[item["id"] for item in r["items"]] for r in server.requests]
        assert attempts[0] == attempts[1] == attempts[2][:len(attempts[0])]  # the same batch, same ids
        assert server.accepted_ids() == [e.id for e in sent]
        assert forwarder.counters["retries"] == 2 and forwarder.status()["last_error"] is None
        forwarder.close(2)
    finally:
        server.close()


def test_a_batch_the_server_finds_too_large_is_split(tmp_path):
    def small(items: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        if len(items) > 3:
            return 413, {"ok": False, "error": {"code": "too_many_events", "message": "at most 3"}}
        return accept_all(items)

    server = FakeServer(small)
    try:
        forwarder = forwarder_for(tmp_path, server.url)
        sent = events(10)
        for event in sent:
            forwarder.submit(event)
        wait_until(lambda: forwarder.counters["sent"] == 10, timeout=10)
        assert server.accepted_ids() == [e.id for e in sent]
        assert forwarder.counters["rejected"] == 0
        forwarder.close(2)
    finally:
        server.close()


def test_events_the_server_refuses_are_counted_and_not_sent_again(tmp_path, caplog):
    def refuse_odd(items: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        return 202, {"ok": True, "results": [
            {"ok": True, "id": i["id"], "duplicate": i["data"]["n"] == 0} if i["data"]["n"] % 2 == 0
            else {"ok": False, "error": {"code": "forbidden", "message": "no"}} for i in items]}

    server = FakeServer(refuse_odd)
    try:
        forwarder = forwarder_for(tmp_path, server.url)
        for event in events(6):
            forwarder.submit(event)
        wait_until(lambda: forwarder.counters["sent"] + forwarder.counters["rejected"] == 6, timeout=10)
        assert (forwarder.counters["sent"], forwarder.counters["rejected"], forwarder.counters["duplicates"]) == (3, 3, 1)
        assert len(server.requests) == 1
        assert "the server refused event" in caplog.text and "forbidden" in caplog.text
        forwarder.close(2)
    finally:
        server.close()


def test_with_no_server_it_warns_once_keeps_a_bounded_buffer_and_counts_drops(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "eventbus.forwarder")
    forwarder = forwarder_for(tmp_path, None, forward_buffer=5)
    for event in events(8):
        forwarder.submit(event)
    wait_until(lambda: forwarder.state == "no_server", timeout=5)
    status = forwarder.status()
    assert (status["buffered"], status["dropped"], status["sent"]) == (5, 3, 0)
    assert forwarder.close(5) is False
    assert forwarder.counters["dropped"] == 8
    lines = [r.getMessage() for r in caplog.records]
    assert sum("no server to deliver events to" in line for line in lines) == 1, lines
    assert any("5 event(s) not delivered" in line and "8 dropped in all" in line for line in lines), lines


def test_buffered_events_reach_a_server_that_appears_later_in_order(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "eventbus.forwarder")
    forwarder = forwarder_for(tmp_path, None)
    sent = events(30)
    for event in sent:
        forwarder.submit(event)
    wait_until(lambda: forwarder.state == "no_server", timeout=5)
    server = FakeServer()
    try:
        write_server_file(forwarder.config, server.url)  # as `eventbus serve` does
        wait_until(lambda: forwarder.counters["sent"] == 30, timeout=10)
        assert server.accepted_ids() == [e.id for e in sent]
        assert forwarder.status()["found_by"].endswith(SERVER_FILE)
        forwarder.close(2)
    finally:
        server.close()


def test_close_delivers_within_its_timeout(tmp_path, fake):
    forwarder = forwarder_for(tmp_path, fake.url)
    for event in events(100):
        forwarder.submit(event)
    assert forwarder.close(5) is True
    assert len(fake.accepted_ids()) == 100


def test_status_shows_the_url_without_credentials_and_the_path_prefix_is_kept(tmp_path):
    server = FakeServer(prefix="/events")
    try:
        port = server.httpd.server_address[1]
        forwarder = forwarder_for(tmp_path, f"http://user:secret@127.0.0.1:{port}/events")
        forwarder.submit(events(1)[0])
        wait_until(lambda: forwarder.counters["sent"] == 1, timeout=5)
        assert server.requests[0]["path"] == "/events/api/events"
        assert forwarder.status()["url"] == f"http://127.0.0.1:{port}/events"
        assert "secret" not in json.dumps(forwarder.status())
        forwarder.close(2)
    finally:
        server.close()


# -- the server file --------------------------------------------------------------------

def test_the_server_file_is_private_and_only_a_live_answering_server_counts(tmp_path, fake):
    config = Config(data_dir=str(tmp_path / "data"), port=free_port())
    path = write_server_file(config, fake.url)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_server_file(config)["pid"] == os.getpid()
    assert locate(config) == (fake.url, str(path))

    path.write_text(json.dumps({"url": fake.url, "pid": 2 ** 22 + 12345, "started_at": 0}))  # no such pid
    assert read_server_file(config) is None
    assert locate(config)[0] is None

    silent = f"http://127.0.0.1:{free_port()}"
    path.write_text(json.dumps({"url": silent, "pid": os.getpid(), "started_at": 0}))
    url, why = locate(config)
    assert url is None and "does not answer" in why

    remove_server_file(path)  # ours (our pid): removed
    assert not path.exists()
    path.write_text(json.dumps({"url": fake.url, "pid": 1, "started_at": 0}))
    remove_server_file(path)  # another process's: kept
    assert path.exists()


def test_a_port_is_never_probed_on_the_chance_that_a_server_listens(tmp_path, fake):
    """Another local user's program on the usual port must not get the events and the token:
    only EVENTBUS_URL and the server file (in the private data dir) count."""
    config = Config(data_dir=str(tmp_path / "data"), port=fake.httpd.server_address[1])
    url, why = locate(config)
    assert url is None and "EVENTBUS_URL is not set" in why


def test_eventbus_url_comes_first(tmp_path, fake):
    config = Config(data_dir=str(tmp_path / "data"), url="http://127.0.0.1:9")
    write_server_file(config, fake.url)
    assert locate(config) == ("http://127.0.0.1:9", "EVENTBUS_URL")
    assert Config.from_env({"EVENTBUS_URL": "http://127.0.0.1:5050/"}).url == "http://127.0.0.1:5050"


# -- the bus as a forwarder ---------------------------------------------------------------

class LocalRecorder(RecordingTransport):
    local = True


def test_a_bus_that_does_not_serve_forwards_and_delivers_only_to_local_transports(tmp_path, fake):
    remote, local = RecordingTransport("remote"), LocalRecorder("local")
    bus = EventBus(Config(data_dir=str(tmp_path / "data"), url=fake.url, forward=True,
                          env={"EVENTBUS_TOKEN": "given-token"}), load_entrypoints=False, connect_signals=False)
    bus.add_transport(remote)
    bus.add_transport(local)
    sent = [bus.emit("tool_executed", {"n": n}, source="researcher") for n in range(10)]
    assert bus.role == "forwarder"
    wait_until(lambda: bus.status()["forwarder"]["sent"] == 10, timeout=10)
    assert fake.accepted_ids() == [e.id for e in sent]
    assert len(local.wait_for(10)) == 10 and remote.events == []
    assert fake.requests[0]["authorization"] == "Bearer given-token"  # EVENTBUS_TOKEN wins
    assert bus.close(5) is True


def test_the_forwarder_token_comes_from_eventbus_issue_token(tmp_path):
    """No EVENTBUS_TOKEN: the auth plugin's eventbus_issue_token signs one with the local key
    (roles publisher and agent); a 401 makes it mint a new one."""
    import jwt

    answers = iter([401])

    def once_unauthorized(items: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        if next(answers, None):
            return 401, {"ok": False, "error": {"code": "token_expired", "message": "token expired"}}
        return accept_all(items)

    server = FakeServer(once_unauthorized)
    minted: list[str] = []
    try:
        bus = EventBus(Config(data_dir=str(tmp_path / "data"), url=server.url, forward=True, secret_key=SECRET),
                       plugins=[eventbus_auth], load_entrypoints=False, connect_signals=False)
        original = bus._issue_token
        bus._issue_token = lambda: minted.append("x") or original()  # type: ignore[method-assign]
        bus.emit("tool_executed", {"n": 1})
        bus.forwarder._issue_token = bus._issue_token
        wait_until(lambda: bus.status()["forwarder"]["sent"] == 1, timeout=10)
        token = server.requests[-1]["authorization"].removeprefix("Bearer ")
        claims = jwt.decode(token, SECRET, algorithms=["HS256"])
        assert claims["sub"] == TOKEN_USER and claims["roles"] == list(TOKEN_ROLES)
        assert len(minted) >= 1 and server.requests[0]["status"] == 401
        assert bus.pm.hook.eventbus_issue_token(user="u", roles=["publisher"], ttl=60)
        bus.close(2)
    finally:
        server.close()


def test_serve_after_forwarding_began_delivers_the_unsent_events_here(tmp_path):
    remote = RecordingTransport("remote")
    bus = EventBus(Config(data_dir=str(tmp_path / "data"), port=free_port(), forward=True),
                   load_entrypoints=False, connect_signals=False)
    bus.add_transport(remote)
    bus.emit("tool_executed", {"n": 0})  # before init_app: starts forwarding, finds no server
    assert bus.role == "forwarder"
    bus.serve()
    bus.emit("tool_executed", {"n": 1})
    assert [e.data["n"] for e in remote.wait_for(2)] == [0, 1]
    assert bus.role == "local" and bus.status()["forwarder"] is None
    bus.close(2)


# -- the default bus behind agents' signals (each case in its own process) -----------------

def run_agent(code: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTBUS_", "WEBSOCKET_"))}
    base.update(env, EVENTBUS_DATA_DIR=str(tmp_path / "agent-data"))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=base, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    return done


def test_signals_in_a_process_without_a_bus_reach_the_server_and_are_flushed_at_exit(tmp_path, fake):
    done = run_agent('''
        from eventbus import signals
        heard = []
        signals.agent_started.connect(lambda sender, **kw: heard.append(kw), weak=False)
        for n in range(50):
            signals.agent_started.send("researcher", n=n)
        assert heard == [{"n": n} for n in range(50)], heard   # agents' receivers: unchanged
        print(signals.default_bus().role)
    ''', {"EVENTBUS_URL": fake.url, "EVENTBUS_TOKEN": "t"}, tmp_path)  # exits at once: atexit flushes
    assert done.stdout.split() == ["forwarder"]
    items = [item for r in fake.requests for item in r["items"]]
    assert [i["data"]["n"] for i in items] == list(range(50))
    assert {(i["type"], i["source"], i["room"]) for i in items} == {("agent_started", "researcher", "monitoring")}


def test_a_process_with_its_own_bus_never_gets_the_default_bus(tmp_path, fake):
    done = run_agent('''
        from eventbus import Config, EventBus, signals
        from eventbus.testing import RecordingTransport
        recorder = RecordingTransport()
        bus = EventBus(Config(), load_entrypoints=False)
        bus.add_transport(recorder)
        signals.tool_executed.send("researcher", n=1)
        recorder.wait_for(1)
        bus.close()
        signals.tool_executed.send("researcher", n=2)   # no bus listens now: still no default bus
        print(len(recorder.events), signals.default_bus())
    ''', {"EVENTBUS_URL": fake.url}, tmp_path)
    assert done.stdout.split() == ["1", "None"]
    assert fake.requests == []


def test_a_bus_made_after_the_default_bus_takes_over(tmp_path, fake):
    done = run_agent('''
        from eventbus import Config, EventBus, signals
        from eventbus.testing import RecordingTransport
        signals.tool_executed.send("researcher", n=1)      # creates the default bus
        default = signals.default_bus()
        recorder = RecordingTransport()
        bus = EventBus(Config(), load_entrypoints=False)
        bus.add_transport(recorder)
        signals.tool_executed.send("researcher", n=2)
        recorder.wait_for(1)
        print([e.data["n"] for e in recorder.events], default.counters["emitted"])
        bus.close()
    ''', {"EVENTBUS_URL": fake.url, "EVENTBUS_TOKEN": "t"}, tmp_path)
    assert done.stdout.strip() == "[2] 1"
    assert [i["data"]["n"] for r in fake.requests for i in r["items"]] == [1]
