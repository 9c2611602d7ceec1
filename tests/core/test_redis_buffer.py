"""The Redis outage buffer: bounded, ordered, and never forgets an event it did not send."""

from __future__ import annotations

import os
import uuid

import pytest

from eventbus.config import Config
from eventbus.events import Event

pytest.importorskip("redis")
pytestmark = pytest.mark.redis


@pytest.fixture
def link():
    from eventbus.redis_streams import RedisLink

    url = os.environ.get("EVENTBUS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = "{ebtest-" + uuid.uuid4().hex[:10] + "}"
    instance = RedisLink(Config(redis_url=url, env={"EVENTBUS_REDIS_BUFFER": "3",
                                                    "EVENTBUS_REDIS_PREFIX": prefix}))
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
