"""Event types, the wire envelope, and the routing table that maps a type to its namespace and room.

Everything that crosses a transport is an :class:`Event`; its JSON form is identical on
Socket.IO, webhooks and the log sink.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

DEFAULT_MAX_EVENT_BYTES = 64 * 1024
#: Deepest nesting of objects and lists accepted in client JSON and in event data.
DEFAULT_MAX_JSON_DEPTH = 32
#: A JSON ``\\u`` escape of a UTF-16 surrogate, the only way JSON text can carry a lone one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")
ROOM_PATTERN = re.compile(r"^[A-Za-z0-9_.:@/\-]{1,128}$")
TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")


class EventBusError(Exception):
    """Base of every error eventbus raises on purpose; ``code`` is what clients see."""

    code = "error"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": str(self)}


class InvalidEventError(EventBusError, ValueError):
    code = "invalid_event"


class UnknownEventTypeError(InvalidEventError):
    code = "unknown_event_type"


class InvalidDataError(InvalidEventError):
    code = "invalid_data"


class EventTooLargeError(InvalidEventError):
    code = "payload_too_large"


class InvalidRoomError(InvalidEventError):
    code = "invalid_room"


class TooDeepError(InvalidDataError):
    """Objects and lists nest deeper than the limit (``EVENTBUS_MAX_JSON_DEPTH``)."""

    code = "too_deep"


class InvalidJSONError(InvalidEventError):
    """A client sent text that is not JSON, not UTF-8, holds ``NaN``/``Infinity`` or a
    lone UTF-16 surrogate."""

    code = "invalid_json"


class EventType(str, Enum):
    """The built-in event types. Plugins add more through ``eventbus_register_event_types``."""

    # chat
    CHAT_MESSAGE = "chat_message"
    CHAT_RESPONSE = "chat_response"
    TYPING_INDICATOR = "typing_indicator"
    # agent
    AGENT_STARTED = "agent_started"
    AGENT_COMPLETED = "agent_completed"
    TOOL_EXECUTED = "tool_executed"
    AGENT_HANDOFF = "agent_handoff"
    # system
    HEALTH_UPDATE = "health_update"
    PERFORMANCE_UPDATE = "performance_update"
    ALERT_CREATED = "alert_created"
    # connection
    USER_JOINED = "user_joined"
    USER_LEFT = "user_left"

    def __str__(self) -> str:
        return self.value


CHAT_NAMESPACE = "/chat"
MONITORING_NAMESPACE = "/monitoring"
ADMIN_NAMESPACE = "/admin"
NAMESPACES = (CHAT_NAMESPACE, MONITORING_NAMESPACE, ADMIN_NAMESPACE)
MONITORING_ROOM = "monitoring"
ADMIN_ROOM = "admin"


def session_room(session_id: str) -> str:
    """The chat room of one session: ``session:<session_id>``."""
    return f"session:{session_id}"


@dataclass(frozen=True)
class EventTypeSpec:
    """How one event type is routed and kept.

    :param name: the type, also the Socket.IO event name.
    :param category: ``chat``, ``agent``, ``system``, ``connection`` or a plugin's own.
    :param namespace: the Socket.IO namespace its events go to.
    :param room: the default room, or ``None`` when the room comes from ``session_id``
        (chat) or must be given (presence).
    :param also: extra ``(namespace, room)`` deliveries, e.g. alerts mirrored to ``/admin``.
    :param history: kept in the replay history and given a ``seq``; ephemeral types
        (typing indicators) are not.
    :param description: one line for the docs.
    :param schema: JSON Schema of ``data`` (documentation and AsyncAPI; not enforced).
    """

    name: str
    category: str
    namespace: str
    room: str | None = None
    also: tuple[tuple[str, str], ...] = ()
    history: bool = True
    description: str = ""
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "object"})


def _obj(properties: dict[str, Any], required: Iterable[str] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required)}


_S = {"type": "string"}
_N = {"type": "number"}
_O = {"type": "object"}

BUILTIN_TYPES: tuple[EventTypeSpec, ...] = (
    EventTypeSpec("chat_message", "chat", CHAT_NAMESPACE, None,
                  description="A user's chat message in a session.",
                  schema=_obj({"message": _S}, ["message"])),
    EventTypeSpec("chat_response", "chat", CHAT_NAMESPACE, None,
                  description="An agent's answer in a session.",
                  schema=_obj({"message": _S, "agent": _S}, ["message"])),
    EventTypeSpec("typing_indicator", "chat", CHAT_NAMESPACE, None, history=False,
                  description="Someone is (or stopped) typing; throttled, never kept in history.",
                  schema=_obj({"typing": {"type": "boolean"}, "user": _S})),
    EventTypeSpec("agent_started", "agent", MONITORING_NAMESPACE, MONITORING_ROOM,
                  description="An agent began a task.",
                  schema=_obj({"agent_name": _S, "details": _O})),
    EventTypeSpec("agent_completed", "agent", MONITORING_NAMESPACE, MONITORING_ROOM,
                  description="An agent finished a task (successfully or not).",
                  schema=_obj({"agent_name": _S, "status": _S, "duration_ms": _N, "details": _O})),
    EventTypeSpec("tool_executed", "agent", MONITORING_NAMESPACE, MONITORING_ROOM,
                  description="An agent ran a tool.",
                  schema=_obj({"agent_name": _S, "tool": _S, "duration_ms": _N, "ok": {"type": "boolean"}})),
    EventTypeSpec("agent_handoff", "agent", MONITORING_NAMESPACE, MONITORING_ROOM,
                  description="One agent handed the task to another.",
                  schema=_obj({"from_agent": _S, "to_agent": _S, "reason": _S})),
    EventTypeSpec("health_update", "system", MONITORING_NAMESPACE, MONITORING_ROOM,
                  description="Health of a component changed or was sampled.",
                  schema=_obj({"component": _S, "status": _S})),
    EventTypeSpec("performance_update", "system", MONITORING_NAMESPACE, MONITORING_ROOM,
                  description="Performance figures (latency, throughput, usage).",
                  schema=_obj({"metrics": _O})),
    EventTypeSpec("alert_created", "system", MONITORING_NAMESPACE, MONITORING_ROOM,
                  also=((ADMIN_NAMESPACE, ADMIN_ROOM),),
                  description="An alert was raised; also delivered to /admin.",
                  schema=_obj({"severity": _S, "message": _S}, ["message"])),
    EventTypeSpec("user_joined", "connection", CHAT_NAMESPACE, None,
                  description="A user joined a room (first tab); sent to that room.",
                  schema=_obj({"user_id": _S, "room": _S, "presence": {"type": "array"}})),
    EventTypeSpec("user_left", "connection", CHAT_NAMESPACE, None,
                  description="A user left a room (last tab closed); sent to that room.",
                  schema=_obj({"user_id": _S, "room": _S, "presence": {"type": "array"}})),
)

# A room's namespace when an explicit room is given: rooms are namespaced by prefix.
_ROOM_NAMESPACES = {MONITORING_ROOM: MONITORING_NAMESPACE, ADMIN_ROOM: ADMIN_NAMESPACE}


def namespace_for_room(room: str, default: str) -> str:
    """The namespace a room lives in: ``session:*`` in /chat, ``monitoring``, ``admin``."""
    if room.startswith("session:"):
        return CHAT_NAMESPACE
    return _ROOM_NAMESPACES.get(room, default)


def validate_room(room: Any) -> str:
    """Return ``room`` if it is a valid room name, else raise :class:`InvalidRoomError`."""
    if not isinstance(room, str) or not ROOM_PATTERN.fullmatch(room):
        raise InvalidRoomError(
            f"invalid room {room!r}: expected 1-128 characters of letters, digits and _.:@/-"
        )
    return room


class EventRegistry:
    """The known event types and their routing. One per bus; plugins extend it."""

    def __init__(self, specs: Iterable[EventTypeSpec] = BUILTIN_TYPES):
        self._specs: dict[str, EventTypeSpec] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: EventTypeSpec | str, **kwargs: Any) -> EventTypeSpec:
        """Add a type. ``register("deploy_finished", category="ops", namespace="/monitoring",
        room="monitoring")`` or ``register(EventTypeSpec(...))``."""
        if isinstance(spec, str):
            kwargs.setdefault("category", "custom")
            kwargs.setdefault("namespace", MONITORING_NAMESPACE)
            kwargs.setdefault("room", MONITORING_ROOM)
            spec = EventTypeSpec(spec, **kwargs)
        if not TYPE_PATTERN.fullmatch(spec.name):
            raise InvalidEventError(
                f"invalid event type name {spec.name!r}: lower-case letters, digits, '_' and '.'"
            )
        existing = self._specs.get(spec.name)
        if existing is not None and existing != spec:
            raise InvalidEventError(f"event type {spec.name!r} is already registered differently")
        self._specs[spec.name] = spec
        return spec

    def get(self, name: str) -> EventTypeSpec:
        try:
            return self._specs[str(name)]
        except KeyError:
            raise UnknownEventTypeError(
                f"unknown event type {str(name)!r}; known: {', '.join(sorted(self._specs))}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return str(name) in self._specs

    def __iter__(self) -> Iterator[EventTypeSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def names(self) -> list[str]:
        return list(self._specs)

    def resolve_room(self, spec: EventTypeSpec, room: str | None, session_id: str | None) -> str:
        """The primary room of an event: explicit ``room``, else the type's, else the session's."""
        if room is not None:
            return validate_room(room)
        if spec.room is not None:
            return spec.room
        if session_id:
            return validate_room(session_room(str(session_id)))
        raise InvalidRoomError(
            f"event type {spec.name!r} needs a room or a session_id to be routed"
        )

    def deliveries(self, event: Event) -> list[tuple[str, str]]:
        """Every ``(namespace, room)`` an event goes to, primary first."""
        spec = self.get(event.type)
        primary = (namespace_for_room(event.room, spec.namespace), event.room)
        return [primary, *[d for d in spec.also if d != primary]]


_stamp_cache: tuple[int, str] = (-1, "")


def utc_timestamp(ts: float | None = None) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z``, as on the wire. The seconds part is
    formatted once per second (this runs for every event)."""
    global _stamp_cache
    if ts is None:
        ts = time.time()
    whole = math.floor(ts)
    micros = round((ts - whole) * 1_000_000)  # rounded as datetime.fromtimestamp does
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    cached_second, prefix = _stamp_cache
    if whole != cached_second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(whole))
        _stamp_cache = (whole, prefix)
    return f"{prefix}{micros // 1000:03d}Z"


