"""Scale-out through Redis Streams: shared history and seq, ordered fan-out, and an ingest
stream for agents in other processes.

Keys (all under one hash tag, so they live in one cluster slot):

- ``{eventbus}:epoch`` - the history epoch; a new one appears when Redis loses its data.
- ``{eventbus}:seq`` - a hash of the last ``seq`` per room.
- ``{eventbus}:room:<room>`` - the room's history; entry id ``<seq>-0``, trimmed by MAXLEN.
- ``{eventbus}:fanout`` - every event in one total order; each server tails it and emits
  to its own Socket.IO clients, so every server sees each room in ``seq`` order.
- ``{eventbus}:ingest`` - events from agent processes, consumed by the servers through the
  consumer group ``servers`` (each event handled by exactly one server; entries a dead
  server had claimed are reclaimed with XAUTOCLAIM).

A Lua script assigns ``seq`` and appends to the room and fan-out streams atomically.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from .events import Event, EventBusError
from .history import HistoryRange

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger("eventbus.redis")

PUBLISH_LUA = """
local epoch = redis.call('GET', KEYS[1])
if epoch ~= ARGV[1] then return {-1, epoch or ''} end
if ARGV[9] ~= '' then
  if not redis.call('SET', KEYS[5], '1', 'NX', 'EX', 600) then return {0, 0} end
