"""Per-room sequence numbers and the replay buffer that lets clients resume without gaps.

The memory backend lives in one process; its *epoch* is new at every start, so a client
that resumes against a restarted server is told to resync instead of silently missing
events. A Redis backend with the same interface shares history across processes.

The memory backend is bounded three ways: events per room (``size``), age (a room whose
newest event is older than ``max_age`` is forgotten entirely) and a budget across rooms
(``max_rooms`` rooms and ``max_events`` events; the least recently appended rooms go
first). A forgotten room's numbering is folded into the epoch's *floor*: a room that
appears again (or for the first time) continues above every seq any forgotten room
reached, so no seq is ever reused within an epoch, and a client that resumes a forgotten
room is told ``complete: false`` (resync) unless it provably missed nothing.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .config import Config
    from .events import Event


@dataclass
class HistoryRange:
    """What :meth:`History.since` found.

    :param events: retained events with ``seq > after``, oldest first.
    :param complete: False when events between ``after`` and the first returned one are
        no longer kept (or ``after`` is ahead of the room), so the client must resync.
    """

    room: str
    epoch: str
    latest_seq: int
    events: list[Event] = field(default_factory=list)
    complete: bool = True


class History(Protocol):
    @property
    def epoch(self) -> str:
        """Changes when the history loses continuity (clients then resync)."""
        ...

    def append(self, event: Event, keep: bool = True) -> None:
        """Assign ``event.seq`` (when ``keep``) and retain it."""

    def since(self, room: str, after: int, limit: int | None = None) -> HistoryRange: ...

    def latest_seq(self, room: str) -> int: ...

    def rooms(self) -> dict[str, int]: ...


class _Room:
    """One room's retained events, its last seq and the seq its current run started after."""

    __slots__ = ("base", "events", "seq")

    def __init__(self, base: int, size: int):
        self.events: deque[Event] = deque(maxlen=size)
        self.seq = base
        self.base = base


class MemoryHistory:
    """Bounded history in memory.

    :param size: events kept per room.
    :param max_age: seconds; older events expire, and a room whose newest event is older
        is forgotten with its seq.
    :param max_rooms: rooms kept at most; past it the least recently appended room goes.
    :param max_events: events kept across all rooms; past it whole rooms go, least
        recently appended first (a single room over the budget loses its oldest events).
    """

    def __init__(self, size: int = 1000, max_age: float = 3600.0, max_rooms: int = 10000,
                 max_events: int = 200000):
        self.size = size
        self.max_age = max_age
        self.max_rooms = max_rooms
        self.max_events = max_events
        self.epoch = uuid.uuid4().hex[:16]
        #: rooms in order of their last append, least recent first
        self._rooms: OrderedDict[str, _Room] = OrderedDict()
        self._events = 0
        #: the highest seq a forgotten room had reached in this epoch
        self._floor = 0
        self.evicted = {"age": 0, "budget": 0}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Config) -> MemoryHistory:
        """A history with the limits of ``config`` (``history_size``, ``history_max_age``,
        ``history_max_rooms``, ``history_max_events``)."""
        return cls(config.history_size, config.history_max_age, config.history_max_rooms,
                   config.history_max_events)

    # -- writing ----------------------------------------------------------------------
    def append(self, event: Event, keep: bool = True) -> None:
        if not keep:
            return
        with self._lock:
            room = self._rooms.get(event.room)
            if room is None:
                room = self._rooms[event.room] = _Room(self._floor, self.size)
            else:
                self._rooms.move_to_end(event.room)
            room.seq += 1
            event.seq = room.seq
            if len(room.events) == self.size:
                self._events -= 1  # the deque drops its oldest
            room.events.append(event)
            self._events += 1
            self._expire(room, event.created)
            self._evict(time.time(), current=event.room)

    def _expire(self, room: _Room, now: float) -> None:
        """Drop the room's events older than ``max_age``."""
        cutoff = now - self.max_age
        events = room.events
        while events and events[0].created < cutoff:
            events.popleft()
            self._events -= 1

    def _evict(self, now: float, current: str | None = None) -> None:
        """Forget rooms from the least recently appended end while the oldest is idle past
        ``max_age`` or the budget is exceeded; never ``current`` (the room being appended to)."""
        cutoff = now - self.max_age
        rooms = self._rooms
        while rooms:
            name = next(iter(rooms))
            if name == current:
                break
            room = rooms[name]
            idle = not room.events or room.events[-1].created < cutoff
            if idle:
                self._forget(name, "age")
            elif len(rooms) > self.max_rooms or self._events > self.max_events:
                self._forget(name, "budget")
            else:
                break
        if self._events > self.max_events and current is not None and current in rooms:
            room = rooms[current]  # the only room left, and over the budget by itself
            while self._events > self.max_events and len(room.events) > 1:
                room.events.popleft()
                self._events -= 1

    def _forget(self, name: str, reason: str) -> None:
        room = self._rooms.pop(name)
        self._events -= len(room.events)
        self._floor = max(self._floor, room.seq)
        self.evicted[reason] += 1

    # -- reading ----------------------------------------------------------------------
    def _find(self, name: str) -> _Room | None:
        """The room with its expired events dropped, or None when it is (now) forgotten."""
        now = time.time()
        self._evict(now)
        room = self._rooms.get(name)
        if room is None:
            return None
        self._expire(room, now)
        if not room.events:
            self._forget(name, "age")
            return None
        return room

    def since(self, room: str, after: int, limit: int | None = None) -> HistoryRange:
        with self._lock:
            found = self._find(room)
            if found is None:
                # Nothing retained: complete only for a client already at the floor, which
                # every event this room had (if any) was at or below.
                latest = self._floor
                return HistoryRange(room, self.epoch, latest, [], complete=after == latest)
            latest = found.seq
            if after > latest or after < 0:
                return HistoryRange(room, self.epoch, latest, [], complete=False)
            first = found.events[0].seq or 0
            # seq is contiguous inside the buffer, so index arithmetic finds the start.
            start = max(0, after + 1 - first)
            stop = None if limit is None else start + limit
            events = list(islice(found.events, start, stop))
            return HistoryRange(room, self.epoch, latest, events, complete=after >= first - 1)

    def latest_seq(self, room: str) -> int:
        """The room's last seq; for a room with nothing retained, the epoch's floor (0
        until some room was forgotten)."""
        with self._lock:
            found = self._rooms.get(room)
            return self._floor if found is None else found.seq

    def start_seq(self, room: str) -> int:
        """The seq just before the first event of the room's current run (the floor for a
        room with nothing retained): a client that joins now has missed nothing at or
        below it."""
        with self._lock:
            found = self._rooms.get(room)
            return self._floor if found is None else found.base

    def rooms(self) -> dict[str, int]:
        """``{room: retained events}`` (admin detail: as large as the room budget)."""
        with self._lock:
            self._evict(time.time())
            return {name: len(room.events) for name, room in self._rooms.items()}

    def stats(self) -> dict[str, Any]:
        """Totals for the public status: counts only, whatever the number of rooms."""
        with self._lock:
            self._evict(time.time())
            return {
                "rooms": len(self._rooms),
                "events": self._events,
                "floor": self._floor,
                "evicted_rooms": dict(self.evicted),
                "limits": {"size": self.size, "max_age": self.max_age, "max_rooms": self.max_rooms,
                           "max_events": self.max_events},
            }