def new_event_id() -> str:
    return "evt_" + uuid.uuid4().hex


WIRE_FIELDS = ("id", "type", "data", "timestamp", "room", "seq", "user_id", "session_id", "source")


@dataclass(slots=True)
class Event:
    """The envelope. ``created`` (epoch seconds) is local bookkeeping for latency and
    is not sent; the wire carries ``timestamp``."""

    type: str
    data: dict[str, Any]
    room: str
    id: str = field(default_factory=new_event_id)
    timestamp: str = ""
    seq: int | None = None
    user_id: str | None = None
    session_id: str | None = None
    source: str | None = None
    created: float = field(default_factory=time.time, compare=False, repr=False)
    #: where the event entered: "signal", "api", "client", "http", "remote" (not sent)
    origin: str = field(default="api", compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.timestamp:
            self.timestamp = utc_timestamp(self.created)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "data": self.data,
            "timestamp": self.timestamp,
            "room": self.room,
            "seq": self.seq,
            "user_id": self.user_id,
            "session_id": self.session_id,
            "source": self.source,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], registry: EventRegistry | None = None) -> Event:
        """Rebuild an envelope, validating each field; ``registry`` also checks the type."""
        if not isinstance(raw, Mapping):
            raise InvalidEventError("an event must be a JSON object")
        unknown = set(raw) - set(WIRE_FIELDS)
        if unknown:
            raise InvalidEventError(f"unknown envelope fields: {', '.join(sorted(unknown))}")
        etype = raw.get("type")
        if not isinstance(etype, str):
            raise InvalidEventError("'type' must be a string")
        if registry is not None:
            registry.get(etype)
        data = raw.get("data", {})
        if not isinstance(data, dict):
            raise InvalidDataError("'data' must be a JSON object")
        seq = raw.get("seq")
        if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool) or seq < 1):
            raise InvalidEventError("'seq' must be a positive integer or null")
        for name in ("id", "timestamp", "user_id", "session_id", "source"):
            value = raw.get(name)
            if value is not None and not isinstance(value, str):
                raise InvalidEventError(f"{name!r} must be a string or null")
        event = cls(
            type=etype,
            data=data,
            room=validate_room(raw.get("room")),
            id=raw.get("id") or new_event_id(),
            timestamp=raw.get("timestamp") or "",
            seq=seq,
            user_id=raw.get("user_id"),
            session_id=raw.get("session_id"),
            source=raw.get("source"),
        )
        if raw.get("timestamp"):
            event.created = parse_timestamp(raw["timestamp"])
        return event

    @classmethod
    def from_json(cls, text: str | bytes, registry: EventRegistry | None = None) -> Event:
        try:
            raw = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise InvalidEventError(f"not valid JSON: {exc}") from None
        return cls.from_dict(raw, registry)


