"""The Socket.IO transport: emits each event to its namespace and room, once per room.

Joins and resumes run inside the transport's worker (``call_soon``), between two events, so
a client entering a room gets exactly the events after the point it joined: the replayed
ones from history, then the live ones still queued, with no gap and no duplicate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from eventbus.events import Event
from eventbus.transport import Transport

if TYPE_CHECKING:
    from eventbus.bus import EventBus
    from eventbus.transport import TransportWorker

log = logging.getLogger("eventbus.socketio")

#: Clients that asked for batches (``auth: {batch: true}``) sit in ``<room>#batch``.
BATCH_SUFFIX = "#batch"


def physical_room(room: str, batched: bool) -> str:
    return room + BATCH_SUFFIX if batched else room


class JoinResult:
    """What a join or resume found, filled in by the worker."""

    __slots__ = ("done", "error", "replayed", "resync", "seq")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.seq = 0
        self.replayed = 0
        self.resync: dict[str, Any] | None = None
        self.error: str | None = None


class SocketIOTransport(Transport):
    name = "socketio"
    fanout = True

    def __init__(self) -> None:
        self.server: Any = None  # socketio.Server, set by SocketManager.attach
        self.bus: EventBus | None = None
        self.worker: TransportWorker | None = None
        self.last_sent: dict[str, int] = {}
        self.emits = 0
        self.batches = 0
        self.replayed = 0
        self.resyncs = 0
        self.batch_window = 0.0
        self._pending: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._pending_since = 0.0

    @property
    def _bus(self) -> EventBus:
        """The bus that started this transport."""
        bus = self.bus
        assert bus is not None, "the socketio transport has not been started by a bus"
        return bus

    @property
    def _worker(self) -> TransportWorker:
        """The worker that feeds this transport, found when the bus starts it."""
        worker = self.worker
        assert worker is not None, "the socketio transport has not been started by a bus"
        return worker

    def attach(self, server: Any) -> None:
        self.server = server

    def start(self, bus: EventBus) -> None:
        self.bus = bus
        self.worker = next(w for w in bus.workers if w.transport is self)
        self.batch_window = bus.config.batch_window_ms / 1000.0

    def send(self, event: Event) -> None:
        # Without a server (an agent-only process) events still pass, so last_sent
        # always matches the stream.
        if self.server is not None:
            rooms = self.server.manager.rooms
            envelope = None
            for namespace, room in self._bus.registry.deliveries(event):
                members = rooms.get(namespace)
                if not members:
                    continue
                if members.get(room):
                    if envelope is None:
                        envelope = event.to_dict()
                    # Local clients only: with Redis, every server reads the fan-out stream.
                    # The packet is encoded once for the whole room.
                    self.server.emit(event.type, envelope, namespace=namespace, to=room, ignore_queue=True)
                    self.emits += 1
                if self.batch_window and members.get(room + BATCH_SUFFIX):
                    if envelope is None:
                        envelope = event.to_dict()
                    if not self._pending:
                        self._pending_since = time.monotonic()
                    self._pending.setdefault((namespace, room + BATCH_SUFFIX), []).append(envelope)
            if self._pending and time.monotonic() - self._pending_since >= self.batch_window:
                self.flush_batches()
        if event.seq is not None:
            self.last_sent[event.room] = event.seq

    def flush_batches(self) -> None:
        """Send each room's waiting envelopes as one ``events`` packet (a list)."""
        pending, self._pending = self._pending, {}
        for (namespace, room), envelopes in pending.items():
            self.server.emit("events", envelopes, namespace=namespace, to=room, ignore_queue=True)
            self.batches += 1

    def batch_timer(self) -> None:
        """Flush batches when no further event arrives within the window (runs while the
        bus runs; the flush itself happens in the worker, between events)."""
        while not self._bus.closed:
            due = self._pending_since + self.batch_window if self._pending else 0.0
            time.sleep(max(0.001, due - time.monotonic()) if due else self.batch_window / 2)
            if self._pending and time.monotonic() >= self._pending_since + self.batch_window:
                self._worker.call_soon(self._flush_if_due)

    def _flush_if_due(self) -> None:
        if self._pending and time.monotonic() - self._pending_since >= self.batch_window:
            self.flush_batches()

    def epoch_changed(self, epoch: str) -> None:
        """Tell every room this server serves to resync: its seq numbering starts again."""
        rooms = self.last_sent
        self.last_sent = {}
        if self.server is None:
            return
        joined = self.server.manager.rooms
        for room in rooms:
            for namespace, by_room in list(joined.items()):
                if room in by_room:
                    self.resyncs += 1
                    self.server.emit("resync_required", {"room": room, "epoch": epoch, "latest_seq": 0},
                                     namespace=namespace, to=room, ignore_queue=True)

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.server is not None else "idle",
            "emits": self.emits,
            "batches": self.batches,
            "replayed": self.replayed,
            "resyncs": self.resyncs,
        }

    # -- joins, in stream order -----------------------------------------------------
    def join(self, sid: str, namespace: str, room: str, after: int | None = None,
             epoch: str | None = None, timeout: float = 10.0, batched: bool = False,
             on_joined: Callable[[], None] | None = None) -> JoinResult:
        """Put ``sid`` in ``room`` at the current point of the stream. With ``after``
        (the last seq the client saw), first replay what it missed, or tell it to resync
        when history cannot fill the gap. Blocks until done or ``timeout``."""
        result = JoinResult()

        def run() -> None:
            try:
                self._join_now(sid, namespace, room, after, epoch, result, batched)
                if on_joined is not None:
                    on_joined()
            except Exception as exc:
                result.error = f"{type(exc).__name__}: {exc}"
                log.exception("join of %s to %s%s failed", sid, namespace, room)
            finally:
                result.done.set()

        if self.worker is None or not self._bus.started:
            run()  # no stream yet: nothing can interleave
        else:
            self.worker.call_soon(run)
            if not result.done.wait(timeout):
                result.error = "timed out waiting for the event stream"
        return result

    def _join_now(self, sid: str, namespace: str, room: str, after: int | None,
                  epoch: str | None, result: JoinResult, batched: bool = False) -> None:
        server = self.server
        if batched and self._pending:
            self.flush_batches()  # the replay below must not overtake what is waiting
        server.enter_room(sid, physical_room(room, batched and bool(self.batch_window)), namespace=namespace)
        history = self._bus.history
        sent = self.last_sent.get(room, 0)
        result.seq = sent
        if after is None or (after == sent and epoch in (None, history.epoch)):
            return
        found = history.since(room, after)
        if (epoch is not None and epoch != history.epoch) or not found.complete:
            self.resyncs += 1
            result.resync = {"room": room, "epoch": history.epoch, "latest_seq": sent}
            server.emit("resync_required", result.resync, namespace=namespace, to=sid, ignore_queue=True)
            return
        for event in found.events:
            if event.seq is None or event.seq > sent:
                break
            server.emit(event.type, event.to_dict(), namespace=namespace, to=sid, ignore_queue=True)
            result.replayed += 1
        self.replayed += result.replayed
