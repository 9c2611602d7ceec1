"""The replay history (since / complete / epoch / age limit) and the EventBroadcaster facade."""

from __future__ import annotations

import time

from eventbus import Config, Event, EventBroadcaster
from eventbus.history import MemoryHistory


def event(room: str = "r", age: float = 0.0) -> Event:
    return Event(type="tool_executed", data={}, room=room, created=time.time() - age)


def filled(size: int = 3, count: int = 5) -> MemoryHistory:
    history = MemoryHistory(size=size)
    for _ in range(count):
        history.append(event())
    return history


def seqs(found) -> list[int]:
    return [e.seq for e in found.events]


def test_since_returns_what_is_after_and_says_whether_it_is_complete():
    history = filled(size=3, count=5)  # keeps 3, 4, 5
    assert (seqs(history.since("r", 0)), history.since("r", 0).complete) == ([3, 4, 5], False)
    assert (seqs(history.since("r", 1)), history.since("r", 1).complete) == ([3, 4, 5], False)
    assert (seqs(history.since("r", 2)), history.since("r", 2).complete) == ([3, 4, 5], True)
    assert (seqs(history.since("r", 4)), history.since("r", 4).complete) == ([5], True)
    assert (seqs(history.since("r", 5)), history.since("r", 5).complete) == ([], True)
    assert seqs(history.since("r", 2, limit=2)) == [3, 4]
    assert history.since("r", 0).latest_seq == 5


def test_a_client_ahead_of_the_room_or_negative_must_resync():
    history = filled()
    assert history.since("r", 6).complete is False
    assert history.since("r", -1).complete is False


def test_unknown_room_and_ephemeral_events():
    history = MemoryHistory()
    found = history.since("nowhere", 0)
    assert (found.events, found.complete, found.latest_seq) == ([], True, 0)
    skipped = event()
    history.append(skipped, keep=False)
    assert skipped.seq is None and history.latest_seq("r") == 0 and history.rooms() == {}


def test_epoch_is_new_for_every_history():
    first, second = MemoryHistory(), MemoryHistory()
    assert first.epoch != second.epoch
    assert first.since("r", 0).epoch == first.epoch


def test_old_events_expire():
    history = MemoryHistory(size=100, max_age=60)
    history.append(event(age=600))
    history.append(event(age=500))
    history.append(event(age=1))
    found = history.since("r", 0)
    assert (seqs(found), found.complete) == ([3], False)
    assert history.since("r", 2).complete is True


def test_the_bus_keeps_history_per_room(bus):
    for n in range(3):
        bus.emit("chat_message", {"message": str(n)}, session_id="s-1")
    bus.emit("typing_indicator", {"typing": True}, session_id="s-1")
    found = bus.history.since("session:s-1", 1)
    assert [e.data["message"] for e in found.events] == ["1", "2"]
    assert bus.history.rooms() == {"session:s-1": 3}


def test_history_size_follows_the_config(bus_factory):
    bus = bus_factory(config=Config(history_size=2))
    for _ in range(4):
        bus.emit("health_update", {})
    assert seqs(bus.history.since("monitoring", 0)) == [3, 4]


def test_broadcaster_facade(bus, recorder):
    broadcaster = EventBroadcaster(bus)
    chat = broadcaster.broadcast_chat_message("hello", user_id="u-1", session_id="s-1")
    started = broadcaster.broadcast_agent_activity("researcher", "started", {"task": "t"})
    finished = broadcaster.broadcast_agent_activity("researcher", "completed")
    assert recorder.wait_for(3) == [chat, started, finished]
    assert (chat.type, chat.room, chat.user_id, chat.data["message"]) == ("chat_message", "session:s-1", "u-1", "hello")
    assert (started.type, started.room, started.source) == ("agent_started", "monitoring", "researcher")
    assert started.data == {"agent_name": "researcher", "activity": "started", "details": {"task": "t"}}
    assert (finished.type, finished.data["details"]) == ("agent_completed", {})
