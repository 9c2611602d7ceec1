"""The Socket.IO transport: emits each event to its namespace and room, once per room.

Joins and resumes run inside the transport's worker (``call_soon``), between two events, so
a client entering a room gets exactly the events after the point it joined: the replayed
ones from history, then the live ones still queued, with no gap and no duplicate.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Callable

from eventbus.events import Event
from eventbus.transport import Transport

if TYPE_CHECKING:
    from eventbus.bus import EventBus
    from eventbus.transport import TransportWorker

log = logging.getLogger("eventbus.socketio")


class JoinResult:
    """What a join or resume found, filled in by the worker."""

    __slots__ = ("done", "seq", "replayed", "resync", "error")

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
        self.replayed = 0
        self.resyncs = 0

    def attach(self, server: Any) -> None:
        self.server = server

    def start(self, bus: EventBus) -> None:
        self.bus = bus
        self.worker = next(w for w in bus.workers if w.transport is self)

    def send(self, event: Event) -> None:
        # Without a server (an agent-only process) events still pass, so last_sent
        # always matches the stream.
        if self.server is not None:
            envelope = event.to_dict()
            emit = self.server.emit
            for namespace, room in self.bus.registry.deliveries(event):
                # Local clients only: with Redis, every server reads the fan-out stream itself.
                emit(event.type, envelope, namespace=namespace, to=room, ignore_queue=True)
                self.emits += 1
        if event.seq is not None:
            self.last_sent[event.room] = event.seq

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
            "replayed": self.replayed,
            "resyncs": self.resyncs,
        }

    # -- joins, in stream order -----------------------------------------------------
    def join(self, sid: str, namespace: str, room: str, after: int | None = None,
             epoch: str | None = None, timeout: float = 10.0,
             on_joined: Callable[[], None] | None = None) -> JoinResult:
        """Put ``sid`` in ``room`` at the current point of the stream. With ``after``
        (the last seq the client saw), first replay what it missed, or tell it to resync
        when history cannot fill the gap. Blocks until done or ``timeout``."""
        result = JoinResult()

        def run() -> None:
            try:
                self._join_now(sid, namespace, room, after, epoch, result)
                if on_joined is not None:
                    on_joined()
            except Exception as exc:  # noqa: BLE001
                result.error = f"{type(exc).__name__}: {exc}"
                log.exception("join of %s to %s%s failed", sid, namespace, room)
            finally:
                result.done.set()

        if self.worker is None or not self.bus.started:
            run()  # no stream yet: nothing can interleave
        else:
            self.worker.call_soon(run)
            if not result.done.wait(timeout):
                result.error = "timed out waiting for the event stream"
        return result

    def _join_now(self, sid: str, namespace: str, room: str, after: int | None,
                  epoch: str | None, result: JoinResult) -> None:
        server = self.server
        server.enter_room(sid, room, namespace=namespace)
        history = self.bus.history
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
