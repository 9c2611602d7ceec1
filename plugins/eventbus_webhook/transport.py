"""The ``webhook`` transport: writes each accepted event to the durable outbox (one row per
matching endpoint) and wakes that endpoint's delivery threads; the bus never waits on HTTP."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eventbus.transport import Transport

from . import signing
from .delivery import EndpointDelivery
from .outbox import Outbox

if TYPE_CHECKING:
    from eventbus.bus import EventBus
    from eventbus.events import Event

    from .settings import WebhookSettings

log = logging.getLogger("eventbus.webhook")

#: How long health() reuses the oldest-pending query, so a busy /metrics scrape stays cheap.
OLDEST_TTL = 1.0


class WebhookTransport(Transport):
    """One transport for every configured endpoint."""

    name = "webhook"

    def __init__(self, settings: WebhookSettings, data_dir: str | Path):
        self.settings = settings
        self.outbox_path = Path(data_dir) / settings.outbox_file
        self.deliveries = {e.name: EndpointDelivery(e, settings) for e in settings.endpoints}
        self.outbox: Outbox | None = None
        self.counters = {"expired": 0, "dead_letters_pruned": 0}
        self._stop = threading.Event()
        self._housekeeper: threading.Thread | None = None
        self._oldest: tuple[float, dict[str, float]] = (0.0, {})
        self._oldest_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------
    def start(self, bus: EventBus) -> None:
        self.outbox = Outbox(self.outbox_path).open()
        self._housekeeping()
        resumed = sum(d.pending for d in self.deliveries.values())
        if resumed:
            log.info("webhook outbox %s: resuming %d pending deliveries", self.outbox_path, resumed)
        for delivery in self.deliveries.values():
            delivery.start(self.outbox)
        self._housekeeper = threading.Thread(target=self._housekeeping_loop,
                                             name="eventbus-webhook-housekeeping", daemon=True)
        self._housekeeper.start()

    def close(self) -> None:
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

    # -- the bus side ----------------------------------------------------------------
    def accepts(self, event: Event) -> bool:
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
        assert self.outbox is not None, "start() opens the outbox"
        rows: list[tuple[str, str, str, str, float]] = []
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
                    delivery.counters["refused_outbox_full"] += 1
                    if delivery.counters["refused_outbox_full"] % 1000 == 1:
                        log.warning("webhook %s: outbox holds %d pending deliveries (max_pending); "
                                    "refused event %s; %d refused so far", delivery.name,
                                    held, event.id, delivery.counters["refused_outbox_full"])
                    continue
                body = body or signing.payload(event)
                rows.append((delivery.name, event.id, event.type, body, event.created))
                targets[delivery.name] = targets.get(delivery.name, 0) + 1
        if not rows:
            return
        self.outbox.enqueue(rows)
        for name, count in targets.items():
            delivery = self.deliveries[name]
            delivery.pending += count
            delivery.counters["accepted"] += count
            delivery.wake()

    # -- housekeeping ------------------------------------------------------------------
    def _housekeeping_loop(self) -> None:
        while not self._stop.wait(self.settings.housekeeping_interval):
            try:
                self._housekeeping()
            except Exception:  # noqa: BLE001 - keep trying; the next round may succeed
                log.exception("webhook outbox housekeeping failed")

    def _housekeeping(self) -> None:
        """Apply the outbox bounds, and pick up changes made by ``eventbus webhook``
        commands in another process (re-enabled endpoints, redeliveries)."""
        outbox = self.outbox
        if outbox is None or outbox.closed:
            return
        now = time.time()
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
            **self.counters,
            "outbox": {"path": str(self.outbox_path),
                       "bytes": self.outbox.size_bytes() if self.outbox is not None else 0,
                       "max_pending": self.settings.max_pending, "max_age_s": self.settings.max_age},
            "endpoints": endpoints,
        }
