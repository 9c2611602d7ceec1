"""Event types, the registry, the wire envelope and its typed errors."""

from __future__ import annotations

import json

import pytest

from eventbus import Config, Event, EventRegistry, EventType, EventTypeSpec, hookimpl
from eventbus.events import (
    BUILTIN_TYPES,
    DEFAULT_MAX_JSON_DEPTH,
    EventTooLargeError,
    InvalidDataError,
    InvalidEventError,
    InvalidJSONError,
    InvalidRoomError,
    TooDeepError,
    UnknownEventTypeError,
    check_data,
    check_json,
    json_depth_exceeds,
    parse_json,
)

BRIEF_TYPES = {
    "chat_message", "chat_response", "typing_indicator",
    "agent_started", "agent_completed", "tool_executed", "agent_handoff",
    "health_update", "performance_update", "alert_created",
    "user_joined", "user_left",
}


def test_builtin_types_are_the_briefs():
    assert {t.value for t in EventType} == BRIEF_TYPES
    assert set(EventRegistry().names()) == BRIEF_TYPES
    assert str(EventType.AGENT_STARTED) == "agent_started"


@pytest.mark.parametrize("event_type,kwargs,deliveries", [
    ("chat_message", {"session_id": "s-1"}, [("/chat", "session:s-1")]),
    ("agent_started", {}, [("/monitoring", "monitoring")]),
    ("health_update", {}, [("/monitoring", "monitoring")]),
    ("alert_created", {}, [("/monitoring", "monitoring"), ("/admin", "admin")]),
    ("user_joined", {"room": "session:s-2"}, [("/chat", "session:s-2")]),
    ("agent_started", {"room": "session:s-3"}, [("/chat", "session:s-3")]),
    ("alert_created", {"room": "admin"}, [("/admin", "admin")]),
])
def test_routing(bus, event_type, kwargs, deliveries):
    event = bus.emit(event_type, {"message": "m"}, **kwargs)
    assert bus.registry.deliveries(event) == deliveries


def test_registry_extension_through_the_hook(bus_factory, recorder):
    class Ops:
        @hookimpl
        def eventbus_register_event_types(self, register):
            register("deploy_finished", category="ops", description="A deploy finished.")
            register(EventTypeSpec("ops.page", "ops", "/admin", "admin", history=False))

    bus = bus_factory([Ops()], transports=[recorder])
    assert bus.registry.get("deploy_finished").room == "monitoring"
    deployed = bus.emit("deploy_finished", {"version": "1.2"})
    paged = bus.emit("ops.page", {})
    assert (deployed.room, deployed.seq) == ("monitoring", 1)
    assert (paged.room, paged.seq) == ("admin", None)  # not kept in history
    assert recorder.wait_for(2)[0].type == "deploy_finished"


def test_registry_refuses_bad_names_and_conflicting_redefinitions():
    registry = EventRegistry()
    with pytest.raises(InvalidEventError, match="invalid event type name"):
        registry.register("Deploy-Finished")
    registry.register(BUILTIN_TYPES[0])  # the same definition again is fine
    with pytest.raises(InvalidEventError, match="already registered"):
        registry.register("chat_message", namespace="/monitoring")


def test_envelope_json_round_trip():
    event = Event(type="chat_message", data={"message": "héllo", "n": [1, 2]}, room="session:s-1",
                  seq=7, user_id="u-1", session_id="s-1", source="web")
    wire = json.loads(event.to_json())
    assert list(wire) == ["id", "type", "data", "timestamp", "room", "seq", "user_id", "session_id", "source"]
    assert wire["id"].startswith("evt_") and wire["timestamp"].endswith("Z")
    back = Event.from_json(event.to_json(), EventRegistry())
    assert back == event
    assert abs(back.created - event.created) < 0.001


@pytest.mark.parametrize("raw,error,code", [
    ({"type": "no_such_type", "room": "monitoring"}, UnknownEventTypeError, "unknown_event_type"),
    ({"type": "agent_started", "room": "monitoring", "data": [1]}, InvalidDataError, "invalid_data"),
    ({"type": "agent_started", "room": "bad room!"}, InvalidRoomError, "invalid_room"),
    ({"type": "agent_started", "room": "monitoring", "seq": 0}, InvalidEventError, "invalid_event"),
    ({"type": "agent_started", "room": "monitoring", "extra": 1}, InvalidEventError, "invalid_event"),
    ({"type": 3, "room": "monitoring"}, InvalidEventError, "invalid_event"),
    ({"type": "agent_started", "room": "monitoring", "timestamp": "yesterday"}, InvalidEventError, "invalid_event"),
])
def test_envelope_errors(raw, error, code):
    with pytest.raises(error) as info:
        Event.from_dict(raw, EventRegistry())
    assert info.value.code == code
    assert info.value.to_dict() == {"code": code, "message": str(info.value)}


def test_not_json():
    with pytest.raises(InvalidEventError, match="not valid JSON"):
        Event.from_json("{")


