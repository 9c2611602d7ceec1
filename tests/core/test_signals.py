"""Agents' blinker signals into the bus, and events from clients back out to agents."""

from __future__ import annotations

import gc
import threading

from eventbus import Event, signals
from eventbus.testing import RecordingTransport, wait_until


def signals_row(bus):
    return next(row for row in bus.status()["transports"] if row["name"] == "signals")


def test_agent_signal_becomes_an_event(bus, recorder):
    signals.chat_response.send("researcher", session_id="s-1", user_id="u-1", message="hi")
    signals.agent_started.send("planner", room="session:s-9", details={"step": 1})

    response, started = recorder.wait_for(2)
    assert response.type == "chat_response"
    assert response.data == {"message": "hi"}  # envelope kwargs are not data
    assert (response.room, response.session_id, response.user_id) == ("session:s-1", "s-1", "u-1")
    assert (response.source, response.origin, response.seq) == ("researcher", "signal", 1)
    assert (started.room, started.data, started.source) == ("session:s-9", {"details": {"step": 1}}, "planner")


def test_sender_objects_are_named(bus, recorder):
    class ResearchAgent:
        name = "research-agent"

    class Planner:
        pass

    signals.tool_executed.send(ResearchAgent(), tool="search")
    signals.tool_executed.send(Planner, tool="search")
    signals.tool_executed.send(Planner(), tool="search")
    signals.tool_executed.send(None, tool="search")
    assert [e.source for e in recorder.wait_for(4)] == ["research-agent", "Planner", "Planner", None]


def test_the_bus_stays_connected_without_references_to_its_receivers(recorder, bus_factory):
    def build() -> None:
        bus_factory(transports=[recorder])  # receivers are closures made inside the bus

    build()
    gc.collect()
    signals.health_update.send("monitor", status="ok")
    assert recorder.wait_for(1)[0].type == "health_update"


def test_a_bad_signal_is_refused_without_raising_into_the_agent(bus, recorder):
    signals.chat_message.send("agent", message="no session")  # chat needs a room
    signals.agent_started.send("agent", blob=object())
    signals.agent_started.send("agent", ok=True)
    assert recorder.wait_for(1)[0].data == {"ok": True}
    assert bus.counters["rejected"] == 2


def test_a_failing_agent_receiver_does_not_stop_the_bus(recorder, bus_factory):
    calls = []

    def broken(sender, **kwargs):
        raise RuntimeError("agent bug")

    def healthy(sender, **kwargs):
        calls.append(kwargs)

    # Connected before the bus, so plain blinker would call it first and stop there.
    signals.alert_created.connect(broken)
    try:
        bus = bus_factory(transports=[recorder])
        signals.alert_created.connect(healthy)
        results = signals.alert_created.send("watchdog", message="disk at 91%")
        assert recorder.wait_for(1)[0].data == {"message": "disk at 91%"}
        assert calls == [{"message": "disk at 91%"}]
        assert any(isinstance(result, RuntimeError) for _, result in results)
        assert bus.status()["signal_receiver_failures"]["alert_created"] >= 1
    finally:
        signals.alert_created.disconnect(broken)
        signals.alert_created.disconnect(healthy)


def test_client_events_are_sent_to_agent_receivers_and_a_failing_one_is_isolated(bus, recorder):
    heard: list[Event] = []
    done = threading.Event()

    def broken(sender, event):
        raise RuntimeError("agent bug")

    def answer(sender, event):
        heard.append(event)
        done.set()

    signals.chat_message.connect(broken)
    signals.chat_message.connect(answer)
    try:
        sent = bus.emit("chat_message", {"message": "hello"}, session_id="s-1", user_id="u-1",
                        source="browser", origin="client")
        assert done.wait(5)
        assert heard == [sent]
        wait_until(lambda: signals_row(bus)["failed"] == 1)
        assert "1 signal receiver(s) failed" in signals_row(bus)["last_error"]
        recorder.wait_for(1)
        assert bus.counters["emitted"] == 1  # the re-broadcast is not emitted again
    finally:
        signals.chat_message.disconnect(broken)
        signals.chat_message.disconnect(answer)


def test_signal_origin_events_are_not_echoed_back(bus, recorder):
    heard = []

    def listener(sender, **kwargs):
        heard.append(kwargs)

    signals.chat_response.connect(listener)
    try:
        signals.chat_response.send("agent", session_id="s-1", message="hi")
        recorder.wait_for(1)
        bus.emit("chat_response", {"message": "from http"}, session_id="s-1", origin="http")
        recorder.wait_for(2)
        wait_until(lambda: len(heard) == 2)
        assert heard[0] == {"session_id": "s-1", "message": "hi"}
        assert heard[1]["event"].data == {"message": "from http"}
        signals_worker = next(w for w in bus.workers if w.name == "signals")
        assert signals_worker.stats.submitted == 1  # only the HTTP event went out as a signal
    finally:
        signals.chat_response.disconnect(listener)


def test_a_closed_bus_stops_listening(recorder, bus_factory):
    bus = bus_factory(transports=[recorder])
    bus.close()
    other = RecordingTransport("other")
    bus_factory(transports=[other])
    signals.agent_completed.send("agent", status="ok")
    other.wait_for(1)
    assert recorder.events == []
