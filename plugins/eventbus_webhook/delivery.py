"""Delivery to one endpoint: its own threads and HTTP sessions pick due rows from the outbox,
POST them signed, and record success, retry, dead letter or disable. Nothing here is shared
with another endpoint, so a slow receiver only ever holds up itself."""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from . import signing
from .redaction import scrub

if TYPE_CHECKING:
    import requests

    from .outbox import Delivery, Outbox
    from .settings import Endpoint, WebhookSettings

log = logging.getLogger("eventbus.webhook")

#: Statuses whose ``Retry-After`` header sets the next attempt (and pauses the endpoint).
RETRY_AFTER_STATUSES = frozenset({429, 502, 503, 504})
#: Longest idle wait, so rows rescheduled by ``eventbus webhook redeliver`` in another
#: process, or re-enabled endpoints, are noticed without a wake-up.
IDLE_POLL = 1.0
MAX_RESPONSE_BYTES = 64 * 1024


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment is None:
        return None
    return max(0.0, moment.timestamp() - now)


def new_session() -> requests.Session:
    try:
        import requests
    except ImportError:  # pragma: no cover - depends on the installation
        raise ImportError("webhook delivery needs requests: pip install 'eventbus[webhook]'") from None
    session = requests.Session()
    session.headers["User-Agent"] = "eventbus-webhook/1"
    return session


