"""Scale-out through Redis Streams: shared history and seq, ordered fan-out, and a
partitioned ingest for agents in other processes.

Keys (all under one hash tag, so they live in one cluster slot):

- ``{eventbus}:epoch`` - the history epoch; a new one appears when Redis loses its data.
- ``{eventbus}:seq`` - a hash of the last ``seq`` per room.
- ``{eventbus}:room:<room>`` - the room's history; entry id ``<seq>-0``, trimmed by MAXLEN.
- ``{eventbus}:fanout`` - every event in one total order; each server tails it and emits
  to its own Socket.IO clients, so every server sees each room in ``seq`` order.
- ``{eventbus}:id:<event id>`` - the ``seq`` an event was published with (ten minutes):
  publishing is idempotent by event id, whatever path brings an event twice.
- ``{eventbus}:ingest:<k>`` (k < :data:`INGEST_PARTITIONS`) - events from agent processes.
  A producer appends each event to the partition of ``hash(producer, room)``, so one
  producer's events to one room stay in one stream, in the order it sent them.
- ``{eventbus}:ingest:<k>:lease`` - the server consuming partition ``k`` (``SET NX PX``,
  renewed while it lives); ``{eventbus}:ingest:<k>:cursor`` - the last entry handled,
  moved by the same script that publishes the entry. A server that takes a partition over
  continues at the cursor, so it finishes its predecessor's entries, in order, first.
- ``{eventbus}:servers`` - live servers (scored by lease expiry), to share the partitions.

Lua scripts assign ``seq`` and append to the room and fan-out streams atomically, append a
producer's batch after checking Redis still has what it sent before, and hand out the
partitions.
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
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from .events import Event, EventBusError
from .history import HistoryRange
from .redact import redact_url

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger("eventbus.redis")

#: Ingest partitions. Producers and servers must agree, so this is not a setting.
INGEST_PARTITIONS = 16
#: Seconds a producer keeps what it sent, to send it again if Redis turns out to have lost
#: it (a restart without persistence, or AOF ``everysec`` losing its last second or two).
RESEND_WINDOW = 3.0
#: Seconds the per-event marker ``id:<event id>`` is kept.
MARKER_TTL = 600
#: Event ids a server remembers from the fan-out stream (count, seconds): it does not publish
#: again what its clients already got when Redis forgot it.
RECENT_IDS = (20000, 900.0)

PUBLISH_LUA = """
local epoch = redis.call('GET', KEYS[1])
if epoch ~= ARGV[1] then return {-1, epoch or ''} end
local ingest = ARGV[13] ~= ''
if ingest and redis.call('GET', KEYS[6]) ~= ARGV[7] then return {-3, 0} end
local seen = redis.call('GET', KEYS[5])
if seen then
  if ingest then redis.call('SET', KEYS[7], ARGV[13]) end
  return {0, tonumber(seen) or 0}
end
local seq, repaired = 0, 0
if ARGV[4] == '1' then
  local known = tonumber(ARGV[12])
  local current = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
  if current < known then
    redis.call('HSET', KEYS[2], ARGV[2], known)
    repaired = known - current
  end
  seq = redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], seq .. '-0', 'e', ARGV[3], 't', ARGV[9])
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'e', ARGV[3], 's', seq, 'o', ARGV[7],
           'l', ARGV[8], 'p', ARGV[1], 'i', ARGV[10])
redis.call('SET', KEYS[5], seq, 'EX', ARGV[11])
if ingest then redis.call('SET', KEYS[7], ARGV[13]) end
return {1, seq, repaired}
"""
# KEYS: epoch, seq, fanout, room stream, marker[, lease, cursor]
# ARGV: 1 epoch, 2 room, 3 envelope, 4 keep, 5 history maxlen, 6 fan-out maxlen, 7 server id,
#       8 delivered locally, 9 created, 10 event id, 11 marker ttl, 12 highest seq this server
#       saw in the room, 13 ingest entry id ('' when not from the ingest)
# -> {-1, epoch} other epoch, {-3} lease lost, {0, seq} published before, {1, seq, repaired}

INGEST_LUA = """
local n = tonumber(ARGV[2])
local i = 3
for _ = 1, n do
  local key = KEYS[tonumber(ARGV[i]) + 1]
  if #redis.call('XRANGE', key, ARGV[i + 1], ARGV[i + 1]) == 0 then return {-1, ARGV[i]} end
  i = i + 2