def test_emit_errors_are_typed_and_counted(bus, recorder):
    cases = [
        (lambda: bus.emit("no_such_type", {}), UnknownEventTypeError, "unknown_event_type"),
        (lambda: bus.emit("agent_started", ["not", "an", "object"]), InvalidDataError, "invalid_data"),
        (lambda: bus.emit("agent_started", {"x": object()}), InvalidDataError, "invalid_data"),
        (lambda: bus.emit("agent_started", {"x": float("nan")}), InvalidDataError, "invalid_data"),
        (lambda: bus.emit("agent_started", {"x": "y" * 70_000}), EventTooLargeError, "payload_too_large"),
        (lambda: bus.emit("agent_started", {}, room="no spaces"), InvalidRoomError, "invalid_room"),
        (lambda: bus.emit("agent_started", {}, room="r" * 129), InvalidRoomError, "invalid_room"),
        (lambda: bus.emit("chat_message", {"message": "m"}), InvalidRoomError, "invalid_room"),
    ]
    for emit, error, code in cases:
        with pytest.raises(error) as info:
            emit()
        assert info.value.code == code
    assert bus.counters["rejected"] == len(cases)
    assert bus.counters["emitted"] == 0


def test_size_limit_follows_the_config(bus_factory):
    bus = bus_factory(config=Config(max_event_bytes=256))
    bus.emit("agent_started", {"x": "y" * 200})
    with pytest.raises(EventTooLargeError, match="limit is 256"):
        bus.emit("agent_started", {"x": "y" * 300})
    assert check_data(None) == {}


def nest(depth: int, leaf: object = 1) -> dict:
    """``depth`` levels of objects, built without recursion."""
    value: object = leaf
    for _ in range(depth):
        value = {"a": value}
    return value  # type: ignore[return-value]


def test_depth_is_counted_in_levels_of_objects_and_lists():
    assert not json_depth_exceeds(1, 0) and not json_depth_exceeds("x", 0)
    assert json_depth_exceeds({}, 0) and not json_depth_exceeds({}, 1)
    assert not json_depth_exceeds({"a": [1, {"b": ()}]}, 4)
    assert json_depth_exceeds({"a": [1, {"b": ()}]}, 3)
    assert json_depth_exceeds([[], [[[]]]], 3) and not json_depth_exceeds([[], [[[]]]], 4)


def test_check_data_bounds_nesting_without_recursion():
    limit = DEFAULT_MAX_JSON_DEPTH
    assert check_data(nest(limit)) == nest(limit)
    with pytest.raises(TooDeepError) as info:
        check_data(nest(limit + 1))
    assert info.value.code == "too_deep" and isinstance(info.value, InvalidDataError)
    assert check_data(nest(100), max_depth=100) and check_data({"a": [[{}]]}, max_depth=4)
    with pytest.raises(TooDeepError):
        check_data({"a": [[{}]]}, max_depth=3)
    for depth in (1000, 100_000):  # past what json and the interpreter recurse into
        with pytest.raises(TooDeepError):
            check_data(nest(depth))


def test_check_data_refuses_strings_that_are_not_unicode_text():
    for data in ({"x": "\ud800"}, {"\udfff": 1}, {"x": ["ok", {"y": "a\udc80b"}]}):
        with pytest.raises(InvalidDataError, match="not Unicode text") as info:
            check_data(data)
        assert info.value.code == "invalid_data"
    assert check_data({"x": "\U0001f600 \u00e9"}) == {"x": "\U0001f600 \u00e9"}


def test_every_origin_meets_the_checks(bus, recorder):
    from eventbus import signals

    for origin in ("api", "http", "client", "signal"):
        with pytest.raises(TooDeepError):
            bus.emit("agent_started", nest(DEFAULT_MAX_JSON_DEPTH + 1), origin=origin)
        with pytest.raises(InvalidDataError):
            bus.emit("agent_started", {"x": "\ud800"}, origin=origin)
    signals.agent_started.send("agent", details=nest(1000))  # an agent is never raised into
    assert bus.counters["rejected"] == 9 and bus.counters["emitted"] == 0


@pytest.mark.parametrize("text,error,code", [
    ("[" * 1000 + "]" * 1000, TooDeepError, "too_deep"),
    ("[" * 33 + "]" * 33, TooDeepError, "too_deep"),
    ('{"x": "\\ud800"}', InvalidJSONError, "invalid_json"),
    ('{"\\uDFFF": 1}', InvalidJSONError, "invalid_json"),
    ('"\ud800"', InvalidJSONError, "invalid_json"),
    (b'{"x": "\xff"}', InvalidJSONError, "invalid_json"),
    ('{"x": NaN}', InvalidJSONError, "invalid_json"),
    ('{"x": Infinity}', InvalidJSONError, "invalid_json"),
    ('{"x": ', InvalidJSONError, "invalid_json"),
    ("", InvalidJSONError, "invalid_json"),
])
def test_parse_json_refusals(text, error, code):
    with pytest.raises(error) as info:
        parse_json(text)
    assert info.value.code == code and info.value.to_dict()["message"]


def test_parse_json_accepts_what_clients_legitimately_send():
    assert parse_json("[" * 32 + "]" * 32) == json.loads("[" * 32 + "]" * 32)
    assert parse_json('{"x": "\\ud83d\\ude00", "y": "\\\\ud800"}') == {"x": "\U0001f600", "y": "\\ud800"}
    assert parse_json(b'{"a": [1, 2.5, null, true]}') == {"a": [1, 2.5, None, True]}
    assert parse_json("[[[1]]]", max_depth=3) == [[[1]]]
    with pytest.raises(TooDeepError):
        parse_json("[[[1]]]", max_depth=2)
    assert check_json({"x": "fine"}) == {"x": "fine"}
    with pytest.raises(InvalidJSONError):
        check_json({"x": "\ud800"})  # no text given: the Unicode check always runs