end
local seq = 0
if ARGV[4] == '1' then
  seq = redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], seq .. '-0', 'e', ARGV[3], 't', ARGV[10])
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'e', ARGV[3], 's', seq, 'o', ARGV[7], 'l', ARGV[8], 'p', ARGV[1])
return {1, seq}
"""


class RedisUnavailable(EventBusError):
    code = "redis_unavailable"


def _import_redis() -> Any:
    try:
        import redis
    except ImportError:
        raise EventBusError("EVENTBUS_REDIS_URL is set but redis is not installed: "
                            "pip install 'eventbus[redis]'", code="config_error") from None
    return redis


class RedisHistory:
    """The :class:`~eventbus.history.History` interface over per-room streams."""

    def __init__(self, link: RedisLink, size: int, max_age: float):
        self.link = link
        self.size = size
        self.max_age = max_age

    @property
    def epoch(self) -> str:
        return self.link.epoch

    def append(self, event: Event, keep: bool = True) -> None:  # pragma: no cover - the bus publishes
        raise NotImplementedError("events reach Redis through RedisLink.publish")

    def since(self, room: str, after: int, limit: int | None = None) -> HistoryRange:
        link = self.link
        try:
            pipe = link.client.pipeline(transaction=False)
            pipe.hget(link.key("seq"), room)
            pipe.xrange(link.room_key(room), min="-", max="+", count=1)
            pipe.xrange(link.room_key(room), min=f"{after + 1}-0", max="+", count=limit)
            latest_raw, first_raw, rows = pipe.execute()
        except link.errors as exc:
            link.failed(exc)
            raise RedisUnavailable(f"history is unavailable: {exc}") from None
        latest = int(latest_raw or 0)
        cutoff = time.time() - self.max_age
        events = []
        for entry_id, fields in rows:
            if float(fields.get("t", 0)) < cutoff:
                continue
            event = Event.from_json(fields["e"])
            event.seq = int(entry_id.split("-")[0])
            events.append(event)
        if after > latest or after < 0:
            return HistoryRange(room, self.epoch, latest, [], complete=False)
        first = int(first_raw[0][0].split("-")[0]) if first_raw else latest + 1
        if events:
            first = max(first, events[0].seq or first)
        elif rows:
            first = latest + 1  # everything after `after` has aged out
        return HistoryRange(room, self.epoch, latest, events, complete=after >= first - 1)

    def latest_seq(self, room: str) -> int:
        try:
            return int(self.link.client.hget(self.link.key("seq"), room) or 0)
        except self.link.errors as exc:
            self.link.failed(exc)
            return 0

    def rooms(self) -> dict[str, int]:
        try:
            return {room: int(seq) for room, seq in self.link.client.hgetall(self.link.key("seq")).items()}
        except self.link.errors as exc:
            self.link.failed(exc)
            return {}


class RedisLink:
    """One process's connection to the shared streams, with its health and buffers.

    :param on_fanout: called with each event read from the fan-out stream (server role).
    :param on_ingest: called with each event taken from the ingest stream (server role);
        it must publish the event and return; the entry is acknowledged afterwards.
    """

    def __init__(self, config: Config, prefix: str | None = None):
        redis = _import_redis()
        self.redis = redis
        self.errors = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
        env = config.env or {}
        self.prefix = prefix or env.get("EVENTBUS_REDIS_PREFIX") or "{eventbus}"
        self.url = config.redis_url
        self.client = redis.Redis.from_url(
            self.url, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=2.0,
            health_check_interval=10)
        # Blocking reads get connections of their own, one per loop.
        self._readers = {
            name: redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=10.0,
                                       socket_connect_timeout=2.0)
            for name in ("fanout", "ingest")
        }
        self.history_size = config.history_size
        self.fanout_size = int(env.get("EVENTBUS_REDIS_FANOUT_MAXLEN", "100000"))
        self.ingest_size = int(env.get("EVENTBUS_REDIS_INGEST_MAXLEN", "100000"))
        self.claim_idle_ms = int(float(env.get("EVENTBUS_REDIS_CLAIM_IDLE", "30")) * 1000)
        self.buffer_size = int(env.get("EVENTBUS_REDIS_BUFFER", "10000"))
        self.server_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._script = self.client.register_script(PUBLISH_LUA)
        self.epoch = ""
        self.state = "connecting"
        self.last_error: str | None = None
        self.counters = {"published": 0, "fanout_read": 0, "ingested": 0, "ingest_sent": 0,
                         "reclaimed": 0, "buffered": 0, "flushed": 0, "dropped": 0,
                         "duplicates": 0, "errors": 0, "reconnects": 0, "epoch_changes": 0}
        # Events accepted while Redis was away: (event, keep, delivered_locally), flushed in order.
        self.pending: deque[tuple[Event, bool, bool]] = deque()
        self._pending_lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._retry_at = 0.0
        self.on_fanout: Callable[[Event], None] | None = None
        self.on_ingest: Callable[[Event], None] | None = None
        self.on_epoch_change: Callable[[str], None] | None = None
        self.history = RedisHistory(self, config.history_size, config.history_max_age)
        try:
            self._load_epoch()
            self.state = "ok"
        except self.errors as exc:
            self.failed(exc)

    def key(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    def room_key(self, room: str) -> str:
        return f"{self.prefix}:room:{room}"

    # -- health ---------------------------------------------------------------------
    def failed(self, exc: BaseException) -> None:
        self.counters["errors"] += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.state != "degraded":
            self.state = "degraded"
            log.warning("redis %s unavailable, buffering: %s", _redact(self.url), self.last_error)
        self._retry_at = time.monotonic() + 0.5

    def recovered(self) -> None:
        if self.state == "degraded":
            self.counters["reconnects"] += 1
            log.warning("redis %s is back; %d buffered event(s) to flush", self.url, len(self.pending))
        self.state = "ok"
        self.last_error = None

    @property
    def available(self) -> bool:
        return self.state == "ok" or time.monotonic() >= self._retry_at

    def health(self) -> dict[str, Any]:
        return {"status": "ok" if self.state == "ok" else "degraded", "url": _redact(self.url),
                "server_id": self.server_id, "epoch": self.epoch, "pending": len(self.pending),
                "last_error": self.last_error, **self.counters}

    def _load_epoch(self) -> None:
        key = self.key("epoch")
        epoch = self.client.get(key)
        if epoch is None:
            self.client.set(key, uuid.uuid4().hex[:16], nx=True)
            epoch = self.client.get(key)
        if self.epoch and epoch != self.epoch:
            self.counters["epoch_changes"] += 1
            log.warning("redis history epoch changed (%s -> %s): clients will be asked to resync",
                        self.epoch, epoch)
        self.epoch = epoch or ""

    # -- server role: publish with seq ----------------------------------------------
    def publish(self, event: Event, keep: bool, delivered_locally: bool = False, dedupe: bool = False) -> bool:
        """Assign ``seq`` and append to the room and fan-out streams. Returns False for a
        duplicate (an ingest entry handled twice). Raises :class:`RedisUnavailable`."""
        if not self.available:
            raise RedisUnavailable(self.last_error or "redis is unavailable")
        body = _envelope_json(event)
        for _ in range(2):
            try:
                status, value = self._script(
                    keys=[self.key("epoch"), self.key("seq"), self.key("fanout"), self.room_key(event.room),
                          self.key(f"id:{event.id}")],
                    args=[self.epoch, event.room, body, "1" if keep else "0", self.history_size,
                          self.fanout_size, self.server_id, "1" if delivered_locally else "0",
                          "1" if dedupe else "", repr(event.created)])
            except self.errors as exc:
                self.failed(exc)
                raise RedisUnavailable(str(exc)) from None
            except self.redis.exceptions.ResponseError as exc:
                raise EventBusError(f"redis refused the event: {exc}", code="redis_error") from None
            if status == -1:  # Redis lost its data (or another epoch began): adopt the new one
                try:
                    self._load_epoch()
                except self.errors as exc:
                    self.failed(exc)
                    raise RedisUnavailable(str(exc)) from None
                continue
            self.recovered()
            if status == 0:
                self.counters["duplicates"] += 1
                return False
            self.counters["published"] += 1
            event.seq = int(value) if keep else None
            return True
        raise RedisUnavailable("the history epoch keeps changing")

    def buffer(self, event: Event, keep: bool, delivered_locally: bool) -> None:
        """Keep an event for Redis until it returns (bounded; the oldest is dropped)."""
        with self._pending_lock:
            if len(self.pending) >= self.buffer_size:
                dropped, _, _ = self.pending.popleft()
                self.counters["dropped"] += 1
                log.warning("redis buffer full: dropped event %s (%d dropped so far)",
                            dropped.id, self.counters["dropped"])
            self.pending.append((event, keep, delivered_locally))
            self.counters["buffered"] += 1
        self._wake.set()

    # -- background tasks -------------------------------------------------------------
    def start(self, role: str, spawn: Callable[[Callable[[], None]], Any]) -> None:
        spawn(self._guard(self._flush_loop if role == "producer" else self._server_flush_loop))
        if role == "server":
            spawn(self._guard(self._fanout_loop))
            spawn(self._guard(self._ingest_loop))

    def close(self, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline and self.state == "ok":
            self._wake.set()
            time.sleep(0.01)
        self._closing = True
        self._wake.set()
        if self.pending:
            log.warning("redis: %d buffered event(s) not sent at close", len(self.pending))
        for client in (self.client, *self._readers.values()):
            try:
                client.close()
            except Exception:  # noqa: BLE001
                pass

    def _backoff(self, attempt: int) -> float:
        return min(1.0, 0.05 * (2 ** min(attempt, 5)))

    def _guard(self, loop: Callable[[], None]) -> Callable[[], None]:
        """Run a background loop that survives anything: log, back off, go on."""

        def run() -> None:
            attempt = 0
            while not self._closing:
                try:
                    loop()
                    return
                except Exception as exc:  # noqa: BLE001
                    if self._closing:
                        return
                    attempt += 1
                    self.failed(exc)
                    log.warning("redis loop %s restarting after %s", loop.__name__, self.last_error,
                                exc_info=not isinstance(exc, self.errors))
                    self._sleep(self._backoff(attempt))

        return run

    def _wait_for_pending(self) -> bool:
        """Block up to a second for buffered events; True when there are some."""
        if self.pending:
            return True
        self._wake.wait(1.0)
        self._wake.clear()
        return bool(self.pending)

    def _forget(self, sent: list[tuple[Event, bool, bool]]) -> None:
        """Remove what was sent from the head of the buffer. The overflow may have dropped
        some of it meanwhile, so entries are matched by identity, not counted."""
        done = {id(item) for item in sent}
        with self._pending_lock:
            while self.pending and id(self.pending[0]) in done:
                self.pending.popleft()

    def _flush_loop(self) -> None:
        """Producer role: send queued events to the ingest stream."""
        attempt = 0
        while not self._closing:
            if not self._wait_for_pending():
                continue
            with self._pending_lock:
                batch = list(itertools.islice(self.pending, 500))
            try:
                pipe = self.client.pipeline(transaction=False)
                for event, _keep, _local in batch:
                    pipe.xadd(self.key("ingest"), {"e": _envelope_json(event)},
                              maxlen=self.ingest_size, approximate=True)
                pipe.execute()
            except self.errors as exc:
                self.failed(exc)
                attempt += 1
                self._sleep(self._backoff(attempt))
                continue
            attempt = 0
            self.recovered()
            self._forget(batch)
            self.counters["ingest_sent"] += len(batch)
            self.counters["flushed"] += len(batch)

    def _server_flush_loop(self) -> None:
        """Server role: publish events accepted while Redis was away, oldest first."""
        attempt = 0
        while not self._closing:
            if not self._wait_for_pending():
                continue
            item = self.pending[0]
            event, keep, local = item
            try:
                self._retry_at = 0.0
                self.publish(event, keep, delivered_locally=local)
            except RedisUnavailable:
                attempt += 1
                self._sleep(self._backoff(attempt))
                continue
            except EventBusError:
                log.exception("redis refused buffered event %s; dropped", event.id)
                self.counters["dropped"] += 1
            attempt = 0
            self._forget([item])
            self.counters["flushed"] += 1

    def _sleep(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def _fanout_loop(self) -> None:
        """Server role: tail the fan-out stream and hand each event to the local clients."""
        reader = self._readers["fanout"]
        last_id: str | None = None
        stream_epoch = self.epoch
        attempt = 0
        while not self._closing:
            try:
                if last_id is None:
                    newest = reader.xrevrange(self.key("fanout"), count=1)
                    last_id = newest[0][0] if newest else "0-0"
                rows = reader.xread({self.key("fanout"): last_id}, count=500, block=1000)
            except self.errors as exc:
                self.failed(exc)
                attempt += 1
                self._sleep(self._backoff(attempt))
                continue
            except self.redis.exceptions.ResponseError as exc:  # e.g. the stream was recreated
                log.warning("redis fan-out read failed: %s", exc)
                last_id = None
                continue
            attempt = 0
            for _stream, entries in rows or ():
                for entry_id, fields in entries:
                    last_id = entry_id
                    entry_epoch = fields.get("p") or stream_epoch
                    if entry_epoch != stream_epoch:
                        # Redis lost its data: seq starts again, so clients must resync first.
                        stream_epoch = entry_epoch
                        if self.epoch != entry_epoch:
                            self.counters["epoch_changes"] += 1
                            log.warning("redis history epoch changed to %s", entry_epoch)
                            self.epoch = entry_epoch
                        if self.on_epoch_change is not None:
                            self.on_epoch_change(entry_epoch)
                    if fields.get("l") == "1" and fields.get("o") == self.server_id:
                        continue  # this server already delivered it while Redis was away
                    try:
                        event = Event.from_json(fields["e"])
                    except EventBusError as exc:
                        log.warning("skipping unreadable fan-out entry %s: %s", entry_id, exc)
                        continue
                    seq = int(fields.get("s") or 0)
                    event.seq = seq or None
                    event.origin = "remote"
                    self.counters["fanout_read"] += 1
                    if self.on_fanout is not None:
                        self.on_fanout(event)

    def _ingest_loop(self) -> None:
        """Server role: take agents' events from the ingest stream, exactly one server each."""
        reader = self._readers["ingest"]
        stream, group = self.key("ingest"), "servers"
        created = False
        attempt = 0
        next_claim = 0.0
        backlog = True  # first re-read entries this consumer was given but never acknowledged
        while not self._closing:
            try:
                if not created:
                    try:
                        reader.xgroup_create(stream, group, id="$", mkstream=True)
                    except self.redis.exceptions.ResponseError as exc:
                        if "BUSYGROUP" not in str(exc):
                            raise
                    created = True
                entries: list[tuple[str, dict[str, str]]] = []
                if time.monotonic() >= next_claim:
                    next_claim = time.monotonic() + max(1.0, self.claim_idle_ms / 3000)
                    claimed = reader.xautoclaim(stream, group, self.server_id,
                                                     min_idle_time=self.claim_idle_ms, count=100)
                    entries = [e for e in claimed[1] if e and e[1] is not None]
                    self.counters["reclaimed"] += len(entries)
                if not entries:
                    rows = reader.xreadgroup(group, self.server_id, {stream: "0" if backlog else ">"},
                                                  count=100, block=None if backlog else 1000)
                    entries = [e for _s, items in rows or () for e in items]
                    if backlog and not entries:
                        backlog = False
                        continue
            except self.errors as exc:
                self.failed(exc)
                attempt += 1
                self._sleep(self._backoff(attempt))
                continue
            except self.redis.exceptions.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    created = False  # Redis lost the stream; recreate the group
                    continue
                raise
            attempt = 0
            done = []
            for entry_id, fields in entries:
                try:
                    event = Event.from_json(fields["e"])
                    event.origin = "remote"
                    if self.on_ingest is not None:
                        self.on_ingest(event)
                    self.counters["ingested"] += 1
                except RedisUnavailable:
                    break  # leave it pending; it is retried (or reclaimed) later
                except Exception:  # noqa: BLE001 - a bad entry must not stop the consumer
                    log.exception("ingest entry %s refused; acknowledged and skipped", entry_id)
                done.append(entry_id)
            if done:
                try:
                    reader.xack(stream, group, *done)
                except self.errors as exc:
                    self.failed(exc)


def _envelope_json(event: Event) -> str:
    raw = event.to_dict()
    raw["seq"] = None  # the stream entry carries seq; the envelope is the same everywhere else
    return json.dumps(raw, separators=(",", ":"), ensure_ascii=False)


def _redact(url: str | None) -> str:
    if not url or "@" not in url:
        return url or ""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