end
local ids = {}
while i < #ARGV do
  ids[#ids + 1] = redis.call('XADD', KEYS[tonumber(ARGV[i]) + 1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[i + 1])
  i = i + 2
end
return {1, ids}
"""
# KEYS: the partition streams in order. ARGV: 1 maxlen, 2 number of checks, then pairs
# (partition, id of this producer's last entry there), then pairs (partition, envelope).
# -> {-1, partition} when a checked entry is gone (nothing appended), {1, entry ids}

LEASE_LUA = """
local me, ttl = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local leaving = ARGV[4] == '1'
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if leaving then redis.call('ZREM', KEYS[1], me) else redis.call('ZADD', KEYS[1], now + ttl, me) end
local live = math.max(1, redis.call('ZCARD', KEYS[1]))
local share = math.ceil((#KEYS - 1) / live)
if leaving then share = 0 end
local mine, free = {}, {}
for k = 2, #KEYS do
  local holder = redis.call('GET', KEYS[k])
  if holder == me then mine[#mine + 1] = k elseif not holder then free[#free + 1] = k end
end
while #mine > share do redis.call('DEL', KEYS[table.remove(mine)]) end
for _, k in ipairs(mine) do redis.call('PEXPIRE', KEYS[k], ttl) end
local offset = tonumber(ARGV[3])
for j = 1, #free do
  if #mine >= share then break end
  local k = free[((j - 1 + offset) % #free) + 1]
  redis.call('SET', KEYS[k], me, 'PX', ttl)
  mine[#mine + 1] = k
end
local out = {}
for idx, k in ipairs(mine) do out[idx] = k - 2 end
return out
"""
# KEYS: live servers, then the partition leases in order. ARGV: server id, lease ms, offset
# to start taking free partitions at, '1' to give every partition up (closing).
# -> the partitions this server holds now

ADVANCE_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""
# KEYS: lease, cursor. ARGV: server id, entry id. -> 0 when the lease is someone else's

REPAIR_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local repaired = 0
for i = 2, #ARGV, 2 do
  local current = tonumber(redis.call('HGET', KEYS[2], ARGV[i]) or '0')
  if current < tonumber(ARGV[i + 1]) then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    repaired = repaired + 1
  end
end
return repaired
"""
# KEYS: epoch, seq. ARGV: epoch, then pairs (room, highest seq seen). Raises each room's
# counter to what clients already have, so a seq is never handed out twice.


class RedisUnavailable(EventBusError):
    code = "redis_unavailable"


class LeaseLost(RedisUnavailable):
    """This server no longer holds the ingest partition it was consuming."""

    code = "lease_lost"


class IngestRef(NamedTuple):
    """Where an ingested event came from: its partition and stream entry id."""

    partition: int
    entry_id: str


class _Sent(NamedTuple):
    item: tuple[Event, bool, bool]
    partition: int
    entry_id: str
    at: float


def _import_redis() -> Any:
    try:
        import redis
    except ImportError:
        raise EventBusError("EVENTBUS_REDIS_URL is set but redis is not installed: "
                            "pip install 'eventbus[redis]'", code="config_error") from None
    return redis


class RecentIds:
    """Event ids seen lately, bounded by count and by age (seconds). Thread-safe."""

    def __init__(self, size: int, max_age: float):
        self.size = size
        self.max_age = max_age
        self._items: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._items[key] = now
            self._items.move_to_end(key)
            while self._items and (len(self._items) > self.size
                                   or next(iter(self._items.values())) < now - self.max_age):
                self._items.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            seen = self._items.get(key)  # type: ignore[call-overload]
        return seen is not None and seen >= time.monotonic() - self.max_age

    def __len__(self) -> int:
        return len(self._items)


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

    Set by the bus:

    - ``on_fanout(event)``: each event read from the fan-out stream (server role).
    - ``on_ingest(event, ref)``: each event taken from an ingest partition (server role). It
      must call :meth:`publish` with ``ingest=ref`` (or :meth:`skip_ingest`), which moves the
      partition's cursor past the entry; :class:`RedisUnavailable` propagates, and the entry
      is tried again.
    - ``on_epoch_change(epoch)``: the history started again (Redis lost its data).

    Guarantees (docs/deployment.md, "Redis"): publishing is idempotent by event id; each
    producer's events to a room are published in the order it sent them, by one server at
    a time; what a producer sent within :data:`RESEND_WINDOW` seconds before Redis lost it
    is sent again; a room's ``seq`` is never handed out twice within an epoch.
    """

    def __init__(self, config: Config, prefix: str | None = None):
        redis = _import_redis()
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.redis = redis
        self.errors = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
        self.prefix = prefix or config.redis_prefix
        self.url = config.redis_url
        # No retries inside redis-py: every loop here retries on its own terms, and a script
        # retried blindly after a lost reply would run twice.
        self.client = redis.Redis.from_url(
            self.url, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=2.0,
            health_check_interval=10, retry=Retry(NoBackoff(), 0))
        # Blocking reads get connections of their own, one per loop.
        self._readers = {
            name: redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=10.0,
                                       socket_connect_timeout=2.0, retry=Retry(NoBackoff(), 0))
            for name in ("fanout", "ingest")
        }
        self.history_size = config.history_size
        self.fanout_size = config.redis_fanout_maxlen
        self.ingest_size = config.redis_ingest_maxlen
        #: an ingest partition's lease: a dead server's partitions move on within it
        self.lease_ms = max(300, int(config.redis_claim_idle * 1000))
        self.buffer_size = config.redis_buffer
        self.partitions = INGEST_PARTITIONS
        self.server_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._script = self.client.register_script(PUBLISH_LUA)
        self._ingest_script = self.client.register_script(INGEST_LUA)
        self._repair_script = self.client.register_script(REPAIR_LUA)
        self._lease_script = self._readers["ingest"].register_script(LEASE_LUA)
        self._advance_script = self._readers["ingest"].register_script(ADVANCE_LUA)
        self.epoch = ""
        self.state = "connecting"
        self.role = "producer"
        self.last_error: str | None = None
        self.counters = {"published": 0, "fanout_read": 0, "ingested": 0, "ingest_sent": 0,
                         "ingest_skipped": 0, "resent": 0, "buffered": 0, "flushed": 0, "dropped": 0,
                         "duplicates": 0, "refused": 0, "retries": 0, "errors": 0, "reconnects": 0,
                         "epoch_changes": 0, "seq_repairs": 0, "seq_conflicts": 0,
                         "partitions_taken": 0, "partitions_dropped": 0}
        # Events accepted while Redis was away: (event, keep, delivered_locally), flushed in order.
        self.pending: deque[tuple[Event, bool, bool]] = deque()
        self._pending_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closing = False
        self._retry_at = 0.0
        # Producer: what was sent lately, and this producer's last entry per partition.
        self._sent: deque[_Sent] = deque()
        self._last_entry: dict[int, str] = {}
        # Server: the highest seq per room seen on the fan-out stream ((epoch, seq)), ids
        # delivered from it, ids delivered here while Redis was away, partitions held.
        self._high: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._high_rooms = int(getattr(config, "history_max_rooms", 10000))
        self._recent = RecentIds(*RECENT_IDS)
        self._local_ids = RecentIds(self.buffer_size + 1000, MARKER_TTL)
        self.owned: dict[int, str] = {}  # partition -> last entry handled
        self._held: set[int] = set()
        self._next_tick = 0.0
        self._ingest_failures: dict[IngestRef, int] = {}
        self.on_fanout: Callable[[Event], None] | None = None
        self.on_ingest: Callable[[Event, IngestRef], None] | None = None
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

    def ingest_key(self, partition: int, part: str = "") -> str:
        return f"{self.prefix}:ingest:{partition}{':' + part if part else ''}"

    def partition_of(self, event: Any) -> int:
        """The ingest partition of this producer's events to ``event.room``."""
        return zlib.crc32(f"{self.server_id}\0{event.room}".encode()) % self.partitions

    # -- health ---------------------------------------------------------------------
    def failed(self, exc: BaseException) -> None:
        self.counters["errors"] += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.state != "degraded":
            self.state = "degraded"
            log.warning("redis %s unavailable, buffering: %s", redact_url(self.url), self.last_error)
        self._retry_at = time.monotonic() + 0.5

    def recovered(self) -> None:
        if self.state == "degraded":
            self.counters["reconnects"] += 1
            log.warning("redis %s is back; %d buffered event(s) to flush", redact_url(self.url),
                        len(self.pending))
        self.state = "ok"
        self.last_error = None

    @property
    def available(self) -> bool:
        return self.state == "ok" or time.monotonic() >= self._retry_at

    @property
    def healthy(self) -> bool:
        """Redis answers and nothing waits for it."""
        return self.state == "ok" and not self.pending

    def health(self) -> dict[str, Any]:
        return {"status": "ok" if self.state == "ok" else "degraded", "url": redact_url(self.url),
                "server_id": self.server_id, "epoch": self.epoch, "pending": len(self.pending),
                "last_error": self.last_error, "partitions": sorted(self.owned),
                "lease_s": self.lease_ms / 1000, **self.counters}

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

    def _known_seq(self, room: str, epoch: str | None = None) -> int:
        """The highest seq of ``room`` seen on the fan-out stream in ``epoch`` (the current one)."""
        known = self._high.get(room)
        return known[1] if known is not None and known[0] == (epoch or self.epoch) else 0

    # -- server role: publish with seq ----------------------------------------------
    def publish(self, event: Event, keep: bool, delivered_locally: bool = False,
                ingest: IngestRef | None = None) -> bool:
        """Assign ``seq`` and append to the room and fan-out streams, once per event id.

        Returns False when the event was published before (by any server, on any path):
        nothing is appended then, and an ingest cursor still moves past the entry. Raises
        :class:`RedisUnavailable`, :class:`LeaseLost` (``ingest`` only: another server holds
        the partition now) or :class:`EventBusError` (``redis_error``: Redis refused it)."""
        if not self.available:
            raise RedisUnavailable(self.last_error or "redis is unavailable")
        if event.id in self._recent:
            # Delivered from the fan-out stream already: Redis forgot it (data loss) and it
            # came again (a producer's resend, a cursor Redis had lost).
            if ingest is not None:
                self._advance(ingest)
            self.counters["duplicates"] += 1
            return False
        body = _envelope_json(event)
        keys = [self.key("epoch"), self.key("seq"), self.key("fanout"), self.room_key(event.room),
                self.key(f"id:{event.id}")]
        if ingest is not None:
            keys += [self.ingest_key(ingest.partition, "lease"), self.ingest_key(ingest.partition, "cursor")]
        for _ in range(2):
            try:
                reply = self._script(
                    keys=keys,
                    args=[self.epoch, event.room, body, "1" if keep else "0", self.history_size,
                          self.fanout_size, self.server_id, "1" if delivered_locally else "0",
                          repr(event.created), event.id, MARKER_TTL, self._known_seq(event.room),
                          ingest.entry_id if ingest is not None else ""])
            except self.errors as exc:
                self.failed(exc)
                raise RedisUnavailable(str(exc)) from None
            except self.redis.exceptions.ResponseError as exc:
                self.counters["refused"] += 1
                raise EventBusError(f"redis refused the event: {exc}", code="redis_error") from None
            status, value = int(reply[0]), reply[1]
            if status == -1:  # Redis lost its data (or another epoch began): adopt the new one
                try:
                    self._load_epoch()
                except self.errors as exc:
                    self.failed(exc)
                    raise RedisUnavailable(str(exc)) from None
                continue
            self.recovered()
            if status == -3:
                raise LeaseLost(f"ingest partition {ingest.partition if ingest else '?'} has another owner")
            if status == 0:
                self.counters["duplicates"] += 1
                if ingest is not None:
                    self.owned[ingest.partition] = ingest.entry_id
                event.seq = (int(value) or None) if keep else None
                return False
            if int(reply[2]):
                self.counters["seq_repairs"] += 1
                log.warning("redis had lost %d seq(s) of room %s (it came back without its last "
                            "writes); numbering goes on after the highest seq clients have",
                            int(reply[2]), event.room)
            self.counters["published"] += 1
            if ingest is not None:
                self.counters["ingested"] += 1
                self.owned[ingest.partition] = ingest.entry_id
            event.seq = int(value) if keep else None
            return True
        raise RedisUnavailable("the history epoch keeps changing")

    def skip_ingest(self, ref: IngestRef) -> None:
        """Move the partition's cursor past an entry that is not published (dropped by a
        hook, unknown type, unreadable). Raises like :meth:`publish`."""
        self._advance(ref)
        self.counters["ingest_skipped"] += 1

    def _advance(self, ref: IngestRef) -> None:
        try:
            moved = self._advance_script(keys=[self.ingest_key(ref.partition, "lease"),
                                               self.ingest_key(ref.partition, "cursor")],
                                         args=[self.server_id, ref.entry_id])
        except self.errors as exc:
            self.failed(exc)
            raise RedisUnavailable(str(exc)) from None
        if not moved:
            raise LeaseLost(f"ingest partition {ref.partition} has another owner")
        self.owned[ref.partition] = ref.entry_id

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
            if delivered_locally:
                self._local_ids.add(event.id)
        self._wake.set()

    # -- background tasks -------------------------------------------------------------
    def start(self, role: str, spawn: Callable[[Callable[[], None]], Any]) -> None:
        self.role = role
        spawn(self._guard(self._flush_loop if role == "producer" else self._server_flush_loop))
        if role == "server":
            spawn(self._guard(self._fanout_loop))
            spawn(self._guard(self._ingest_loop))

    def close(self, timeout: float = 2.0) -> None:
        """Send what is buffered (waiting up to ``timeout`` seconds, for Redis to return
        too), give this server's ingest partitions up, and disconnect."""
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.01)
        self._closing = True
        self._wake.set()
        self._stop.set()
        if self.pending:
            self.counters["dropped"] += len(self.pending)
            log.warning("redis: %d buffered event(s) not sent at close", len(self.pending))
        if self._held:
            try:
                self._lease_tick(leaving=True)  # the others take the partitions at once
            except Exception:  # noqa: BLE001 - the leases lapse on their own
                pass
        for client in (self.client, *self._readers.values()):
            try:
                client.close()
            except Exception:  # noqa: BLE001
                pass

    def _backoff(self, attempt: int) -> float:
        return min(1.0, 0.05 * float(2 ** min(attempt, 5)))

    def _guard(self, loop: Callable[[], None]) -> Callable[[], None]:
        """Run a background loop that survives anything: log, back off, go on."""

        def run() -> None:
            attempt = 0
            while not self._closing:
                try:
                    loop()
                    return
                except Exception as exc:
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

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    # -- producer role ----------------------------------------------------------------
    def _flush_loop(self) -> None:
        """Producer role: append queued events to their ingest partitions, in order."""
        attempt = 0
        while not self._closing:
            if not self._wait_for_pending() and not self._sent:
                continue
            try:
                self._flush_once()
            except (*self.errors, self.redis.exceptions.ResponseError) as exc:
                self.failed(exc)
                attempt += 1
                self.counters["retries"] += 1
                self._sleep(self._backoff(attempt))
                continue
            attempt = 0

    def _flush_once(self) -> None:
        """Send one batch (at most 500 events; none when only checking). Raises redis errors.

        The batch goes in one script that first checks this producer's last entries are
        still there. When Redis lost them (restarted without its data, or AOF lost its last
        writes), nothing is appended, and what was sent in the last :data:`RESEND_WINDOW`
        seconds is queued again ahead of the rest. The servers publish each event id once,
        so a resend never shows twice."""
        with self._pending_lock:
            batch = list(itertools.islice(self.pending, 500))
        parts = [self.partition_of(event) for event, _keep, _local in batch]
        checks = list(self._last_entry.items())
        args: list[Any] = [self.ingest_size, len(checks)]
        for partition, entry_id in checks:
            args += [partition, entry_id]
        for partition, (event, _keep, _local) in zip(parts, batch):
            args += [partition, _envelope_json(event)]
        status, value = self._ingest_script(keys=[self.ingest_key(p) for p in range(self.partitions)], args=args)
        self.recovered()
        if int(status) == -1:
            self._resend()
            return
        now = time.monotonic()
        for item, partition, entry_id in zip(batch, parts, value):
            self._sent.append(_Sent(item, partition, entry_id, now))
            self._last_entry[partition] = entry_id
        self._forget(batch)
        # Redis still had our last entries: what was sent before the window is safe.
        while self._sent and (self._sent[0].at < now - RESEND_WINDOW or len(self._sent) > self.buffer_size):
            self._sent.popleft()
        if not self._sent:
            self._last_entry.clear()
        self.counters["ingest_sent"] += len(batch)
        self.counters["flushed"] += len(batch)

    def _resend(self) -> None:
        """Redis lost entries this producer had sent: queue the recent ones again, first."""
        with self._pending_lock:
            again = [sent.item for sent in self._sent]
            self.pending.extendleft(reversed(again))
            self._sent.clear()
            self._last_entry.clear()
        self.counters["resent"] += len(again)
        log.warning("redis lost events this producer had sent; sending the last %d again", len(again))

    # -- server role --------------------------------------------------------------------
    def _server_flush_loop(self) -> None:
        """Server role: publish events accepted while Redis was away, oldest first (a
        second copy of one Redis had taken before the link broke is recognised by id)."""
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
                self.counters["retries"] += 1
                self._sleep(self._backoff(attempt))
                continue
            except EventBusError:
                log.exception("redis refused buffered event %s; dropped", event.id)
                self.counters["dropped"] += 1
            attempt = 0
            self._forget([item])
            self.counters["flushed"] += 1

    def _fanout_loop(self) -> None:
        """Server role: tail the fan-out stream and hand each event to the local clients."""
        reader = self._readers["fanout"]
        last_id: str | None = None
        stream_epoch = self.epoch
        attempt = 0
        repair = False
        while not self._closing:
            try:
                if repair:
                    self._repair_seq()
                    repair = False
                if last_id is None:
                    newest = reader.xrevrange(self.key("fanout"), count=1)
                    last_id = newest[0][0] if newest else "0-0"
                rows = reader.xread({self.key("fanout"): last_id}, count=500, block=1000)
            except self.errors as exc:
                self.failed(exc)
                attempt += 1
                repair = True  # Redis may come back with less than it had
                self._sleep(self._backoff(attempt))
                continue
            except self.redis.exceptions.ResponseError as exc:  # e.g. the stream was recreated
                log.warning("redis fan-out read failed: %s", exc)
                last_id = None
                continue
            attempt = 0
            if self.state != "ok":
                self.recovered()
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
                    self._fanout_entry(entry_id, fields, entry_epoch)

    def _fanout_entry(self, entry_id: str, fields: dict[str, str], epoch: str) -> None:
        try:
            event = Event.from_json(fields["e"])
        except (EventBusError, KeyError) as exc:
            log.warning("skipping unreadable fan-out entry %s: %s", entry_id, exc)
            return
        seq = int(fields.get("s") or 0)
        if seq:
            if seq <= self._known_seq(event.room, epoch):
                # The numbering went back (Redis lost writes, and a server that had not seen
                # them numbered this one): clients would take it for a repeat, so it goes
                # without a seq.
                self.counters["seq_conflicts"] += 1
                log.warning("redis reused seq %d of room %s; delivered without a seq", seq, event.room)
                seq = 0
            else:
                self._high[event.room] = (epoch, seq)
                self._high.move_to_end(event.room)
                if len(self._high) > self._high_rooms:
                    self._high.popitem(last=False)  # the room idle longest
        self._recent.add(event.id)
        if fields.get("o") == self.server_id and (fields.get("l") == "1" or event.id in self._local_ids):
            return  # this server already delivered it while Redis was away
        event.seq = seq or None
        event.origin = "remote"
        self.counters["fanout_read"] += 1
        if self.on_fanout is not None:
            self.on_fanout(event)

    def _repair_seq(self) -> None:
        """After a reconnect: raise each room's counter to the highest seq seen, in case
        Redis came back with less (AOF losing its last second)."""
        known = [(room, seq) for room, (epoch, seq) in list(self._high.items()) if epoch == self.epoch]
        for start in range(0, len(known), 500):
            args: list[Any] = [self.epoch]
            for room, seq in known[start:start + 500]:
                args += [room, seq]
            repaired = int(self._repair_script(keys=[self.key("epoch"), self.key("seq")], args=args))
            if repaired > 0:
                self.counters["seq_repairs"] += repaired
                log.warning("redis came back with lower seqs for %d room(s); raised to what clients have",
                            repaired)

    def _lease_tick(self, leaving: bool = False) -> list[int]:
        """Renew this server's partitions, take free ones up to its share, give up extras
        (all of them when ``leaving``). Returns the partitions held now."""
        keys = [self.key("servers"), *(self.ingest_key(p, "lease") for p in range(self.partitions))]
        offset = zlib.crc32(self.server_id.encode()) % self.partitions
        held = self._lease_script(keys=keys, args=[self.server_id, self.lease_ms, offset, "1" if leaving else "0"])
        return [int(p) for p in held]

    def _take_partitions(self) -> None:
        """Tick the leases: ``owned`` becomes the partitions held now, each with its cursor
        (read from Redis for one not being read yet: it continues where the previous owner,
        or this server before an error, stopped)."""
        held = self._lease_tick()
        owned = self.owned
        reload = [p for p in held if p not in owned]
        cursors = {}
        if reload:
            pipe = self._readers["ingest"].pipeline(transaction=False)
            for p in reload:
                pipe.get(self.ingest_key(p, "cursor"))
            cursors = dict(zip(reload, pipe.execute()))
        taken = [p for p in held if p not in self._held]
        dropped = [p for p in self._held if p not in held]
        if taken or dropped:
            log.info("ingest partitions: took %s, gave up %s", taken, dropped)
        self.counters["partitions_taken"] += len(taken)
        self.counters["partitions_dropped"] += len(dropped)
        self._held = set(held)
        self.owned = {p: owned.get(p) or cursors.get(p) or "0-0" for p in held}
        self._next_tick = time.monotonic() + self.lease_ms / 3000

    def _ingest_loop(self) -> None:
        """Server role: consume the ingest partitions this server holds, each in order."""
        reader = self._readers["ingest"]
        self.owned = {}
        self._next_tick = 0.0
        attempt = 0
        while not self._closing:
            try:
                if time.monotonic() >= self._next_tick:
                    self._take_partitions()
                wait_ms = int(max(0.01, min(1.0, self._next_tick - time.monotonic())) * 1000)
                if not self.owned:
                    self._sleep(wait_ms / 1000)
                    continue
                streams = {self.ingest_key(p): cursor for p, cursor in self.owned.items()}
                rows = reader.xread(streams, count=100, block=wait_ms)
                attempt = 0
                if self.state != "ok":
                    self.recovered()
                for stream, entries in rows or ():
                    self._consume(int(stream.rsplit(":", 1)[1]), entries)
            except (RedisUnavailable, *self.errors) as exc:
                if not isinstance(exc, RedisUnavailable):
                    self.failed(exc)
                # Read the cursors from Redis again: it may have come back with older ones.
                self.owned = {}
                self._next_tick = 0.0
                attempt += 1
                self.counters["retries"] += 1
                self._sleep(self._backoff(attempt))
            except self.redis.exceptions.ResponseError as exc:
                log.warning("redis ingest read failed: %s", exc)
                self.owned = {}
                self._next_tick = 0.0
                self._sleep(0.5)

    def _consume(self, partition: int, entries: list[tuple[str, dict[str, str]]]) -> None:
        """Publish a partition's entries in order; stop at the first that cannot be."""
        for entry_id, fields in entries:
            if time.monotonic() >= self._next_tick:
                self._take_partitions()  # renew the leases during a long batch
            if partition not in self.owned:
                return
            ref = IngestRef(partition, entry_id)
            try:
                try:
                    event = Event.from_json(fields["e"])
                except (EventBusError, KeyError) as exc:
                    log.warning("ingest entry %s is unreadable (%s); skipped", entry_id, exc)
                    self.skip_ingest(ref)
                    continue
                event.origin = "remote"
                if self.on_ingest is not None:
                    self.on_ingest(event, ref)
                else:
                    self.skip_ingest(ref)
                self._ingest_failures.pop(ref, None)
            except LeaseLost:
                log.info("ingest partition %d moved to another server", partition)
                self.owned.pop(partition, None)
                self._held.discard(partition)
                self.counters["partitions_dropped"] += 1
                return
            except RedisUnavailable:
                raise
            except Exception:  # one bad entry must not stop the partition for good
                tries = self._ingest_failures[ref] = self._ingest_failures.get(ref, 0) + 1
                if tries < 3:
                    log.warning("ingest entry %s failed (try %d); retrying", entry_id, tries, exc_info=True)
                    self.counters["retries"] += 1
                    self._sleep(self._backoff(tries))
                    return  # read again from the cursor
                log.exception("ingest entry %s refused %d times; skipped", entry_id, tries)
                self._ingest_failures.pop(ref, None)
                self.counters["refused"] += 1
                self.skip_ingest(ref)


def _envelope_json(event: Event) -> str:
    raw = event.to_dict()
    raw["seq"] = None  # the stream entry carries seq; the envelope is the same everywhere else
    return json.dumps(raw, separators=(",", ":"), ensure_ascii=False)