class EndpointDelivery:
    """Counters, state and worker threads of one endpoint. Construction is free of
    resources; :meth:`start` opens sessions and threads."""

    def __init__(self, endpoint: Endpoint, settings: WebhookSettings):
        self.endpoint = endpoint
        self.settings = settings
        self.outbox: Outbox | None = None
        self.disabled_reason: str | None = None if endpoint.enabled else "disabled in configuration"
        self.paused_until = 0.0
        # Kept in step with the outbox by this process and re-read by housekeeping (which
        # also sees changes made by `eventbus webhook` commands), so health() needs no query.
        self.pending = 0
        self.dead = 0
        self.counters = {"accepted": 0, "attempts": 0, "delivered": 0, "retries": 0, "failures": 0,
                         "timeouts": 0, "dead_lettered": 0, "refused_outbox_full": 0,
                         "skipped_disabled": 0, "disabled_by_receiver": 0}
        self.last_success_at: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_status: int | None = None
        self._cond = threading.Condition(threading.Lock())
        self._ready: deque[Delivery] = deque()
        self._in_flight: set[int] = set()
        self._woken = False
        self._stopping = False
        self._threads: list[threading.Thread] = []

    @property
    def name(self) -> str:
        return self.endpoint.name

    @property
    def accepting(self) -> bool:
        return self.disabled_reason is None

    # -- lifecycle -------------------------------------------------------------------
    def start(self, outbox: Outbox) -> None:
        self.outbox = outbox
        for i in range(self.endpoint.concurrency):
            thread = threading.Thread(target=self._run, name=f"eventbus-webhook-{self.name}-{i}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def wake(self) -> None:
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def join(self, deadline: float) -> None:
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def restore(self, state: dict[str, Any]) -> None:
        """Take the persisted state (disable, last success/error) from the outbox."""
        if state.get("disabled") and self.endpoint.enabled:
            self.disabled_reason = state.get("disabled_reason") or "disabled"
        elif self.endpoint.enabled:
            self.disabled_reason = None
        for key in ("last_success_at", "last_error", "last_error_at", "last_status"):
            if getattr(self, key) is None and state.get(key) is not None:
                setattr(self, key, state[key])
        # An outbox written by an older version may hold error texts with the raw URL.
        self.last_error = scrub(self.last_error, self.endpoint.url)

    # -- the worker loop -------------------------------------------------------------
    def _run(self) -> None:
        session = new_session()
        try:
            while True:
                delivery = self._next()
                if delivery is None:
                    return
                try:
                    self._attempt(session, delivery)
                except Exception:  # a bookkeeping bug must not kill the endpoint
                    log.exception("webhook %s: attempt of %s failed unexpectedly", self.name, delivery.event_id)
                finally:
                    with self._cond:
                        self._in_flight.discard(delivery.id)
        finally:
            session.close()

    def _next(self) -> Delivery | None:
        """The next due delivery, waiting as long as needed; ``None`` when stopping."""
        assert self.outbox is not None
        with self._cond:
            while not self._stopping:
                now = time.time()
                if self.disabled_reason is not None:
                    self._cond.wait(IDLE_POLL)
                    if self.endpoint.enabled and not self.outbox.is_disabled(self.name):
                        log.info("webhook %s: enabled again", self.name)
                        self.disabled_reason = None
                    continue
                if self.paused_until > now:
                    self._cond.wait(min(self.paused_until - now, IDLE_POLL))
                    continue
                if not self._ready:
                    self._woken = False
                    batch = self.outbox.due(self.name, now, self._in_flight,
                                            limit=max(8, 4 * self.endpoint.concurrency))
                    self._ready.extend(batch)
                    self._in_flight.update(d.id for d in batch)
                if self._ready:
                    return self._ready.popleft()
                if self._woken:
                    continue
                next_at = self.outbox.next_due(self.name, self._in_flight)
                wait = IDLE_POLL if next_at is None else min(max(next_at - now, 0.001), IDLE_POLL)
                self._cond.wait(wait)
            return None

    def _attempt(self, session: requests.Session, delivery: Delivery) -> None:
        import requests

        endpoint = self.endpoint
        headers = dict(endpoint.headers)
        headers.update(signing.headers(endpoint.keys, delivery.event_id, delivery.body))
        self.counters["attempts"] += 1
        status: int | None = None
        retry_after: float | None = None
        try:
            response = session.post(endpoint.url, data=delivery.body.encode("utf-8"), headers=headers,
                                    timeout=endpoint.timeout, allow_redirects=False, stream=True)
            try:
                status = response.status_code
                # Reading a bounded amount lets the connection go back to the pool.
                for _ in response.iter_content(MAX_RESPONSE_BYTES):
                    break
                retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
            finally:
                response.close()
            error = None if 200 <= status < 300 else f"HTTP {status}"
        except requests.Timeout:
            self.counters["timeouts"] += 1
            error = f"timeout after {endpoint.timeout:g}s"
        except requests.RequestException as exc:
            # requests puts the URL (query and all) into its messages: keep credentials out.
            error = f"{type(exc).__name__}: {scrub(str(exc), endpoint.url)}"
        now = time.time()
        if error is None:
            self._succeeded(delivery, status, now)
        else:
            self._failed(delivery, error, status, retry_after, now)

    def _succeeded(self, delivery: Delivery, status: int | None, now: float) -> None:
        assert self.outbox is not None
        self.outbox.delivered(delivery, status or 0, now)
        if self.last_error_at is not None and (self.last_success_at or 0) < self.last_error_at:
            log.info("webhook %s: delivering again (%s)", self.name, self.endpoint.display_url)
        self.counters["delivered"] += 1
        self.pending = max(0, self.pending - 1)
        self.last_success_at, self.last_status = now, status

    def _failed(self, delivery: Delivery, error: str, status: int | None,
                retry_after: float | None, now: float) -> None:
        assert self.outbox is not None
        attempts = delivery.attempts + 1
        self.counters["failures"] += 1
        if (self.last_success_at or 0) >= (self.last_error_at or 0):
            log.warning("webhook %s: delivery to %s failing: %s", self.name, self.endpoint.display_url, error)
        self.last_error, self.last_error_at, self.last_status = error, now, status
        if status == 410:
            reason = f"receiver answered 410 Gone at {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(now))}Z"
            self.outbox.failed(delivery, attempts=attempts, error=f"{error}: endpoint disabled",
                               status_code=status, now=now, next_attempt_at=None)
            self.outbox.disable(self.name, reason, now)
            self.disabled_reason = reason
            self.counters["disabled_by_receiver"] += 1
            self.counters["dead_lettered"] += 1
            self.pending = max(0, self.pending - 1)
            self.dead += 1
            log.error("webhook %s: %s; endpoint disabled (re-enable with `eventbus webhook enable %s`)",
                      self.name, reason, self.name)
            return
        schedule = self.endpoint.retry_schedule
        if attempts >= len(schedule):
            self.outbox.failed(delivery, attempts=attempts, error=error, status_code=status, now=now,
                               next_attempt_at=None)
            self.counters["dead_lettered"] += 1
            self.pending = max(0, self.pending - 1)
            self.dead += 1
            log.warning("webhook %s: event %s (%s) is a dead letter after %d attempts; last error: %s",
                        self.name, delivery.event_id, delivery.event_type, attempts, error)
            return
        if status in RETRY_AFTER_STATUSES and retry_after is not None:
            delay = min(retry_after, self.settings.max_retry_after)
            # The receiver asked the whole endpoint to back off, not just this event.
            self.paused_until = max(self.paused_until, now + delay)
        else:
            jitter = self.settings.jitter
            delay = schedule[attempts] * self.settings.schedule_scale * random.uniform(1 - jitter, 1 + jitter)
        self.outbox.failed(delivery, attempts=attempts, error=error, status_code=status, now=now,
                           next_attempt_at=now + delay)
        self.counters["retries"] += 1
        log.info("webhook %s: event %s attempt %d failed (%s); next in %.1fs",
                 self.name, delivery.event_id, attempts, error, delay)

    # -- status ------------------------------------------------------------------------
    def health(self, oldest_pending: float | None, now: float) -> dict[str, Any]:
        if self.disabled_reason is not None:
            state = "disabled"
        elif self.last_error_at is not None and (self.last_success_at or 0) < self.last_error_at:
            state = "failing"
        else:
            state = "ok"
        return {
            "url": self.endpoint.display_url,
            "state": state,
            # 0/1 rather than a bool, so /metrics (numbers only) shows it too.
            "disabled": int(self.disabled_reason is not None),
            "disabled_reason": self.disabled_reason,
            "pending": self.pending,
            "dead_letters": self.dead,
            "in_flight": len(self._in_flight),
            "oldest_pending_age_s": None if oldest_pending is None else round(now - oldest_pending, 3),
            "paused_for_s": round(self.paused_until - now, 3) if self.paused_until > now else 0,
            "last_success_at": self.last_success_at,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "last_status": self.last_status,
            **self.counters,
        }
