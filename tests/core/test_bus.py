"""The bus: ordering, per-room sequence numbers, isolation of transports, drops, threads, close."""

from __future__ import annotations

import threading
import time

import pytest

from eventbus import Config, EventBus, EventBusError
from eventbus.bus import RecentIds
from eventbus.testing import RecordingTransport, wait_until


class GatedTransport(RecordingTransport):
    """Blocks in ``send`` until the gate opens, like a transport stuck on the network."""

    batch_size = 1  # one event in flight; the rest stay visible in the queue

    def __init__(self, name: str = "gated"):
        super().__init__(name)
        self.gate = threading.Event()

    def send(self, event):
        self.gate.wait(10)
        super().send(event)


def row(bus, name):
    return next(r for r in bus.status()["transports"] if r["name"] == name)


def test_events_arrive_in_emit_order(bus, recorder):
    for n in range(200):
        bus.emit("tool_executed", {"n": n})
    assert [e.data["n"] for e in recorder.wait_for(200)] == list(range(200))


def test_seq_is_per_room_and_strictly_increasing(bus, recorder):
    for n in range(5):
        bus.emit("chat_message", {"message": str(n)}, session_id="a")
        bus.emit("chat_message", {"message": str(n)}, session_id="b")
        bus.emit("agent_started", {})
    bus.emit("typing_indicator", {"typing": True}, session_id="a")  # ephemeral: no seq
    events = recorder.wait_for(16)
    by_room: dict[str, list[int]] = {}
    for event in events:
        if event.seq is not None:
            by_room.setdefault(event.room, []).append(event.seq)
    assert by_room == {"session:a": [1, 2, 3, 4, 5], "session:b": [1, 2, 3, 4, 5], "monitoring": [1, 2, 3, 4, 5]}
    assert events[-1].type == "typing_indicator" and events[-1].seq is None


def test_a_failing_transport_is_isolated_and_counted(bus_factory):
    good = RecordingTransport("good")
    bad = RecordingTransport("bad", fail=lambda event: event.data["n"] % 2 == 0)
    bus = bus_factory(transports=[bad, good])
    for n in range(10):
        bus.emit("tool_executed", {"n": n})
    assert len(good.wait_for(10)) == 10
    wait_until(lambda: row(bus, "bad")["failed"] == 5)
    status = row(bus, "bad")
    assert (status["delivered"], status["failed"]) == (5, 5)
    assert status["last_error"].startswith("RuntimeError: bad refuses")
    assert [e.data["n"] for e in bad.events] == [1, 3, 5, 7, 9]


def test_a_slow_transport_does_not_slow_the_agent_or_another_transport(bus_factory):
    fast = RecordingTransport("fast")
    slow = GatedTransport("slow")
    bus = bus_factory(transports=[slow, fast])
    started = time.monotonic()
    for n in range(100):
        bus.emit("tool_executed", {"n": n})
    emit_time = time.monotonic() - started
    assert len(fast.wait_for(100, timeout=2)) == 100
    assert slow.events == []  # still stuck on the first event
    assert emit_time < 1.0
    assert row(bus, "slow")["queue_depth"] >= 99
    slow.gate.set()
    slow.wait_for(100)


@pytest.mark.parametrize("policy,kept", [("drop_oldest", list(range(16, 21))), ("drop_newest", list(range(1, 6)))])
def test_a_full_queue_drops_by_policy_and_counts(bus_factory, policy, kept):
    stuck = GatedTransport("stuck")
    bus = bus_factory(config=Config(queue_size=5, overflow=policy), transports=[stuck])
    bus.emit("tool_executed", {"n": 0})
    wait_until(lambda: row(bus, "stuck")["queue_depth"] == 0)  # event 0 is in send()
    for n in range(1, 21):
        bus.emit("tool_executed", {"n": n})
    status = row(bus, "stuck")
    assert (status["dropped"], status["queue_depth"], status["submitted"]) == (15, 5, 21)
    assert status["overflow"] == policy
    stuck.gate.set()
    assert [e.data["n"] for e in stuck.wait_for(6)] == [0, *kept]
    wait_until(lambda: row(bus, "stuck")["delivered"] == 6)
    assert row(bus, "stuck")["dropped"] == 15


def test_a_transport_may_set_its_own_queue(bus_factory):
    class Tiny(GatedTransport):
        queue_size = 2
        overflow = "drop_newest"

    tiny, other = Tiny("tiny"), RecordingTransport("other")
    bus = bus_factory(transports=[tiny, other])
    bus.emit("tool_executed", {"n": 0})
    wait_until(lambda: row(bus, "tiny")["queue_depth"] == 0)  # event 0 is in send()
    for n in range(1, 5):
        bus.emit("tool_executed", {"n": n})
    assert (row(bus, "tiny")["dropped"], row(bus, "other")["dropped"]) == (2, 0)
    tiny.gate.set()


def test_a_bus_that_was_never_started_starts_on_its_first_emit_and_close_delivers(bus_factory):
    """A bus used on its own (a script, a worker) needs no start(): the first emit starts
    it, and close() delivers everything emitted."""
    slowish = RecordingTransport("slowish", delay=0.001)
    bus = bus_factory(transports=[slowish], start=False)
    assert not bus.started
    bus.emit("tool_executed", {"n": 0})
    assert bus.started
    for n in range(1, 50):
        bus.emit("tool_executed", {"n": n})
    assert bus.close(timeout=10) is True
    assert [e.data["n"] for e in slowish.events] == list(range(50))
    assert row(bus, "slowish")["dropped"] == 0


