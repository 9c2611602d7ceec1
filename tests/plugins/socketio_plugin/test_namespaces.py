"""Every Socket.IO handler, in process, through Flask-SocketIO's test client."""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask import Flask

from eventbus import EventBroadcaster, EventBus, signals
from eventbus.hookspecs import hookimpl

from .conftest import token


class Inbox:
    """Accumulates what a test client receives, waiting on conditions."""

    def __init__(self, client: Any, namespace: str):
        self.client = client
        self.namespace = namespace
        self.packets: list[dict[str, Any]] = []

    def _pull(self) -> None:
        self.packets.extend(self.client.get_received(self.namespace))

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        self._pull()
        return [p["args"][0] for p in self.packets if name is None or p["name"] == name]

    def wait(self, name: str, count: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.events(name)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} x {name} not received; got {[p['name'] for p in self.packets]}")
            time.sleep(0.005)
        return self.events(name)


def connect(app: Any, manager: Any, namespace: str, user: str = "alice",
            roles: tuple[str, ...] = ("admin", "publisher"), **kwargs: Any) -> Any:
    auth = kwargs.pop("auth", {"token": token(user, roles)})
    return manager.socketio.test_client(app, namespace=namespace, auth=auth, **kwargs)


def test_connect_requires_a_token(app_manager: Any) -> None:
    app, manager = app_manager
    assert not connect(app, manager, "/monitoring", auth={}).is_connected("/monitoring")
    assert not connect(app, manager, "/monitoring", auth={"token": "nope"}).is_connected("/monitoring")
    assert not connect(app, manager, "/chat", auth={"token": token(ttl=-60)}).is_connected("/chat")
    assert manager.refusals["unauthorized"] == 2
    assert manager.refusals["token_expired"] == 1
    assert manager.counters["auth_failures"] == 3


def test_bearer_header_is_accepted(app_manager: Any) -> None:
    app, manager = app_manager
    client = manager.socketio.test_client(app, namespace="/chat",
                                          headers={"Authorization": f"Bearer {token()}"})
    assert client.is_connected("/chat")


def test_admin_namespace_needs_admin_role(app_manager: Any) -> None:
    app, manager = app_manager
    assert not connect(app, manager, "/admin", user="bob", roles=("publisher",)).is_connected("/admin")
    assert manager.refusals["forbidden"] == 1
    assert connect(app, manager, "/admin").is_connected("/admin")


def test_agent_signal_reaches_monitoring_room(app_manager: Any) -> None:
    app, manager = app_manager
    client = connect(app, manager, "/monitoring")
    inbox = Inbox(client, "/monitoring")
    signals.agent_started.send("researcher", session_id="s-1", details={"task": "search"})
    [event] = inbox.wait("agent_started")
    assert event["source"] == "researcher"
    assert event["room"] == "monitoring"
    assert event["data"] == {"details": {"task": "search"}}
    assert isinstance(event["seq"], int)


def test_alert_is_mirrored_to_admin(app_manager: Any) -> None:
    app, manager = app_manager
    admin = Inbox(connect(app, manager, "/admin"), "/admin")
    monitor = Inbox(connect(app, manager, "/monitoring"), "/monitoring")
    manager.bus.emit("alert_created", {"message": "disk full", "severity": "high"})
    assert admin.wait("alert_created")[0]["data"]["message"] == "disk full"
    assert monitor.wait("alert_created")[0]["id"] == admin.events("alert_created")[0]["id"]


