"""``eventbus_client.EventBusClient`` without a server: a fake socket plays the server."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from eventbus_client import EventBusClient, EventBusClientError


class FakeSocket:
    """The parts of ``socketio.Client`` the client uses; the test emits as the server."""

    def __init__(self) -> None:
        self.handlers: dict[str, Callable[..., Any]] = {}
        self.emitted: list[tuple[str, Any, Callable[..., Any] | None]] = []
        self.connected = False
        #: acks given as soon as the event is emitted, per event name, in order
        self.answers: dict[str, list[Any]] = {}

    def on(self, event: str, handler: Callable[..., Any], namespace: str | None = None) -> None:
        self.handlers[event] = handler

    def connect(self, url: str, namespaces: list[str], auth: Any, transports: list[str], wait_timeout: float) -> None:
        self.auth = auth()
        self.connected = True
        self.handlers["connect"]()

    def disconnect(self) -> None:
        self.drop("client disconnect")

    def drop(self, reason: str) -> None:
        self.connected = False
        self.handlers["disconnect"](reason)

    def emit(self, event: str, data: Any = None, namespace: str | None = None,
             callback: Callable[..., Any] | None = None) -> None:
        self.emitted.append((event, data, callback))
        if self.answers.get(event):
            callback(self.answers[event].pop(0))

    def server_emit(self, event: str, *args: Any) -> None:
        self.handlers["*"](event, *args)

    def last(self, event: str) -> tuple[Any, Callable[..., Any]]:
        found = [(data, callback) for name, data, callback in self.emitted if name == event]
        assert found, f"no {event} emitted: {self.emitted}"
        return found[-1]


def envelope(seq: int | None, event_type: str = "agent_started", room: str = "monitoring",
             event_id: str | None = None) -> dict[str, Any]:
    return {"id": event_id or f"evt_{room}_{seq}", "type": event_type, "data": {"n": seq},
            "timestamp": "2026-01-01T00:00:00.000Z", "room": room, "seq": seq, "user_id": None,
            "session_id": None, "source": "test"}


class FakeSession:
    """Answers ``GET /api/events`` from a list of envelopes (``latest`` when history holds
    fewer than the room had); ``failures`` answers 503 that many times first; ``gate``, when
    set, holds each answer until it is set; ``then``, a list of ``(epoch, events)`` that
    replace the history, one before each answer after the first."""

    def __init__(self, epoch: str, events: list[dict[str, Any]], latest: int | None = None):
        self.epoch, self.events, self.latest, self.calls = epoch, events, latest, []
        self.failures = 0
        self.gate: threading.Event | None = None
        self.then: list[tuple[str, list[dict[str, Any]]]] = []

    def get(self, url: str, params: dict[str, Any], headers: dict[str, str], timeout: float) -> Any:
        self.calls.append((url, dict(params), headers["Authorization"]))
        if self.gate is not None:
            self.gate.wait(5)
        if self.then and len(self.calls) > 1:
            self.epoch, self.events = self.then.pop(0)
        epoch, events = self.epoch, [e for e in self.events if e["seq"] > int(params["after"])]
        latest = self.latest or max((e["seq"] for e in self.events), default=0)
        failing = self.failures > 0
        self.failures -= 1

        class Response:
            status_code = 503 if failing else 200

            @staticmethod
            def json() -> dict[str, Any]:
                if failing:
                    return {"ok": False, "error": {"code": "redis_unavailable", "message": "history is unavailable"}}
                return {"ok": True, "room": params["room"], "epoch": epoch, "latest_seq": latest,
                        "complete": True, "events": events}

        return Response()


@pytest.fixture
def make_client() -> Iterator[Callable[..., tuple[EventBusClient, FakeSocket, list[Any]]]]:
    made: list[EventBusClient] = []

    def make(**options: Any) -> tuple[EventBusClient, FakeSocket, list[Any]]:
        socket = FakeSocket()
        options.setdefault("token", "tok")
        client = EventBusClient("http://server", socket=socket, gap_timeout=0.05, **options)
        seen: list[Any] = []
        client.on("*", lambda event_type, env: seen.append(env.get("seq", event_type)))
        made.append(client)
        return client, socket, seen

    yield make
    for client in made:
        client.close()


def connect(client: EventBusClient, socket: FakeSocket, rooms: dict[str, Any], epoch: str = "E1") -> None:
    socket.answers["resume"] = [{"ok": True, "epoch": epoch, "rooms": rooms}]
    client.connect()


def test_connect_returns_once_rooms_are_resumed_and_events_wait_for_the_ack(make_client) -> None:
    client, socket, seen = make_client(rooms=["reports"])
    connecting = threading.Thread(target=client.connect)
    connecting.start()
    client.wait_for(lambda: any(e[0] == "resume" for e in socket.emitted), timeout=5)
    data, answer = socket.last("resume")
    assert data == {"rooms": {"monitoring": None, "reports": None}, "epoch": None}
    assert socket.auth == {"token": "tok"}
    # The server put the client in "monitoring" on connect, so events 4 and 5 came before the
    # resume's join point (5); they are kept, held until the ack.
    socket.server_emit("agent_started", envelope(4))
    socket.server_emit("agent_started", envelope(5))
    assert seen == [] and connecting.is_alive()
    answer({"ok": True, "epoch": "E1", "rooms": {"monitoring": {"seq": 5, "presence": []},
                                                 "reports": {"seq": 7, "presence": []}}})
    connecting.join(5)
    assert not connecting.is_alive()
    socket.server_emit("agent_started", envelope(6))
    socket.server_emit("agent_started", envelope(8, room="reports"))
    client.wait_for(lambda: len(seen) == 4, timeout=5)
    assert seen == [4, 5, 6, 8]
    assert client.positions() == {"monitoring": {"seq": 6, "epoch": "E1"}, "reports": {"seq": 8, "epoch": "E1"}}


def test_batch_is_unpacked_in_order_and_duplicates_dropped(make_client) -> None:
    client, socket, seen = make_client()
    by_type: list[tuple[str, int]] = []
    client.on("tool_executed", lambda env: by_type.append(("tool_executed", env["seq"])))
    connect(client, socket, {"monitoring": {"seq": 0}})
    socket.server_emit("events", [envelope(1), envelope(2), envelope(2), envelope(3)])
    socket.server_emit("agent_started", envelope(3))
    socket.server_emit("events", [envelope(3, "tool_executed"), envelope(4, "tool_executed")])
    client.wait_for(lambda: len(seen) >= 4, timeout=5)
    assert seen == [1, 2, 3, 4]
    assert by_type == [("tool_executed", 4)]
    assert client.stats["duplicates"] == 3


def test_out_of_order_and_ephemeral_events(make_client) -> None:
    client, socket, seen = make_client(namespace="/chat", rooms=["session:s"])
    connect(client, socket, {"session:s": {"seq": 10}})
    socket.server_emit("chat_message", envelope(12, "chat_message", "session:s"))
    socket.server_emit("typing_indicator", envelope(None, "typing_indicator", "session:s"))
    socket.server_emit("chat_message", envelope(11, "chat_message", "session:s"))
    client.wait_for(lambda: len(seen) == 3, timeout=5)
    assert seen == [None, 11, 12]


def test_reconnect_resumes_from_last_seq_without_duplicates(make_client) -> None:
    states: list[str] = []
    client, socket, seen = make_client(on_state_change=lambda state, previous: states.append(state),
                                       reconnect_delay=0.01)
    connect(client, socket, {"monitoring": {"seq": 0}})
    for seq in (1, 2):
        socket.server_emit("agent_started", envelope(seq))
    socket.drop("transport close")
    client.wait_for(lambda: len([e for e in socket.emitted if e[0] == "resume"]) == 2, timeout=5)
    data, answer = socket.last("resume")
    assert data == {"rooms": {"monitoring": 2}, "epoch": "E1"}
    for seq in (5, 2, 3, 4, 5):  # live ahead of the replay, then the replay
        socket.server_emit("agent_started", envelope(seq))
    answer({"ok": True, "epoch": "E1", "rooms": {"monitoring": {"seq": 5, "replayed": 3,
                                                                "resync_required": False}}})
    socket.server_emit("agent_started", envelope(6))
    client.wait_for(lambda: len(seen) == 6, timeout=5)
    assert seen == [1, 2, 3, 4, 5, 6]
    client.wait_for(lambda: states[-1:] == ["connected"], timeout=5)
    assert states == ["connecting", "connected", "reconnecting", "connected"]


def test_new_epoch_fetches_history_from_the_start_and_adopts_it(make_client) -> None:
    session = FakeSession("E2", [envelope(1, event_id="n1"), envelope(2, event_id="n2")])
    resyncs: list[dict[str, Any]] = []
    client, socket, seen = make_client(session=session, on_resync=resyncs.append, reconnect_delay=0.01)
    connect(client, socket, {"monitoring": {"seq": 0}})
    for seq in (1, 2, 3):
        socket.server_emit("agent_started", envelope(seq))
    socket.drop("transport close")
    client.wait_for(lambda: len([e for e in socket.emitted if e[0] == "resume"]) == 2, timeout=5)
    _, answer = socket.last("resume")
    socket.server_emit("resync_required", {"room": "monitoring", "epoch": "E2", "latest_seq": 2})
    socket.server_emit("agent_started", envelope(3, event_id="n3"))
    answer({"ok": True, "epoch": "E2", "rooms": {"monitoring": {"seq": 2, "resync_required": True}}})
    client.wait_for(lambda: resyncs, timeout=5)
    client.wait_for(lambda: len(seen) == 7, timeout=5)
    assert seen == [1, 2, 3, "resync_required", 1, 2, 3]
    assert session.calls == [("http://server/api/events", {"room": "monitoring", "after": 0}, "Bearer tok")]
    assert client.positions() == {"monitoring": {"seq": 3, "epoch": "E2"}}
    assert resyncs == [{"room": "monitoring", "epoch": "E2", "previous_epoch": "E1", "fetched": 2,
                        "lost": 0, "unverified": 0, "gaps": [], "complete": True}]


def test_a_gap_that_does_not_close_is_filled_from_history(make_client) -> None:
    session = FakeSession("E1", [envelope(seq) for seq in (1, 2, 3)])
    client, socket, seen = make_client(session=session)
    connect(client, socket, {"monitoring": {"seq": 0}})
    socket.server_emit("agent_started", envelope(1))
    socket.server_emit("agent_started", envelope(3))
    client.wait_for(lambda: seen == [1, 2, 3], timeout=5)
    assert session.calls[0][1] == {"room": "monitoring", "after": 1}
    assert client.stats["lost"] == 0


def unsequenced(event_id: str, event_type: str = "agent_started", room: str = "monitoring") -> dict[str, Any]:
    """An event a server delivered at once without a seq (its Redis was away)."""
    return envelope(None, event_type, room, event_id)


def delivered_ids(client: EventBusClient) -> list[str]:
    ids: list[str] = []
    client.on("*", lambda event_type, env: ids.append(env["id"]) if isinstance(env, dict) and "id" in env else None)
    return ids


def test_events_delivered_without_seq_are_skipped_when_history_has_them(make_client) -> None:
    # Same epoch (Redis came back with its data): the server skips, in its fan-out, what it
    # delivered itself, so the seqs 3-5 arrive only as a gap filled from history.
    session = FakeSession("E1", [envelope(1), envelope(2), envelope(3, event_id="x1"),
                                 envelope(4, event_id="x2"), envelope(5, event_id="x3"), envelope(6)])
    resyncs: list[dict[str, Any]] = []
    client, socket, seen = make_client(session=session, on_resync=resyncs.append)
    ids = delivered_ids(client)
    connect(client, socket, {"monitoring": {"seq": 0}})
    socket.server_emit("agent_started", envelope(1))
    socket.server_emit("agent_started", envelope(2))
    for event_id in ("x1", "x2", "x3"):
        socket.server_emit("agent_started", unsequenced(event_id))
    socket.server_emit("agent_started", envelope(6))
    client.wait_for(lambda: resyncs, timeout=5)
    client.wait_for(lambda: client.positions()["monitoring"]["seq"] == 6, timeout=5)
    socket.server_emit("agent_started", envelope(7))
    client.wait_for(lambda: len(seen) == 7, timeout=5)
    assert seen == [1, 2, None, None, None, 6, 7]
    assert ids == ["evt_monitoring_1", "evt_monitoring_2", "x1", "x2", "x3", "evt_monitoring_6", "evt_monitoring_7"]
    assert resyncs == [{"room": "monitoring", "epoch": "E1", "previous_epoch": "E1", "fetched": 4,
                        "lost": 0, "unverified": 0, "gaps": [], "complete": True}]
    assert client.stats["lost"] == 0 and client.stats["duplicates"] == 4  # x1-x3, and 6 from history


def test_events_delivered_without_seq_are_skipped_when_they_come_back_live(make_client) -> None:
    # Another server's fan-out (or a replay) carries them with their seq.
    client, socket, seen = make_client()
    connect(client, socket, {"monitoring": {"seq": 0}})
    socket.server_emit("agent_started", envelope(1))
    socket.server_emit("agent_started", unsequenced("x1"))
    socket.server_emit("events", [envelope(2, event_id="x1"), envelope(3)])
    socket.server_emit("agent_started", unsequenced("x1"))  # and never twice without a seq
    client.wait_for(lambda: client.positions()["monitoring"]["seq"] == 3, timeout=5)
    client.wait_for(lambda: len(seen) == 3, timeout=5)
    assert seen == [1, None, 3]
    assert client.stats["duplicates"] == 2 and client.stats["resyncs"] == 0


def test_the_id_window_is_bounded(make_client) -> None:
    client, socket, seen = make_client(dedupe_window=3)
    connect(client, socket, {"monitoring": {"seq": 0}})
    for event_id in ("a", "b", "c", "d", "a", "d"):  # "a" was forgotten, "d" was not
        socket.server_emit("agent_started", unsequenced(event_id))
    client.wait_for(lambda: len(seen) == 5, timeout=5)
    assert len(client._delivered) == 3 and len(client._rooms["monitoring"].unmatched) <= 3
    assert client.stats["duplicates"] == 1


def test_redis_restart_new_epoch_history_holds_events_already_delivered(make_client) -> None:
    # Redis lost its data: the buffered events get seqs 1-3 of a new epoch.
    session = FakeSession("E2", [envelope(1, event_id="x1"), envelope(2, event_id="x2"),
                                 envelope(3, event_id="x3"), envelope(4, event_id="n4")])
    resyncs: list[dict[str, Any]] = []
    client, socket, seen = make_client(session=session, on_resync=resyncs.append)
    connect(client, socket, {"monitoring": {"seq": 0}})
    socket.server_emit("agent_started", envelope(1))
    socket.server_emit("agent_started", envelope(2))
    client.wait_for(lambda: len(seen) == 2, timeout=5)
    for event_id in ("x1", "x2", "x3"):
        socket.server_emit("agent_started", unsequenced(event_id))
    socket.server_emit("resync_required", {"room": "monitoring", "epoch": "E2", "latest_seq": 0})
    socket.server_emit("agent_started", envelope(5, event_id="n5"))
    client.wait_for(lambda: client.positions()["monitoring"] == {"seq": 5, "epoch": "E2"}, timeout=5)
    client.wait_for(lambda: len(seen) == 8, timeout=5)
    assert seen == [1, 2, None, None, None, "resync_required", 4, 5]
    assert resyncs == [{"room": "monitoring", "epoch": "E2", "previous_epoch": "E1", "fetched": 4,
                        "lost": 0, "unverified": 0, "gaps": [], "complete": True}]


def test_skipped_seqs_are_lost_only_when_nobody_delivered_them(make_client) -> None:
    # History kept only 8-10 of a room at 10. Two events of a kept type were delivered
    # without a seq and never came back: two of the six skipped seqs may be them.
    session = FakeSession("E1", [envelope(8), envelope(9), envelope(10)])
    resyncs: list[dict[str, Any]] = []
    client, socket, seen = make_client(session=session, on_resync=resyncs.append)
    connect(client, socket, {"monitoring": {"seq": 0}})
    socket.server_emit("agent_started", envelope(1))
    socket.server_emit("typing_indicator", unsequenced("t1", "typing_indicator"))  # ephemeral: never has a seq
    socket.server_emit("agent_started", unsequenced("x1"))
    socket.server_emit("agent_started", unsequenced("x2"))
    socket.server_emit("agent_started", envelope(10))
    client.wait_for(lambda: resyncs, timeout=5)
    assert resyncs == [{"room": "monitoring", "epoch": "E1", "previous_epoch": "E1", "fetched": 3,
                        "lost": 4, "unverified": 2, "gaps": [[2, 7]], "complete": False}]
    client.wait_for(lambda: len(seen) == 7, timeout=5)
    assert seen == [1, None, None, None, 8, 9, 10]
    assert client.stats["lost"] == 4 and client.stats["unverified"] == 2


def test_history_that_cannot_be_read_reports_no_loss(make_client) -> None:
    session = FakeSession("E1", [envelope(3)])
    session.failures = 99
    resyncs: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    client, socket, seen = make_client(session=session, on_resync=resyncs.append, on_error=errors.append,
                                       fetch_retry_delay=0.01)
    connect(client, socket, {"monitoring": {"seq": 0}})
    socket.server_emit("agent_started", envelope(1))
    socket.server_emit("agent_started", envelope(3))
    client.wait_for(lambda: resyncs, timeout=5)
    assert len(session.calls) == 5
    assert resyncs == [{"room": "monitoring", "epoch": "E1", "previous_epoch": "E1", "fetched": 0,
                        "lost": 0, "unverified": 1, "gaps": [[2, 2]], "complete": False}]
    client.wait_for(lambda: seen == [1, 3], timeout=5)
    assert {getattr(e, "code", None) for e in errors} == {"redis_unavailable"}


def test_an_epoch_change_during_a_gap_fetch_reads_the_new_epoch_from_its_start(make_client) -> None:
    # The gap fetch (after 1) finds another epoch: the client reads that one from 0.
    session = FakeSession("E2", [envelope(1, event_id="n1"), envelope(2, event_id="n2")])
    resyncs: list[dict[str, Any]] = []
    client, socket, seen = make_client(session=session, on_resync=resyncs.append)
    connect(client, socket, {"monitoring": {"seq": 0}})
    socket.server_emit("agent_started", envelope(1))
    socket.server_emit("agent_started", envelope(3))
    client.wait_for(lambda: resyncs, timeout=5)
    assert [call[1]["after"] for call in session.calls] == [1, 0]
    assert resyncs[0]["epoch"] == "E2" and resyncs[0]["lost"] == 0
    client.wait_for(lambda: len(seen) == 4, timeout=5)
    # 3 of the old epoch was real and not yet delivered: it comes first; its gap is unverified.
    assert seen == [1, 3, 1, 2]
    assert client.positions() == {"monitoring": {"seq": 2, "epoch": "E2"}}


def test_resync_required_during_a_resync_starts_another(make_client) -> None:
    session = FakeSession("E1", [envelope(1), envelope(2), envelope(3)])
    session.gate = threading.Event()
    resyncs: list[dict[str, Any]] = []
    client, socket, seen = make_client(session=session, on_resync=resyncs.append)
    connect(client, socket, {"monitoring": {"seq": 0}})
    socket.server_emit("agent_started", envelope(1))
    socket.server_emit("agent_started", envelope(3))
    client.wait_for(lambda: session.calls, timeout=5)  # the gap fetch is under way
    socket.server_emit("resync_required", {"room": "monitoring", "epoch": "E2", "latest_seq": 0})
    session.then = [("E2", [envelope(1, event_id="n1")])]
    session.gate.set()
    client.wait_for(lambda: len(resyncs) == 2, timeout=5)
    assert [r["epoch"] for r in resyncs] == ["E1", "E2"]
    client.wait_for(lambda: len(seen) == 5, timeout=5)
    assert seen == [1, "resync_required", 2, 3, 1]
    assert client.positions() == {"monitoring": {"seq": 1, "epoch": "E2"}}


def test_refused_ack_raises_with_its_code(make_client) -> None:
    client, socket, _ = make_client()
    connect(client, socket, {"monitoring": {"seq": 0}})
    socket.emit = lambda event, data=None, namespace=None, callback=None: callback(  # type: ignore[method-assign]
        {"ok": False, "error": {"code": "invalid_room", "message": "no such room"}})
    with pytest.raises(EventBusClientError) as info:
        client.send("join_room", {"room": "admin"})
    assert info.value.code == "invalid_room" and info.value.message == "no such room"


def test_missing_socketio_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "socketio":
            raise ImportError("No module named 'socketio'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    client = EventBusClient("http://server", token="tok")
    try:
        with pytest.raises(ImportError, match=r"eventbus\[socketio\]"):
            client.connect()
    finally:
        client.close()
