"""Per-room sequence numbers and the replay buffer that lets clients resume without gaps.

The memory backend lives in one process; its *epoch* is new at every start, so a client
that resumes against a restarted server is told to resync instead of silently missing
events. A Redis backend with the same interface shares history across processes.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
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
    epoch: str

    def append(self, event: Event, keep: bool = True) -> None:
        """Assign ``event.seq`` (when ``keep``) and retain it."""

    def since(self, room: str, after: int, limit: int | None = None) -> HistoryRange: ...

    def latest_seq(self, room: str) -> int: ...

    def rooms(self) -> dict[str, int]: ...


class MemoryHistory:
    """Bounded per-room history in memory: at most ``size`` events and ``max_age`` seconds."""

    def __init__(self, size: int = 1000, max_age: float = 3600.0):
        self.size = size
        self.max_age = max_age
        self.epoch = uuid.uuid4().hex[:16]
        self._rooms: dict[str, deque[Event]] = {}
        self._seq: dict[str, int] = {}
        self._lock = threading.Lock()

    def append(self, event: Event, keep: bool = True) -> None:
        if not keep:
            return
        with self._lock:
            seq = self._seq.get(event.room, 0) + 1
            self._seq[event.room] = seq
            event.seq = seq
            buf = self._rooms.get(event.room)
            if buf is None:
                buf = self._rooms[event.room] = deque(maxlen=self.size)
            buf.append(event)
            self._expire(buf, event.created)

    def _expire(self, buf: deque[Event], now: float) -> None:
        cutoff = now - self.max_age
        while buf and buf[0].created < cutoff:
            buf.popleft()

    def since(self, room: str, after: int, limit: int | None = None) -> HistoryRange:
        with self._lock:
            latest = self._seq.get(room, 0)
            buf = self._rooms.get(room)
            if buf is not None:
                self._expire(buf, time.time())
            if after > latest or after < 0:
                return HistoryRange(room, self.epoch, latest, [], complete=False)
            if not buf:
                return HistoryRange(room, self.epoch, latest, [], complete=after == latest)
            first = buf[0].seq or 0
            # seq is contiguous inside the buffer, so index arithmetic finds the start.
            start = max(0, after + 1 - first)
            events = [buf[i] for i in range(start, len(buf))]
            if limit is not None:
                events = events[:limit]
            return HistoryRange(room, self.epoch, latest, events, complete=after >= first - 1)

    def latest_seq(self, room: str) -> int:
        return self._seq.get(room, 0)

    def rooms(self) -> dict[str, int]:
        with self._lock:
            return {room: len(buf) for room, buf in self._rooms.items()}
