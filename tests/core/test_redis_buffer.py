"""The Redis outage buffer: bounded, ordered, and never forgets an event it did not send."""

from __future__ import annotations

import json
import os
import uuid

import pytest

from eventbus import EventBus
from eventbus.config import Config
from eventbus.events import Event
from eventbus.redis_streams import IngestRef, LeaseLost, RedisUnavailable
from eventbus.transport import Transport

pytest.importorskip("redis")
pytestmark = pytest.mark.redis


@pytest.fixture
def link():
    from eventbus.redis_streams import RedisLink

    url = os.environ.get("EVENTBUS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = "{ebtest-" + uuid.uuid4().hex[:10] + "}"
    instance = RedisLink(Config(redis_url=url, redis_buffer=3, redis_prefix=prefix))
    yield instance
    keys = list(instance.client.scan_iter(match=prefix + "*"))
    if keys:
        instance.client.delete(*keys)
    instance.close(timeout=0)


def event(n: int) -> Event:
    return Event(type="tool_executed", data={"n": n}, room="monitoring")


def test_overflow_drops_the_oldest_and_counts_it(link) -> None:
    for n in range(5):
        link.buffer(event(n), True, delivered_locally=False)
    assert [e.data["n"] for e, _, _ in link.pending] == [2, 3, 4]
    assert link.counters["dropped"] == 2 and link.counters["buffered"] == 5


def test_forgetting_a_sent_batch_keeps_what_arrived_meanwhile(link) -> None:
    for n in range(3):
        link.buffer(event(n), True, delivered_locally=False)
    sent = list(link.pending)  # a flush takes these three...
    link.buffer(event(3), True, delivered_locally=False)  # ...while the overflow drops event 0
    link._forget(sent)
    assert [e.data["n"] for e, _, _ in link.pending] == [3]


def test_publish_assigns_increasing_seq_per_room(link) -> None:
    first, second, other = event(1), event(2), Event(type="tool_executed", data={}, room="team")
    for item in (first, second, other):
        assert link.publish(item, keep=True)
    assert (first.seq, second.seq, other.seq) == (1, 2, 1)
    found = link.history.since("monitoring", 0)
    assert [e.data["n"] for e in found.events] == [1, 2] and found.complete
    assert link.history.since("monitoring", 1).events[0].seq == 2


# -- idempotent publish, seq that never goes back ------------------------------------------
def test_an_event_whose_reply_was_lost_is_published_once(link) -> None:
    """Redis ran the script but the reply never came: the event is buffered and flushed
    again, and the second publish is recognised by its id (no second seq)."""
    real = link._script

    def runs_then_breaks(*args, **kwargs):
        real(*args, **kwargs)
        raise link.redis.exceptions.ConnectionError("connection lost after the script ran")

    item = event(1)
    link._script = runs_then_breaks
    with pytest.raises(RedisUnavailable):
        link.publish(item, keep=True)
    link._script = real
    link._retry_at = 0.0
    assert link.publish(item, keep=True, delivered_locally=True) is False
    assert item.seq == 1 and link.counters["duplicates"] == 1
    assert [e.id for e in link.history.since("monitoring", 0).events] == [item.id]
    assert link.client.xlen(link.key("fanout")) == 1


def test_seq_is_never_handed_out_twice_after_redis_loses_writes(link) -> None:
    """AOF lost the last writes: the room's counter is back at 1 though clients saw 3. The
    next event is numbered after what clients have, not 2 again."""
    for n in (1, 2, 3):
        assert link.publish(event(n), keep=True)
    link._high["monitoring"] = (link.epoch, 3)  # what the fan-out loop delivered
    link.client.hset(link.key("seq"), "monitoring", 1)  # what Redis came back with
    link.client.delete(link.room_key("monitoring"))
    later = event(4)
    assert link.publish(later, keep=True)
    assert later.seq == 4 and link.counters["seq_repairs"] == 1


def test_a_reused_seq_on_the_fanout_goes_out_without_a_seq(link) -> None:
    seen: list = []
    link.on_fanout = seen.append
    first = event(1)
    link._fanout_entry("1-0", {"e": first.to_json(), "s": "5", "p": link.epoch, "o": "x", "l": "0"}, link.epoch)
    again = event(2)
    link._fanout_entry("2-0", {"e": again.to_json(), "s": "5", "p": link.epoch, "o": "x", "l": "0"}, link.epoch)
    assert [e.seq for e in seen] == [5, None] and link.counters["seq_conflicts"] == 1


# -- the producer: resend what Redis lost -------------------------------------------------
def test_a_producer_sends_again_what_redis_lost(link) -> None:
    for n in range(3):
        link.buffer(event(n), True, delivered_locally=False)
    link._flush_once()
    partition = link.partition_of(event(0))
    assert link.client.xlen(link.ingest_key(partition)) == 3 and not link.pending
    link.client.delete(link.ingest_key(partition))  # Redis restarted without its data
    link.buffer(event(3), True, delivered_locally=False)
    link._flush_once()  # finds its last entry gone: nothing appended, the three queued first
    assert [e.data["n"] for e, _, _ in link.pending] == [0, 1, 2, 3] and link.counters["resent"] == 3
    link._flush_once()
    rows = link.client.xrange(link.ingest_key(partition))
    assert [json.loads(f["e"])["data"]["n"] for _, f in rows] == [0, 1, 2, 3]


def test_one_producers_events_to_one_room_share_a_partition(link) -> None:
    parts = {link.partition_of(event(n)) for n in range(20)}
    assert len(parts) == 1 and 0 <= parts.pop() < link.partitions


# -- partitions: shared out, fenced by their lease ----------------------------------------
def _server(prefix: str):
    from eventbus.redis_streams import RedisLink

    url = os.environ.get("EVENTBUS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    return RedisLink(Config(redis_url=url, redis_prefix=prefix, redis_claim_idle=5))


def test_partitions_are_shared_and_fenced(link) -> None:
    a, b = _server(link.prefix), _server(link.prefix)
    try:
        a._take_partitions()
        assert len(a.owned) == 16
        b._take_partitions()  # two servers now: A gives up half at its next tick
        a._take_partitions()
        b._take_partitions()
        assert len(a.owned) == len(b.owned) == 8 and not set(a.owned) & set(b.owned)
        mine, theirs = min(a.owned), min(b.owned)
        entry = link.client.xadd(link.ingest_key(mine), {"e": event(1).to_json()})
        with pytest.raises(LeaseLost):  # B may not publish what A's partition holds
            b.publish(event(1), keep=True, ingest=IngestRef(mine, entry))
        assert link.client.get(link.ingest_key(mine, "cursor")) is None
        item = event(1)
        assert a.publish(item, keep=True, ingest=IngestRef(mine, entry))
        assert link.client.get(link.ingest_key(mine, "cursor")) == entry
        # The same event again (a producer's resend): not published, the cursor moves on.
        again = link.client.xadd(link.ingest_key(mine), {"e": item.to_json()})
        assert a.publish(item, keep=True, ingest=IngestRef(mine, again)) is False
        assert link.client.get(link.ingest_key(mine, "cursor")) == again
        assert link.client.xlen(link.key("fanout")) == 1
        a.close(timeout=0)  # gives its partitions up: B takes them at its next tick
        b._take_partitions()
        assert len(b.owned) == 16 and b.owned[mine] == again and theirs in b.owned
    finally:
        a.close(timeout=0)
        b.close(timeout=0)


# -- /api/health follows the backend ------------------------------------------------------
class _Limping(Transport):
    """A transport that reports itself degraded (as a failing webhook receiver makes one)."""

    name = "limping"

    def send(self, event: Event) -> None:
        pass

    def health(self) -> dict:
        return {"status": "degraded"}


@pytest.mark.parametrize("degraded_status", [503, 200])
def test_health_is_degraded_while_redis_is_away_or_events_wait(link, tmp_path, degraded_status: int) -> None:
    eventbus_socketio = pytest.importorskip("eventbus_socketio")
    import eventbus_auth

    config = Config(redis_url=link.url, secret_key="s" * 48, data_dir=str(tmp_path / "data"),
                    health_degraded_status=degraded_status, redis_prefix=link.prefix)
    bus = EventBus(config, plugins=[eventbus_auth, eventbus_socketio], load_entrypoints=False)
    try:
        http = eventbus_socketio.create_app(bus=bus).test_client()
        answer = http.get("/api/health")
        assert (answer.status_code, answer.json["status"]) == (200, "ok")
        bus.redis.buffer(event(1), True, delivered_locally=True)  # events wait for Redis
        answer = http.get("/api/health")
        assert (answer.status_code, answer.json["status"]) == (degraded_status, "degraded")
        assert answer.json["backend"] == {"redis": "degraded", "pending": 1}
        bus.redis.pending.clear()
        bus.redis.failed(OSError("connection refused"))  # Redis is away
        assert http.get("/api/health").status_code == degraded_status
        bus.redis.recovered()
        bus.add_transport(_Limping())  # a degraded transport alone keeps 200
        answer = http.get("/api/health")
        assert (answer.status_code, answer.json["status"]) == (200, "degraded")
    finally:
        bus.close(timeout=0)


def test_the_redis_url_is_shown_and_logged_without_its_password(caplog) -> None:
    from eventbus.redis_streams import RedisLink

    with caplog.at_level("WARNING", logger="eventbus.redis"):
        unreachable = RedisLink(Config(redis_url="redis://user:s3cret@127.0.0.1:1/0", env={}))
    try:
        assert unreachable.state == "degraded"
        assert unreachable.health()["url"] == "redis://127.0.0.1:1/0"
        assert "s3cret" not in caplog.text and "127.0.0.1:1" in caplog.text
    finally:
        unreachable.close(timeout=0)