def test_a_bus_built_in_code_delivers_in_process_and_from_env_forwards(isolated_env):
    """Config() (tests, embedding) keeps everything in this process; from_env() forwards
    unless EVENTBUS_FORWARD=false, and the role is decided when the bus starts."""
    assert Config().forward is False
    assert Config.from_env(isolated_env).forward is True
    assert Config.from_env({**isolated_env, "EVENTBUS_FORWARD": "false"}).forward is False
    local = EventBus(Config(data_dir=isolated_env["EVENTBUS_DATA_DIR"]), load_entrypoints=False,
                     connect_signals=False)
    local.start()
    assert (local.role, local.status()["forwarder"]) == ("local", None)
    local.close()
    served = EventBus.from_env(isolated_env, load_entrypoints=False, connect_signals=False)
    served.serve()
    served.start()
    assert (served.role, served.forwarder) == ("local", None)  # a server never forwards
    served.close()


def test_emit_once_publishes_an_id_once_and_answers_the_original_seq(bus, recorder):
    first = bus.emit_once("evt_a", "tool_executed", {"n": 1})
    again = bus.emit_once("evt_a", "tool_executed", {"n": 1})
    other = bus.emit_once("evt_b", "tool_executed", {"n": 2})
    assert (first.duplicate, first.seq, first.id) == (False, 1, "evt_a")
    assert (again.duplicate, again.seq, again.room) == (True, 1, "monitoring")
    assert (other.duplicate, other.seq) == (False, 2)
    events = recorder.wait_for(2)
    assert [e.id for e in events] == ["evt_a", "evt_b"]
    time.sleep(0.05)
    assert len(recorder.events) == 2 and bus.counters["emitted"] == 2


def test_the_dedupe_window_is_bounded_by_count_and_age(monkeypatch):
    recent = RecentIds(size=3, max_age=60)
    for n in range(5):
        recent.add(f"e{n}", "monitoring", n)
    assert len(recent) == 3 and recent.get("e0") is None and recent.get("e4") == ("monitoring", 4)
    later = time.monotonic() + 61
    monkeypatch.setattr("eventbus.bus.time.monotonic", lambda: later)
    assert recent.get("e4") is None and len(recent) == 0


def test_emitting_from_many_threads(bus, recorder):
    barrier = threading.Barrier(8)

    def agent(index: int) -> None:
        barrier.wait()
        for n in range(500):
            bus.emit("tool_executed", {"agent": index, "n": n}, room="load")

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    events = recorder.wait_for(4000, timeout=30)
    assert [e.seq for e in events] == list(range(1, 4001))
    for index in range(8):  # each agent's own events keep their order
        assert [e.data["n"] for e in events if e.data["agent"] == index] == list(range(500))
    assert bus.history.latest_seq("load") == 4000


def test_close_drains_what_is_queued(bus_factory):
    slowish = RecordingTransport("slowish", delay=0.002)
    bus = bus_factory(transports=[slowish])
    for n in range(100):
        bus.emit("tool_executed", {"n": n})
    assert bus.close(timeout=10) is True
    assert len(slowish.events) == 100
    with pytest.raises(EventBusError) as info:
        bus.emit("tool_executed", {})
    assert info.value.code == "closed"


def test_close_gives_up_after_the_timeout_and_counts_what_it_abandons(bus_factory):
    stuck = GatedTransport("stuck")
    bus = bus_factory(transports=[stuck])
    for n in range(10):
        bus.emit("tool_executed", {"n": n})
    wait_until(lambda: row(bus, "stuck")["queue_depth"] == 9)  # one is in send()
    try:
        assert bus.close(timeout=0.2) is False
        assert row(bus, "stuck")["dropped"] == 9
    finally:
        stuck.gate.set()


def test_transports_are_started_with_the_bus_and_names_are_unique(bus_factory):
    started = []

    class Starting(RecordingTransport):
        def start(self, bus):
            started.append(bus)

    bus = bus_factory(transports=[Starting("a")], start=False)
    assert started == []
    bus.start()
    assert started == [bus]
    late = Starting("late")
    bus.add_transport(late)
    assert started == [bus, bus]
    with pytest.raises(EventBusError, match="already registered"):
        bus.add_transport(RecordingTransport("late"))
    assert bus.transport("late") is late


def test_accepts_filters_without_counting_drops(bus_factory):
    class AlertsOnly(RecordingTransport):
        def accepts(self, event):
            return event.type == "alert_created"

    alerts = AlertsOnly("alerts")
    bus = bus_factory(transports=[alerts])
    bus.emit("tool_executed", {})
    bus.emit("alert_created", {"message": "m"})
    assert alerts.wait_for(1)[0].type == "alert_created"
    assert (row(bus, "alerts")["submitted"], row(bus, "alerts")["dropped"]) == (1, 0)


def test_status_shows_counters_latency_and_health(bus, recorder):
    bus.emit("tool_executed", {})
    recorder.wait_for(1)
    wait_until(lambda: row(bus, "recorder")["delivered"] == 1)
    status = bus.status()
    assert status["counters"] == {"emitted": 1, "rejected": 0, "dropped_by_hook": 0}
    assert row(bus, "recorder")["health"] == {"status": "ok"}
    assert row(bus, "recorder")["latency_ms"]["p50"] is not None
    assert status["history"]["rooms"] == {"monitoring": 1}


def test_a_health_method_that_raises_shows_as_down(bus_factory):
    class Broken(RecordingTransport):
        def health(self):
            raise OSError("socket gone")

    bus = bus_factory(transports=[Broken("broken")])
    assert row(bus, "broken")["health"] == {"status": "down", "error": "OSError: socket gone"}
