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


# -- bounds across rooms: age, room budget, event budget, seq continuity -------------------


def fill(history: MemoryHistory, room: str, count: int, age: float = 0.0) -> list[int]:
    appended = [event(room, age) for _ in range(count)]
    for e in appended:
        history.append(e)
    return [e.seq for e in appended]


def test_room_budget_forgets_the_least_recently_appended_room():
    history = MemoryHistory(max_rooms=3)
    for room in ("a", "b", "c"):
        fill(history, room, 2)
    fill(history, "a", 1)  # a is now the most recent
    fill(history, "d", 1)
    assert set(history.rooms()) == {"a", "c", "d"}
    assert history.stats()["evicted_rooms"] == {"age": 0, "budget": 1}
    assert history.stats()["rooms"] == 3 and history.stats()["events"] == 3 + 2 + 1


def test_event_budget_forgets_whole_idle_rooms_then_trims_a_single_room():
    history = MemoryHistory(size=10, max_events=5)
    fill(history, "a", 3)
    fill(history, "b", 3)  # 6 > 5: a goes entirely
    assert history.rooms() == {"b": 3}
    assert fill(history, "b", 4) == [4, 5, 6, 7]  # alone over the budget: its oldest go
    assert history.rooms() == {"b": 5}
    assert (seqs(history.since("b", 2)), history.since("b", 2).complete) == ([3, 4, 5, 6, 7], True)
    assert history.since("b", 1).complete is False


def test_a_room_whose_newest_event_is_too_old_goes_entirely():
    history = MemoryHistory(max_age=60)
    fill(history, "old", 3, age=120)
    fill(history, "new", 1)
    assert history.rooms() == {"new": 1}
    assert history.stats()["evicted_rooms"]["age"] == 1
    # Found stale when read, too: nothing is kept for it, the client must resync.
    history2 = MemoryHistory(max_age=60)
    fill(history2, "r", 2, age=120)
    found = history2.since("r", 1)
    assert (found.events, found.complete) == ([], False)
    assert history2.rooms() == {}


def test_seq_is_never_reused_after_a_room_is_forgotten():
    history = MemoryHistory(max_rooms=1)
    assert fill(history, "a", 3) == [1, 2, 3]
    assert fill(history, "b", 5) == [1, 2, 3, 4, 5]  # a is forgotten at 3
    assert fill(history, "a", 2) == [4, 5]  # above every seq a forgotten room had reached
    assert history.start_seq("a") == 3 and history.latest_seq("a") == 5
    # A room still known keeps counting from where it was.
    history = MemoryHistory(max_rooms=2)
    fill(history, "keep", 2)
    fill(history, "x", 1)
    fill(history, "keep", 1)
    fill(history, "y", 1)  # x goes, keep stays
    assert fill(history, "keep", 1) == [4]


def test_resuming_a_forgotten_room_reports_incomplete():
    history = MemoryHistory(max_rooms=1)
    fill(history, "a", 3)
    fill(history, "b", 5)  # a forgotten at seq 3: the floor is 3
    # A client that had all of a (up to 3) missed nothing; one at 2 missed seq 3.
    assert (history.since("a", 3).complete, history.since("a", 3).latest_seq) == (True, 3)
    found = history.since("a", 2)
    assert (found.events, found.complete) == ([], False)
    fill(history, "c", 1)  # b forgotten at 5: the floor is 5
    fill(history, "a", 2)  # a: 6, 7
    for after in (0, 2, 3, 4):
        found = history.since("a", after)
        # 4 and 5 may have been a's as far as anyone can tell now: resync, never a gap.
        assert (seqs(found), found.complete) == ([6, 7], False), after
    assert (seqs(history.since("a", 5)), history.since("a", 5).complete) == ([6, 7], True)
    # Rooms with nothing retained stand at the floor.
    assert history.latest_seq("never") == history.start_seq("never") == 5
    assert history.since("never", 5).complete is True and history.since("never", 0).complete is False


def test_limits_come_from_the_config():
    history = MemoryHistory.from_config(Config(history_size=7, history_max_age=9, history_max_rooms=11,
                                               history_max_events=13))
    assert (history.size, history.max_age, history.max_rooms, history.max_events) == (7, 9, 11, 13)


def test_the_bus_applies_the_history_budget(bus_factory):
    bus = bus_factory(config=Config(history_max_rooms=2))
    for room in ("a", "b", "c"):
        bus.emit("tool_executed", {}, room=room)
    assert set(bus.history.rooms()) == {"b", "c"}