def test_join_leave_and_presence_with_two_tabs(app_manager: Any) -> None:
    app, manager = app_manager
    tab1 = connect(app, manager, "/chat", user="alice")
    tab2 = connect(app, manager, "/chat", user="alice")
    bob = connect(app, manager, "/chat", user="bob")
    bob_inbox = Inbox(bob, "/chat")
    assert bob.emit("join_room", {"room": "session:s-9"}, namespace="/chat", callback=True)["presence"] == ["bob"]
    ack = tab1.emit("join_room", {"room": "session:s-9"}, namespace="/chat", callback=True)
    assert ack["ok"] and ack["room"] == "session:s-9" and ack["presence"] == ["alice", "bob"]
    tab2.emit("join_room", {"room": "session:s-9"}, namespace="/chat", callback=True)
    joined = bob_inbox.wait("user_joined", 2)  # bob's own, then alice's first tab only
    assert [e["data"]["user_id"] for e in joined] == ["bob", "alice"]

    tab1.disconnect(namespace="/chat")
    assert manager.presence.members("/chat", "session:s-9") == ["alice", "bob"]
    ack = tab2.emit("leave_room", {"room": "session:s-9"}, namespace="/chat", callback=True)
    assert ack == {"ok": True, "room": "session:s-9", "presence": ["bob"]}
    [left] = bob_inbox.wait("user_left")
    assert left["data"] == {"user_id": "alice", "room": "session:s-9", "presence": ["bob"]}
    assert len(bob_inbox.events("user_left")) == 1


def test_join_errors(app_manager: Any) -> None:
    app, manager = app_manager
    client = connect(app, manager, "/chat")
    bad = client.emit("join_room", {"room": "bad room!"}, namespace="/chat", callback=True)
    assert bad["error"]["code"] == "invalid_room"
    wrong = client.emit("join_room", {"room": "monitoring"}, namespace="/chat", callback=True)
    assert wrong["error"]["code"] == "invalid_room"
    shape = client.emit("join_room", "session:x", namespace="/chat", callback=True)
    assert shape["error"]["code"] == "invalid_payload"
    left = client.emit("leave_room", {"room": "session:never"}, namespace="/chat", callback=True)
    assert left["error"]["code"] == "not_in_room"
    assert client.is_connected("/chat")


def test_chat_round_trip_reaches_agents_and_room(app_manager: Any) -> None:
    app, manager = app_manager
    heard: list[Any] = []

    def agent(sender: Any, event: Any = None, **kwargs: Any) -> None:
        heard.append(event)

    signals.chat_message.connect(agent)
    try:
        alice = connect(app, manager, "/chat", user="alice")
        bob = connect(app, manager, "/chat", user="bob")
        for client in (alice, bob):
            client.emit("join_room", {"room": "session:s-1"}, namespace="/chat", callback=True)
        ack = alice.emit("chat_message", {"session_id": "s-1", "message": "hello"}, namespace="/chat", callback=True)
        assert ack["ok"] and ack["room"] == "session:s-1" and ack["seq"] >= 1
        [message] = Inbox(bob, "/chat").wait("chat_message")
        assert message["data"] == {"message": "hello"} and message["user_id"] == "alice"
        deadline = time.monotonic() + 5
        while not heard and time.monotonic() < deadline:
            time.sleep(0.005)
        assert heard and heard[0].id == ack["id"]
        signals.chat_response.send("writer", session_id="s-1", message="hi alice")
        [answer] = Inbox(alice, "/chat").wait("chat_response")
        assert answer["data"]["message"] == "hi alice" and answer["room"] == "session:s-1"
    finally:
        signals.chat_message.disconnect(agent)


@pytest.mark.parametrize("payload, code", [
    ({"session_id": "s-1"}, "invalid_payload"),
    ({"session_id": "s-1", "message": 5}, "invalid_payload"),
    ({"session_id": "", "message": "x"}, "invalid_payload"),
    ({"session_id": "s 1", "message": "x"}, "invalid_room"),
    ({"session_id": "s-1", "message": "x" * 5000}, "payload_too_large"),
    ({"session_id": "s-1", "message": "x", "metadata": "no"}, "invalid_payload"),
    ("just text", "invalid_payload"),
])
def test_chat_message_validation(app_manager: Any, payload: Any, code: str) -> None:
    app, manager = app_manager
    client = connect(app, manager, "/chat")
    ack = client.emit("chat_message", payload, namespace="/chat", callback=True)
    assert ack["ok"] is False and ack["error"]["code"] == code
    assert manager.refusals[code] == 1
    assert client.is_connected("/chat")


