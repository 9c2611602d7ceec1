"""The transport base class and the worker that feeds each transport from its own bounded queue.

A transport only implements :meth:`Transport.send`; the worker isolates it: a slow transport
fills its own queue (and drops by policy, counted), a failing one counts failures, and neither
touches the agent or another transport.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .bus import EventBus
    from .events import Event

log = logging.getLogger("eventbus.transport")

#: Upper bounds (seconds) of the delivery-latency histogram buckets.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Spawn = Callable[[Callable[[], None]], Any]


def spawn_thread(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, name="eventbus-worker", daemon=True)
    thread.start()
    return thread


class _Call:
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], None]):
        self.fn = fn


class Transport:
    """Base class of a delivery mechanism. Subclass it and register an instance through
    ``eventbus_register_transports``.

    Class attributes tune the worker: ``queue_size`` and ``overflow`` (``drop_oldest`` or
    ``drop_newest``; ``None`` takes the bus setting) and ``batch_size`` (most events handed
    to :meth:`send_batch` at once).
    """

    name: str = "transport"
    #: With Redis: receive every event of every server (from the fan-out stream), to reach
    #: this server's own clients. Socket.IO sets it; webhooks and sinks deliver each event once.
    fanout: bool = False
    #: In an agent (producer) process with Redis, still deliver here (local listeners).
    local: bool = False
    queue_size: int | None = None
    overflow: str | None = None
    batch_size: int = 256

    def start(self, bus: EventBus) -> None:
        """Called once, before the worker starts, with the bus that owns the transport."""

    def accepts(self, event: Event) -> bool:
        """Whether this transport wants ``event`` at all (filters). Called in the emitter's
        thread, so keep it cheap; refused events are not counted as drops."""
        return True

    def send(self, event: Event) -> None:
        """Deliver one event. Runs in the worker; raise to report a failure."""
        raise NotImplementedError

    def send_batch(self, events: list[Event]) -> None:
        """Deliver several events in order. Override for transports that batch; the default
        sends one by one, and the worker counts each failure separately."""
        raise NotImplementedError

    def epoch_changed(self, epoch: str) -> None:
        """The history epoch changed (Redis lost its data): ``seq`` starts again. Called in
        the worker, between events, for fan-out transports."""

    def health(self) -> dict[str, Any]:
        """``{"status": "ok" | "degraded" | "down", ...}`` plus anything worth showing."""
        return {"status": "ok"}

    def close(self) -> None:
        """Release resources after the worker has drained."""


class TransportStats:
    """Counters and latency figures of one transport; read without locking (ints are atomic
    enough for monitoring)."""

    def __init__(self) -> None:
        self.submitted = 0
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.latencies: deque[float] = deque(maxlen=2048)
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0

    def observe(self, seconds: float) -> None:
        self.latencies.append(seconds)
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def percentile(self, q: float) -> float | None:
        sample = sorted(self.latencies)
        if not sample:
            return None
        return sample[min(len(sample) - 1, int(q * len(sample)))]


class TransportWorker:
    """Owns one transport's queue and the task that drains it."""

    def __init__(self, transport: Transport, queue_size: int, overflow: str):
        self.transport = transport
        self.name = transport.name
        self.queue_size = transport.queue_size or queue_size
        self.overflow = transport.overflow or overflow
        self.stats = TransportStats()
        self._queue: deque[Event | _Call] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._closing = False
        self._started = False
        self._stopped = threading.Event()
        self._custom_batch = type(transport).send_batch is not Transport.send_batch

    # -- producer side (any thread) -------------------------------------------------
    def submit(self, event: Event) -> bool:
        """Queue ``event``; never blocks. Returns False when it was dropped."""
        with self._cond:
            if self._closing:
                self._drop(event, "closed")
                return False
            self.stats.submitted += 1
            if len(self._queue) >= self.queue_size:
                oldest = self._queue[0]
                if self.overflow == "drop_newest" or isinstance(oldest, _Call):
                    self._drop(event, "queue full")
                    return False
                self._queue.popleft()
                self._drop(oldest, "queue full")
            self._queue.append(event)
            self._cond.notify()
        return True

    def _drop(self, event: Event, reason: str) -> None:
        self.stats.dropped += 1
        if self.stats.dropped == 1 or self.stats.dropped % 1000 == 0:
            log.warning("transport %s dropped event %s (%s, room %s); %d dropped so far",
                        self.name, event.id, reason, event.room, self.stats.dropped)

    @property
    def depth(self) -> int:
        return len(self._queue)

    # -- consumer side ----------------------------------------------------------------
    def start(self, bus: EventBus, spawn: Spawn) -> None:
        if self._started:
            return
        self._started = True
        self.transport.start(bus)
        spawn(self._run)

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the worker, after every event queued before it has been handed to
        the transport and before any queued after it. Used to join a client to a room at
        an exact point of the stream (no gap, no duplicate). Never dropped by overflow."""
        with self._cond:
            self._queue.append(_Call(fn))
            self._cond.notify()

    def _take(self) -> list[Any]:
        with self._cond:
            while not self._queue and not self._closing:
                # The timeout is a safety net for wake-ups from native threads in green modes.
                self._cond.wait(0.5)
            batch: list[Any] = []
            queue = self._queue
            while queue and len(batch) < self.transport.batch_size:
                if isinstance(queue[0], _Call):
                    if not batch:
                        batch.append(queue.popleft())
                    break
                batch.append(queue.popleft())
            return batch

    def _run(self) -> None:
        try:
            while True:
                batch = self._take()
                if not batch:
                    return  # closing and drained
                if type(batch[0]) is _Call:
                    try:
                        batch[0].fn()
                    except Exception:
                        log.exception("transport %s: queued call failed", self.name)
                    continue
                self._deliver(batch)
        finally:
            self._stopped.set()

    def _deliver(self, batch: list[Event]) -> None:
        stats = self.stats
        if self._custom_batch:
            try:
                self.transport.send_batch(batch)
            except Exception as exc:  # noqa: BLE001 - isolate any transport failure
                self._failed(batch, exc)
                return
            now = time.time()
            stats.delivered += len(batch)
            for event in batch:
                stats.observe(now - event.created)
            return
        for event in batch:
            try:
                self.transport.send(event)
            except Exception as exc:  # noqa: BLE001
                self._failed([event], exc)
                continue
            stats.delivered += 1
            stats.observe(time.time() - event.created)

    def _failed(self, events: list[Event], exc: Exception) -> None:
        self.stats.failed += len(events)
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        self.stats.last_error_at = time.time()
        log.warning("transport %s failed to deliver %d event(s) (first %s, type %s, room %s): %s",
                    self.name, len(events), events[0].id, events[0].type, events[0].room,
                    self.stats.last_error, exc_info=log.isEnabledFor(logging.DEBUG))

    def close(self, timeout: float) -> bool:
        """Stop accepting, drain what is queued within ``timeout``, then close the transport.
        Returns True when everything queued was delivered or failed (not abandoned)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        drained = self._stopped.wait(timeout) if self._started else not self._queue
        if not drained:
            with self._cond:
                left = sum(1 for item in self._queue if not isinstance(item, _Call))
                self._queue.clear()
            self.stats.dropped += left
            log.warning("transport %s: %d event(s) still queued after %.1fs at close; dropped",
                        self.name, left, timeout)
        try:
            self.transport.close()
        except Exception:
            log.exception("transport %s failed to close", self.name)
        return drained

    def snapshot(self) -> dict[str, Any]:
        stats = self.stats
        try:
            health = self.transport.health()
        except Exception as exc:  # noqa: BLE001
            health = {"status": "down", "error": f"{type(exc).__name__}: {exc}"}
        p50, p99 = stats.percentile(0.5), stats.percentile(0.99)
        return {
            "name": self.name,
            "health": health,
            "queue_depth": self.depth,
            "queue_size": self.queue_size,
            "overflow": self.overflow,
            "submitted": stats.submitted,
            "delivered": stats.delivered,
            "failed": stats.failed,
            "dropped": stats.dropped,
            "last_error": stats.last_error,
            "latency_ms": {
                "p50": None if p50 is None else round(p50 * 1000, 3),
                "p99": None if p99 is None else round(p99 * 1000, 3),
            },
        }
