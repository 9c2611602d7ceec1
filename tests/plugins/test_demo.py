"""The demo agents: the workflow they emit, the server-side runner (signals, chat answers,
stopping with the bus) and ``eventbus demo --url`` against a real HTTP server."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio
from werkzeug.serving import make_server

import eventbus_auth
import eventbus_socketio
from eventbus import Config, EventBus, signals
from eventbus.testing import RecordingTransport, wait_until
from eventbus_auth import create_token
from eventbus_socketio.demo import DEMO_VISITOR, SESSION_ID, DemoAgents, start_demo

SECRET = "demo-secret-" + "d" * 40
AGENT_TYPES = {"agent_started", "agent_completed", "tool_executed", "agent_handoff"}
SYSTEM_TYPES = {"health_update", "performance_update", "alert_created"}
CHAT_TYPES = {"chat_message", "chat_response", "typing_indicator"}


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, event_type: str, source: str, *, session_id: str | None = None,
                 user_id: str | None = None, **data: Any) -> None:
        self.calls.append((event_type, source, {"session_id": session_id, "user_id": user_id, **data}))

    def types(self) -> list[str]:
        return [c[0] for c in self.calls]


def test_one_round_is_a_realistic_workflow() -> None:
    rec = Recorder()
    agents = DemoAgents(rec, lambda seconds: False, pace=0, rng=random.Random(3))
    assert agents.round() is True
    types = rec.types()
    assert types[0] == "chat_message" and rec.calls[0][2]["user_id"] == DEMO_VISITOR
    assert set(types) >= AGENT_TYPES | {"chat_response", "typing_indicator"}
    handoffs = [(d["from_agent"], d["to_agent"]) for t, _, d in rec.calls if t == "agent_handoff"]
    assert handoffs == [("planner", "researcher"), ("researcher", "writer")]
    tools = [d for t, _, d in rec.calls if t == "tool_executed"]
    assert all(isinstance(d["duration_ms"], float) and d["duration_ms"] > 0 and "ok" in d for d in tools)
    assert all(d["agent_name"] == src for t, src, d in rec.calls if t in AGENT_TYPES - {"agent_handoff"})
    reply = [d for t, _, d in rec.calls if t == "chat_response"]
    assert len(reply) == 1 and reply[0]["agent"] == "writer" and reply[0]["session_id"] == SESSION_ID
    assert types.index("chat_response") > types.index("typing_indicator")
    completed = [d for t, _, d in rec.calls if t == "agent_completed"]
    assert [d["agent_name"] for d in completed] == ["planner", "researcher", "writer"]


def test_failed_tool_calls_happen_and_are_retried() -> None:
    rec = Recorder()
    agents = DemoAgents(rec, lambda seconds: False, pace=0, rng=random.Random(1))
    for _ in range(30):
        agents.round()
    tools = [d for t, _, d in rec.calls if t == "tool_executed"]
    failed = [d for d in tools if not d["ok"]]
    assert failed and all(d["error"] for d in failed)
    assert len(failed) < len(tools) / 4


def test_monitor_tick_reports_health_performance_and_alerts() -> None:
    rec = Recorder()
    agents = DemoAgents(rec, lambda seconds: False, pace=0, rng=random.Random(5))
    for _ in range(60):
        agents.tick()
    assert set(rec.types()) == SYSTEM_TYPES
    perf = [d for t, _, d in rec.calls if t == "performance_update"]
    assert set(perf[0]["metrics"]) >= {"latency_ms", "events_per_s", "cpu_percent"}
    assert all(d["status"] in ("ok", "degraded", "down") for t, _, d in rec.calls if t == "health_update")
    assert all(d["message"] and d["severity"] for t, _, d in rec.calls if t == "alert_created")


def test_a_stop_interrupts_the_workflow() -> None:
    rec = Recorder()
    agents = DemoAgents(rec, lambda seconds: True, pace=1, rng=random.Random(2))
    assert agents.round() is False
    assert "chat_response" not in rec.types()


@pytest.fixture
def server_bus(tmp_path: Path) -> Iterator[tuple[Any, EventBus, RecordingTransport]]:
    recorder = RecordingTransport()
    bus = EventBus(Config(secret_key=SECRET, data_dir=str(tmp_path / "data")),
                   plugins=[eventbus_auth, eventbus_socketio], load_entrypoints=False)
    bus.add_transport(recorder)
    app = eventbus_socketio.create_app(bus=bus)
    yield app, bus, recorder
    bus.close()


def test_in_server_demo_emits_every_type_through_signals(server_bus: Any) -> None:
    app, _bus, recorder = server_bus
    runner = start_demo(app.extensions["eventbus"], pace=0.02, rng=random.Random(11))
    try:
        recorder.wait_for(lambda evs: {e.type for e in evs} >= AGENT_TYPES | SYSTEM_TYPES | CHAT_TYPES, timeout=20)
    finally:
        runner.stop()
    agent_events = [e for e in recorder.events if e.type in AGENT_TYPES]
    assert all(e.origin == "signal" and e.room == "monitoring" for e in agent_events)
    assert {e.source for e in agent_events} >= {"planner", "researcher", "writer"}
    replies = [e for e in recorder.events if e.type == "chat_response"]
    assert replies[0].room == f"session:{SESSION_ID}" and replies[0].data["agent"] == "writer"


def test_in_server_demo_answers_chat_and_stops_with_the_bus(server_bus: Any) -> None:
    app, bus, recorder = server_bus
    runner = start_demo(app.extensions["eventbus"], pace=0.02, rounds=0)
    assert runner._receiver in signals.chat_message.receivers.values()
    # A person's message, as the /chat handler emits it: the bus re-sends it as a signal.
    bus.emit("chat_message", {"message": "Is the nightly import healthy?"}, session_id="s-42",
             user_id="alice", source="client", origin="client")
    recorder.wait_for(lambda evs: any(e.type == "chat_response" and e.session_id == "s-42" for e in evs), 15)
    reply = next(e for e in recorder.events if e.type == "chat_response" and e.session_id == "s-42")
    assert "nightly import healthy" in reply.data["message"]
    bus.close()
    wait_until(lambda: runner._receiver not in signals.chat_message.receivers.values(), 10,
               message="the demo disconnects when the bus closes")
    assert runner.stopped


@pytest.fixture
def http_server(server_bus: Any) -> Iterator[tuple[str, EventBus, RecordingTransport]]:
    app, bus, recorder = server_bus
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", bus, recorder
    server.shutdown()
    thread.join(10)


def demo_cli(url: str, tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTBUS_", "WEBSOCKET_"))}
    env.update(EVENTBUS_SECRET_KEY=SECRET, EVENTBUS_DATA_DIR=str(tmp_path / "cli"))
    return subprocess.Popen([sys.executable, "-m", "eventbus", "demo", "--url", url, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)


def test_demo_command_publishes_rounds_over_http(http_server: Any, tmp_path: Path) -> None:
    url, _bus, recorder = http_server
    proc = demo_cli(url, tmp_path, "--rounds", "2", "--pace", "0.01", "--no-chat")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert '"rounds": 2' in out and '"answers": 2' in out
    types = {e.type for e in recorder.events}
    assert types >= AGENT_TYPES | {"chat_message", "chat_response", "performance_update", "health_update"}
    assert all(e.origin == "http" for e in recorder.events)
    assert len([e for e in recorder.events if e.type == "chat_response"]) == 2


def test_demo_command_answers_chat_typed_in_the_session(http_server: Any, tmp_path: Path) -> None:
    url, _bus, recorder = http_server
    proc = demo_cli(url, tmp_path, "--rounds", "0", "--pace", "0.05")
    alice = socketio.Client(reconnection=False)
    try:
        wait_until(lambda: any(e.type == "user_joined" and e.room == "session:demo" for e in recorder.events), 30,
                   message="the demo joins session:demo")
        alice.connect(url, namespaces=["/chat"], auth={"token": create_token(SECRET, "alice", [], 600)},
                      wait_timeout=10)
        ack = alice.call("chat_message", {"session_id": "demo", "message": "What broke in the last deploy?"},
                         namespace="/chat", timeout=10)
        assert ack["ok"], ack
        recorder.wait_for(lambda evs: any(e.type == "chat_response" and "last deploy" in e.data["message"]
                                          for e in evs), 30)
    finally:
        alice.disconnect()
        proc.terminate()
        proc.communicate(timeout=20)


def test_demo_command_reports_a_refused_token(http_server: Any, tmp_path: Path) -> None:
    url, _bus, _recorder = http_server
    proc = demo_cli(url, tmp_path, "--rounds", "1", "--no-chat", "--token", create_token(SECRET, "bob", [], 60))
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "403 forbidden" in err