def parse_timestamp(value: str) -> float:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise InvalidEventError(f"'timestamp' is not ISO-8601: {value!r}") from None


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """True when objects and lists (tuples too) in ``value`` nest deeper than ``limit``
    levels; ``{}`` is one level, a scalar none. Iterative, and it stops one level past the
    limit, so any depth costs at most the part of ``value`` within the limit."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        depth += 1
        if depth > limit:
            return True
        stack.extend((child, depth) for child in children if isinstance(child, (dict, list, tuple)))
    return False


def _has_lone_surrogate(value: Any) -> bool:
    """True when a string in ``value`` (keys included) is not valid Unicode text."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False


def check_json(value: Any, max_depth: int = DEFAULT_MAX_JSON_DEPTH, text: str | None = None) -> Any:
    """Check decoded client JSON: at most ``max_depth`` levels and Unicode text only.

    ``text`` is the JSON it was decoded from, when known: a lone surrogate can then only
    come from a ``\\uD8xx``-style escape, so the walk over strings runs only when the text
    holds one. Returns ``value``; raises :class:`TooDeepError` or :class:`InvalidJSONError`.
    """
    # Text with no more brackets than the limit cannot nest past it: skip the walk.
    shallow = text is not None and text.count("[") + text.count("{") <= max_depth
    if not shallow and json_depth_exceeds(value, max_depth):
        raise TooDeepError(f"objects and lists nest deeper than {max_depth} levels")
    if (text is None or _SURROGATE_ESCAPE.search(text)) and _has_lone_surrogate(value):
        raise InvalidJSONError("a string holds a lone UTF-16 surrogate; it is not Unicode text")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(body: str | bytes, max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> Any:
    """Parse JSON a client sent (an HTTP body): UTF-8, no ``NaN``/``Infinity``, at most
    ``max_depth`` levels, Unicode text only. Raises :class:`InvalidJSONError` or
    :class:`TooDeepError`, never ``RecursionError`` or ``UnicodeError``."""
    if isinstance(body, (bytes, bytearray)):
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidJSONError(f"the body is not UTF-8: byte {exc.start} cannot be decoded") from None
    else:
        text = body
        if _SURROGATE.search(text):
            raise InvalidJSONError("the text holds a lone UTF-16 surrogate; it is not Unicode text")
    if not text.strip():
        raise InvalidJSONError("the body is empty; send JSON")
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise TooDeepError(f"objects and lists nest deeper than {max_depth} levels") from None
    except ValueError as exc:
        raise InvalidJSONError(f"the body is not valid JSON: {exc}") from None
    return check_json(value, max_depth, text)


def check_data(data: Any, max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
               max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> dict[str, Any]:
    """Validate an event's ``data``: a JSON object of Unicode text, within the size and
    nesting limits. Every event passes here (``EventBus.emit``, whatever its origin).

    Returns the data unchanged; raises :class:`InvalidDataError` (:class:`TooDeepError`
    past ``max_depth`` levels) or :class:`EventTooLargeError`.
    """
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidDataError(f"event data must be a JSON object, got {type(data).__name__}")
    # Depth first: json.dumps recurses, and would fail on deep data with RecursionError.
    if json_depth_exceeds(data, max_depth):
        raise TooDeepError(f"event data nests deeper than {max_depth} levels")
    try:
        encoded = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidDataError(f"event data is not JSON-serialisable: {exc}") from None
    try:
        size = len(encoded.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidDataError("event data holds a string that is not Unicode text "
                               "(a lone UTF-16 surrogate)") from None
    if size > max_bytes:
        raise EventTooLargeError(f"event data is {size} bytes; the limit is {max_bytes}")
    return data