def test_event_data_over_the_size_limit_is_refused(make_app: Any) -> None:
    app, manager = make_app(max_event_bytes=1024, chat_max_length=100000)
    client = connect(app, manager, "/chat")
    ack = client.emit("chat_message", {"session_id": "s-1", "message": "x" * 2000}, namespace="/chat", callback=True)
    assert ack["error"]["code"] == "payload_too_large"
    assert manager.bus.counters["rejected"] == 1


def test_typing_indicator_is_throttled_and_not_kept(make_app: Any) -> None:
    app, manager = make_app(typing_interval=60)
    alice = connect(app, manager, "/chat", user="alice")
    bob = connect(app, manager, "/chat", user="bob")
    bob.emit("join_room", {"room": "session:t"}, namespace="/chat", callback=True)
    first = alice.emit("typing_indicator", {"session_id": "t", "typing": True}, namespace="/chat", callback=True)
    second = alice.emit("typing_indicator", {"session_id": "t", "typing": True}, namespace="/chat", callback=True)
    stopped = alice.emit("typing_indicator", {"session_id": "t", "typing": False}, namespace="/chat", callback=True)
    assert first == {"ok": True} and second == {"ok": True, "throttled": True} and stopped == {"ok": True}
    typing = Inbox(bob, "/chat").wait("typing_indicator", 2)
    assert [e["data"]["typing"] for e in typing] == [True, False]
    assert all(e["seq"] is None for e in typing)
    assert manager.counters["typing_throttled"] == 1
    found = manager.bus.history.since("session:t", 0)
    assert all(e.type != "typing_indicator" for e in found.events)


def test_rate_limit(make_app: Any) -> None:
    app, manager = make_app(client_rate=0.1, client_burst=3)
    client = connect(app, manager, "/chat")
    acks = [client.emit("join_room", {"room": f"session:r{i}"}, namespace="/chat", callback=True) for i in range(5)]
    assert [a["ok"] for a in acks] == [True, True, True, False, False]
    assert acks[-1]["error"]["code"] == "rate_limited"
    assert manager.refusals["rate_limited"] == 2
    assert client.is_connected("/chat")


