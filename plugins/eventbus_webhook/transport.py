"""The ``webhook`` transport: writes each accepted event to the durable outbox (one row per
matching endpoint) and wakes that endpoint's delivery threads; the bus never waits on HTTP.

With ``durable_accept`` (default ``clients``), an event from a client is stored before
``emit`` returns, so before the HTTP 202 or the Socket.IO ack: the ``eventbus_event`` hook
(:class:`DurableAccept`) writes it as ``intake`` (group-committed with concurrent
publishers), and the worker later gives it its final body with ``seq`` and makes it due.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eventbus.events import EventBusError
from eventbus.hookspecs import hookimpl
from eventbus.transport import Transport

from . import signing
from .delivery import EndpointDelivery
from .outbox import Outbox, OutboxError
from .redaction import ScrubFilter

if TYPE_CHECKING:
    from eventbus.bus import EventBus
    from eventbus.events import Event

    from .settings import WebhookSettings

log = logging.getLogger("eventbus.webhook")

#: How long health() reuses the oldest-pending query, so a busy /metrics scrape stays cheap.
OLDEST_TTL = 1.0
#: An ``intake`` row the worker has not made due after this long (its queue overflowed, or
#: a batch failed) is made due by housekeeping with the body it was stored with.
INTAKE_GRACE = 60.0
#: Promoted rows of one batch get due times this far apart, so ``(next_attempt_at, id)``
#: order is the bus's order even when publishers raced between storing and sequencing.
ORDER_STEP = 1e-6

Row = tuple[str, str, str, str, float]


class DurableAccept:
    """The ``eventbus_event`` wrapper that stores an event before ``emit`` returns.

    Outermost (``tryfirst`` and registered last), it runs after every other implementation
    and wrapper has transformed or dropped the event, so it stores exactly what the bus will
    deliver. Registered on the bus's plugin manager by :meth:`WebhookTransport.start`.
    """

    def __init__(self, transport: WebhookTransport, bus: EventBus):
        self.transport = transport
        self.bus = bus

    @hookimpl(wrapper=True, tryfirst=True)
    def eventbus_event(self, event: Event) -> Generator[None, list[Any], list[Any]]:
        results = yield
        if any(result is False for result in results):
            return results
        # An agent process with Redis hands events to the servers; it delivers no webhooks.
        if self.bus.role != "producer" and self.transport.settings.durable_for(event.origin):
            self.transport.intake(event)
        return results


class WebhookTransport(Transport):
    """One transport for every configured endpoint."""

    name = "webhook"

    def __init__(self, settings: WebhookSettings, data_dir: str | Path):
        self.settings = settings
        self.outbox_path = Path(data_dir) / settings.outbox_file
        self.deliveries = {e.name: EndpointDelivery(e, settings) for e in settings.endpoints}
        self.outbox: Outbox | None = None
        self.counters = {"expired": 0, "dead_letters_pruned": 0, "intake_failed": 0, "unsequenced": 0}
        self._stop = threading.Event()
        self._acceptor: DurableAccept | None = None
        self._scrub = ScrubFilter(e.url for e in settings.endpoints)
        # event id -> (stored at, endpoint names): events stored by intake() whose rows the
        # worker still has to make due.
        self._intake: dict[str, tuple[float, tuple[str, ...]]] = {}
        self._intake_lock = threading.Lock()
        self._housekeeper: threading.Thread | None = None
        self._oldest: tuple[float, dict[str, float]] = (0.0, {})
        self._oldest_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------
    def start(self, bus: EventBus) -> None:
        self._scrub.install()
        self.outbox = Outbox(self.outbox_path).open()
        # Stored while an emitter waited, but this process's predecessor stopped before
        # sequencing them: deliver them as stored (seq null) rather than never.
        unsequenced = self.outbox.promote_intake()
        if unsequenced:
            self.counters["unsequenced"] += unsequenced
            log.warning("webhook outbox %s: %d deliveries were accepted just before the last stop and "
                        "are delivered without seq", self.outbox_path, unsequenced)
        self._housekeeping()
        resumed = sum(d.pending for d in self.deliveries.values())
        if resumed:
            log.info("webhook outbox %s: resuming %d pending deliveries", self.outbox_path, resumed)
        for delivery in self.deliveries.values():
            delivery.start(self.outbox)
        self._housekeeper = threading.Thread(target=self._housekeeping_loop,
                                             name="eventbus-webhook-housekeeping", daemon=True)
        self._housekeeper.start()
        if self.settings.durable_accept != "off":
            self._acceptor = DurableAccept(self, bus)
            bus.pm.register(self._acceptor, name="eventbus_webhook.durable_accept")

    def close(self) -> None:
        if self._acceptor is not None:
            self._acceptor.bus.pm.unregister(self._acceptor)
            self._acceptor = None
        self._stop.set()
        for delivery in self.deliveries.values():
            delivery.stop()
        # Attempts in flight stay pending in the outbox and resume on the next start, so
        # there is no need to wait out a slow receiver's timeout here.
        deadline = time.monotonic() + 2.0
        for delivery in self.deliveries.values():
            delivery.join(deadline)
        if self._housekeeper is not None:
            self._housekeeper.join(max(0.0, deadline - time.monotonic()))
        if self.outbox is not None:
            self.outbox.close()
        self._scrub.uninstall()

    # -- the bus side ----------------------------------------------------------------
    def intake(self, event: Event) -> None:
        """Store ``event`` for its endpoints before the emitter gets its answer (called by
        :class:`DurableAccept` in the emitter's thread, before ``seq`` is assigned). Raises
        :class:`~eventbus.events.EventBusError` (code ``unavailable``) when the outbox
        cannot store it, so the client is told the event was not accepted."""
        assert self.outbox is not None, "start() opens the outbox"
        with self._intake_lock:
            rows, targets = self._rows([event])
            # Recorded even without rows, so accepts() does not filter and count it again.
            self._intake[event.id] = (time.monotonic(), ())
        if not rows:
            return
        try:
            self.outbox.enqueue_together(rows)
        except OutboxError as exc:
            with self._intake_lock:
                self._intake.pop(event.id, None)
                self.counters["intake_failed"] += 1
                failed = self.counters["intake_failed"]
            if failed % 1000 == 1:
                log.error("webhook outbox %s: could not store event %s (%s); it was refused; "
                          "%d refused so far: %s", self.outbox_path, event.id, event.type, failed, exc)
            raise EventBusError("the webhook outbox could not store the event; try again",
                                code="unavailable") from None
        with self._intake_lock:
            self._intake[event.id] = (time.monotonic(), tuple(targets))
            self._count_accepted(targets)

    def accepts(self, event: Event) -> bool:
        if event.id in self._intake:
            with self._intake_lock:
                entry = self._intake.get(event.id)
                if entry is not None and not entry[1]:
                    del self._intake[event.id]  # intake() found no endpoint to store it for
                    return False
            if entry is not None:
                return True  # stored already; the worker makes its rows due
        for delivery in self.deliveries.values():
            if delivery.accepting and delivery.endpoint.matches(event):
                return True
        # Only disabled endpoints want it: count the skip here, as send_batch never sees it.
        for delivery in self.deliveries.values():
            if delivery.endpoint.matches(event):
                delivery.counters["skipped_disabled"] += 1
        return False

    def send(self, event: Event) -> None:
        self.send_batch([event])

    def send_batch(self, events: list[Event]) -> None:
        """Make the rows of stored events due with their final body, and store the others
        (one ``FULL`` transaction per batch)."""
        assert self.outbox is not None, "start() opens the outbox"
        stored: list[tuple[Event, tuple[str, ...]]] = []
        fresh: list[Event] = []
        with self._intake_lock:
            for event in events:
                entry = self._intake.pop(event.id, None)
                if entry is None:
                    fresh.append(event)
                else:
                    stored.append((event, entry[1]))
        if stored:
            self._promote(stored)
        with self._intake_lock:
            rows, targets = self._rows(fresh)
        if not rows:
            return
        self.outbox.enqueue(rows)
        with self._intake_lock:
            self._count_accepted(targets)
        for name in targets:
            self.deliveries[name].wake()

    def _promote(self, stored: list[tuple[Event, tuple[str, ...]]]) -> None:
        assert self.outbox is not None
        now = time.time()
        rows = [(name, event.id, signing.payload(event), now + i * ORDER_STEP)
                for i, (event, names) in enumerate(stored) for name in names]
        self.outbox.promote(rows, now)
        for name in {name for _, names in stored for name in names}:
            self.deliveries[name].wake()

    def _rows(self, events: list[Event]) -> tuple[list[Row], dict[str, int]]:
        """Under ``_intake_lock``: the outbox rows for ``events`` (one per matching, enabled
        endpoint with room under ``max_pending``) and how many go to each endpoint; skips
        and refusals are counted here."""
        rows: list[Row] = []
        targets: dict[str, int] = {}
        for event in events:
            body = None
            for delivery in self.deliveries.values():
                if not delivery.endpoint.matches(event):
                    continue
                if not delivery.accepting:
                    delivery.counters["skipped_disabled"] += 1
                    continue
                held = delivery.pending + targets.get(delivery.name, 0)
                if held >= self.settings.max_pending:
                    self._refuse_full(delivery, held, event)
                    continue
                body = body or signing.payload(event)
                rows.append((delivery.name, event.id, event.type, body, event.created))
                targets[delivery.name] = targets.get(delivery.name, 0) + 1
        return rows, targets

    def _refuse_full(self, delivery: EndpointDelivery, held: int, event: Event) -> None:
        delivery.counters["refused_outbox_full"] += 1
        if delivery.counters["refused_outbox_full"] % 1000 == 1:
            log.warning("webhook %s: outbox holds %d pending deliveries (max_pending); "
                        "refused event %s; %d refused so far", delivery.name,
                        held, event.id, delivery.counters["refused_outbox_full"])

    def _count_accepted(self, targets: dict[str, int]) -> None:
        """Under ``_intake_lock``: emitters and the worker both add."""
        for name, count in targets.items():
            delivery = self.deliveries[name]
            delivery.pending += count
            delivery.counters["accepted"] += count

    # -- housekeeping ------------------------------------------------------------------
    def _housekeeping_loop(self) -> None:
        while not self._stop.wait(self.settings.housekeeping_interval):
            try:
                self._housekeeping()
            except Exception:  # keep trying; the next round may succeed
                log.exception("webhook outbox housekeeping failed")

    def _housekeeping(self) -> None:
        """Apply the outbox bounds, and pick up changes made by ``eventbus webhook``
        commands in another process (re-enabled endpoints, redeliveries)."""
        outbox = self.outbox
        if outbox is None or outbox.closed:
            return
        now = time.time()
        self._promote_stale_intake(outbox, now)
        expired = outbox.expire(self.settings.max_age, now)
        if expired:
            self.counters["expired"] += expired
            log.warning("webhook outbox: %d deliveries older than %.0fs became dead letters",
                        expired, self.settings.max_age)
        pruned = outbox.prune_dead(self.settings.dead_letter_max, self.settings.dead_letter_max_age, now)
        if pruned:
            self.counters["dead_letters_pruned"] += pruned
            log.warning("webhook outbox: pruned %d dead letters (dead_letter_max %d, dead_letter_max_age %.0fs)",
                        pruned, self.settings.dead_letter_max, self.settings.dead_letter_max_age)
        states = outbox.endpoint_states()
        counts = outbox.counts()
        for name, delivery in self.deliveries.items():
            was_disabled = delivery.disabled_reason is not None
            delivery.restore(states.get(name, {}))
            delivery.pending = counts.get(name, {}).get("pending", 0)
            delivery.dead = counts.get(name, {}).get("dead", 0)
            if was_disabled and delivery.accepting:
                log.info("webhook %s: enabled again", name)
                delivery.wake()

    def _promote_stale_intake(self, outbox: Outbox, now: float) -> None:
        """Rows stored by intake() that the worker never made due (its queue overflowed,
        or a batch failed) are delivered as stored, with ``seq`` null."""
        horizon = time.monotonic() - INTAKE_GRACE
        with self._intake_lock:
            for event_id in [i for i, (at, _) in self._intake.items() if at < horizon]:
                del self._intake[event_id]
        promoted = outbox.promote_intake(now - INTAKE_GRACE, now)
        if promoted:
            self.counters["unsequenced"] += promoted
            log.warning("webhook outbox: %d accepted deliveries never reached the webhook worker "
                        "within %gs (see its dropped count); delivering them without seq",
                        promoted, INTAKE_GRACE)
            for delivery in self.deliveries.values():
                delivery.wake()

    def _oldest_pending(self) -> dict[str, float]:
        with self._oldest_lock:
            at, oldest = self._oldest
            if time.monotonic() - at > OLDEST_TTL:
                if self.outbox is not None and not self.outbox.closed:
                    oldest = self.outbox.oldest_pending()
                self._oldest = (time.monotonic(), oldest)
            return oldest

    # -- status ------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        oldest = self._oldest_pending()
        now = time.time()
        endpoints = {name: d.health(oldest.get(name), now)
                     for name, d in self.deliveries.items()}
        states = [e["state"] for e in endpoints.values()]
        if not endpoints or all(s == "ok" for s in states):
            status = "ok"
        elif all(s == "disabled" for s in states):
            status = "down"
        else:
            status = "degraded"
        totals = {key: sum(e[key] for e in endpoints.values())
                  for key in ("pending", "dead_letters", "in_flight", "accepted", "attempts", "delivered",
                              "retries", "failures", "timeouts", "dead_lettered", "refused_outbox_full",
                              "skipped_disabled")}
        return {
            "status": status,
            **totals,
            "endpoints_total": len(endpoints),
            "endpoints_disabled": states.count("disabled"),
            "endpoints_failing": states.count("failing"),
            "durable_accept": self.settings.durable_accept,
            "intake_waiting": len(self._intake),
            "group_commits": self.outbox.group_commits if self.outbox is not None else 0,
            **self.counters,
            "outbox": {"path": str(self.outbox_path),
                       "bytes": self.outbox.size_bytes() if self.outbox is not None else 0,
                       "max_pending": self.settings.max_pending, "max_age_s": self.settings.max_age},
            "endpoints": endpoints,
        }