def test_unknown_event_and_handler_crash(app_manager: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    app, manager = app_manager
    client = connect(app, manager, "/chat")
    assert client.emit("nonsense", {}, namespace="/chat", callback=True)["error"]["code"] == "unknown_event"

    def explode(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(manager, "resume", explode)
    ack = client.emit("resume", {"rooms": {"session:a": 0}}, namespace="/chat", callback=True)
    assert ack["error"]["code"] == "internal_error"
    errors = Inbox(client, "/chat").wait("error")
    assert errors[0]["code"] == "internal_error"
    assert manager.counters["handler_errors"] == 1
    assert client.is_connected("/chat")


def test_resume_replays_missed_events_then_live(app_manager: Any) -> None:
    app, manager = app_manager
    bus = manager.bus
    for i in range(5):
        bus.emit("chat_response", {"message": f"m{i}"}, session_id="r")
    epoch = bus.history.epoch
    client = connect(app, manager, "/chat")
    inbox = Inbox(client, "/chat")
    ack = client.emit("resume", {"rooms": {"session:r": 2}, "epoch": epoch}, namespace="/chat", callback=True)
    assert ack["ok"] and ack["rooms"]["session:r"]["replayed"] == 3
    bus.emit("chat_response", {"message": "live"}, session_id="r")
    events = inbox.wait("chat_response", 4)
    assert [e["seq"] for e in events] == [3, 4, 5, 7]  # seq 6 is this user's user_joined
    assert [e["data"]["message"] for e in events] == ["m2", "m3", "m4", "live"]


def test_resume_with_another_epoch_asks_for_resync(app_manager: Any) -> None:
    app, manager = app_manager
    manager.bus.emit("chat_response", {"message": "x"}, session_id="e")
    client = connect(app, manager, "/chat")
    ack = client.emit("resume", {"rooms": {"session:e": 1}, "epoch": "old-epoch"}, namespace="/chat", callback=True)
    assert ack["rooms"]["session:e"]["resync_required"] is True
    [resync] = Inbox(client, "/chat").wait("resync_required")
    assert resync == {"room": "session:e", "epoch": manager.bus.history.epoch, "latest_seq": 1}


def test_resume_in_connect_auth(app_manager: Any) -> None:
    app, manager = app_manager
    for i in range(3):
        manager.bus.emit("agent_started", {"n": i}, room="team-a")
    auth = {"token": token(), "resume": {"rooms": {"team-a": 1}, "epoch": manager.bus.history.epoch}}
    client = connect(app, manager, "/monitoring", auth=auth)
    events = Inbox(client, "/monitoring").wait("agent_started", 2)
    assert [e["data"]["n"] for e in events] == [1, 2]


def test_http_api(app_manager: Any) -> None:
    app, _manager = app_manager
    http = app.test_client()
    admin = {"Authorization": f"Bearer {token()}"}
    reader = {"Authorization": f"Bearer {token('carol', ())}"}

    ok = http.post("/api/events", json={"type": "tool_executed", "data": {"tool": "search"}}, headers=admin)
    assert ok.status_code == 202 and ok.json["seq"] >= 1 and ok.json["id"].startswith("evt_")
    assert http.post("/api/events", json={"type": "tool_executed", "data": {}}).status_code == 401
    assert http.post("/api/events", json={"type": "tool_executed", "data": {}},
                     headers={"Authorization": "Bearer x"}).status_code == 401
    assert http.post("/api/events", json={"type": "tool_executed", "data": {}}, headers=reader).status_code == 403
    for body, code in [({"type": "nope", "data": {}}, "unknown_event_type"),
                       ({"type": "tool_executed", "data": []}, "invalid_data"),
                       ({"type": "tool_executed", "data": {}, "extra": 1}, "invalid_payload"),
                       ({"type": "chat_message", "data": {}}, "invalid_room"),
                       ("not an object", "invalid_payload")]:  # a JSON array is a batch
        response = http.post("/api/events", json=body, headers=admin)
        assert response.status_code == 400 and response.json["error"]["code"] == code, body
    big = http.post("/api/events", json={"type": "tool_executed", "data": {"x": "y" * 70000}}, headers=admin)
    assert big.status_code == 413 and big.json["error"]["code"] == "payload_too_large"

    history = http.get("/api/events?room=monitoring&after=0", headers=admin)
    assert history.status_code == 200 and [e["id"] for e in history.json["events"]] == [ok.json["id"]]
    assert http.get("/api/events?room=monitoring&after=-1", headers=admin).status_code == 400
    assert http.get("/api/events?room=monitoring").status_code == 401
    assert http.get("/api/health").json["status"] == "ok"

    status = http.get("/api/websocket/status").json
    assert {"status", "connections", "rooms", "namespaces", "transports", "queue_depths", "drops",
            "latency_ms"} <= set(status)
    assert status["refusals"]["unauthorized"] == 3 and status["refusals"]["forbidden"] == 1
    metrics = http.get("/metrics").data.decode()
    assert 'eventbus_events_total{type="tool_executed"} 1.0' in metrics
    assert 'eventbus_refusals_total{code="unknown_event_type"} 1.0' in metrics
    assert "eventbus_delivery_latency_seconds_bucket" in metrics


def test_admin_http_endpoints(app_manager: Any) -> None:
    app, manager = app_manager
    client = connect(app, manager, "/chat", user="dave")
    http = app.test_client()
    admin = {"Authorization": f"Bearer {token()}"}
    listed = http.get("/api/connections", headers=admin).json["connections"]
    assert [c["user_id"] for c in listed] == ["dave"]
    assert http.get("/api/connections", headers={"Authorization": f"Bearer {token('x', ('publisher',))}"}).status_code == 403
    done = http.post("/api/connections/disconnect", json={"user_id": "dave"}, headers=admin).json
    assert len(done["disconnected"]) == 1
    assert not client.is_connected("/chat")


def test_websocket_disabled_keeps_http(make_app: Any) -> None:
    app, manager = make_app(websocket_enabled=False)
    http = app.test_client()
    assert manager.socketio is None
    assert http.get("/api/websocket/status").json["status"] == "disabled"
    response = http.post("/api/events", json={"type": "agent_started", "data": {}},
                         headers={"Authorization": f"Bearer {token()}"})
    assert response.status_code == 202


def test_init_app_into_an_existing_flask_app(tmp_path: Any) -> None:
    """The brief's integration: two lines in an existing app, and its names."""
    import eventbus_auth
    import eventbus_socketio
    from eventbus import Config

    app = Flask("dashboard")

    @app.get("/api/existing")
    def existing() -> Any:
        return {"still": "here"}

    bus = EventBus(Config(secret_key="k" * 40, data_dir=str(tmp_path)),
                   plugins=[eventbus_auth, eventbus_socketio], load_entrypoints=False)
    try:
        socket_manager = eventbus_socketio.SocketManager(bus=bus)
        socket_manager.init_app(app)
        assert app.test_client().get("/api/existing").json == {"still": "here"}
        from eventbus_auth import create_token

        client = socket_manager.socketio.test_client(
            app, namespace="/monitoring", auth={"token": create_token("k" * 40, "u", ["admin"], 60)})
        assert len(socket_manager.active_connections) == 1
        assert set(socket_manager.rooms) == {"monitoring"}
        EventBroadcaster(bus).broadcast_agent_activity("planner", "started", {"step": 1})
        [event] = Inbox(client, "/monitoring").wait("agent_started")
        assert event["data"]["agent_name"] == "planner"
    finally:
        bus.close()


def test_event_hook_redacts_before_clients_see_it(make_app: Any) -> None:
    class Redactor:
        @hookimpl
        def eventbus_event(self, event: Any) -> None:
            if "api_key" in event.data:
                event.data["api_key"] = "***"

    app, manager = make_app(plugins=(Redactor(),))
    inbox = Inbox(connect(app, manager, "/monitoring"), "/monitoring")
    manager.bus.emit("tool_executed", {"tool": "http", "api_key": "secret"})
    assert inbox.wait("tool_executed")[0]["data"]["api_key"] == "***"


def test_batched_clients_get_event_lists_and_stock_clients_single_events(make_app: Any) -> None:
    app, manager = make_app(batch_window_ms=20)
    stock = Inbox(connect(app, manager, "/monitoring", user="stock"), "/monitoring")
    batched_client = connect(app, manager, "/monitoring", user="fast",
                             auth={"token": token("fast"), "batch": True})
    batched = Inbox(batched_client, "/monitoring")
    for i in range(50):
        manager.bus.emit("tool_executed", {"i": i})
    assert [e["data"]["i"] for e in stock.wait("tool_executed", 50)] == list(range(50))
    deadline = time.monotonic() + 5
    while sum(len(b) for b in batched.events("events")) < 50 + 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    unpacked = [e for batch in batched.events("events") for e in batch if e["type"] == "tool_executed"]
    assert [e["data"]["i"] for e in unpacked] == list(range(50))
    assert batched.events("tool_executed") == []  # nothing per event for the batched client
    assert len(batched.events("events")) < 50
    assert manager.transport.health()["batches"] >= 1


def test_batch_flag_is_ignored_when_batching_is_off(app_manager: Any) -> None:
    app, manager = app_manager
    client = Inbox(connect(app, manager, "/monitoring", auth={"token": token(), "batch": True}), "/monitoring")
    manager.bus.emit("tool_executed", {"i": 1})
    assert client.wait("tool_executed")[0]["data"] == {"i": 1}
