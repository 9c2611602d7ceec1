"""``eventbus_client.EventBusClient`` against real servers, in every async mode: resume after
a server-side disconnect while events flow, resync after a restart (new epoch), and a Redis
outage during which the server delivers without a seq."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from eventbus.testing import wait_until
from eventbus_client import EventBusClient

from .server import ServerProcess
from .test_redis import own_redis  # noqa: F401 - fixture: a private redis-server on a free port


class Recorder:
    """Everything one client delivered, its state changes and resyncs."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.unsequenced: list[dict[str, Any]] = []  # envelopes delivered without a seq
        self.all: list[dict[str, Any]] = []  # every envelope, in delivery order
        self.states: list[str] = []
        self.resyncs: list[dict[str, Any]] = []
        self.errors: list[BaseException] = []

    def record(self, envelope: Any) -> None:
        if isinstance(envelope, dict) and "id" in envelope:
            self.all.append(envelope)
            (self.events if envelope.get("seq") else self.unsequenced).append(envelope)

    def numbers(self) -> list[int]:
        return [e["data"]["details"]["n"] for e in self.events if e["type"] == "agent_started"]


@pytest.fixture
def make_client() -> Iterator[Callable[..., tuple[EventBusClient, Recorder]]]:
    made: list[EventBusClient] = []

    def make(server: ServerProcess, user: str, **options: Any) -> tuple[EventBusClient, Recorder]:
        seen = Recorder()
        client = EventBusClient(server.url, "/monitoring", token=server.token(user, ()),
                                on_state_change=lambda state, previous: seen.states.append(state),
                                on_resync=seen.resyncs.append, on_error=seen.errors.append,
                                reconnect_delay=0.2, reconnect_delay_max=0.5, **options)
        client.on("*", lambda event_type, env: seen.record(env))
        made.append(client)
        return client, seen

    yield make
    for client in made:
        client.close()


class Publisher:
    """Publishes ``agent_started`` events (``details.n`` = 0, 1, ...) at ``rate`` per second
    from a thread, until ``total`` or :meth:`stop`. ``accepted`` holds every 202 answer in
    order; a request that fails (the server is down) is counted in ``failed``, not retried."""

    def __init__(self, url: str, token: str, rate: float, total: int):
        self.url, self.rate, self.total = url, rate, total
        self.headers = {"Authorization": f"Bearer {token}"}
        self.accepted: list[dict[str, Any]] = []
        self.failed = 0
        self.last_failure = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)

    def start(self) -> Publisher:
        self._thread.start()
        return self

    def _run(self) -> None:
        next_at = time.monotonic()
        for n in range(self.total):
            if self._stop.is_set():
                break
            try:
                # A connection per request: kept-alive ones wait ~40 ms per answer on the
                # gevent server (Nagle's algorithm against delayed acknowledgements).
                response = requests.post(f"{self.url}/api/events", headers=self.headers, timeout=5,
                                        json={"type": "agent_started",
                                              "data": {"agent_name": "worker", "details": {"n": n}}})
                if response.status_code == 202:
                    self.accepted.append({**response.json(), "n": n})
                else:
                    self.failed += 1
                    self.last_failure = f"{response.status_code} {response.text[:200]}"
            except requests.RequestException as exc:
                self.failed += 1
                self.last_failure = repr(exc)
            next_at += 1 / self.rate
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def wait_accepted(self, count: int, timeout: float = 20.0) -> None:
        try:
            wait_until(lambda: len(self.accepted) >= count, timeout, message=f"{count} events accepted")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {len(self.accepted)} accepted, {self.failed} failed, last: "
                                 f"{self.last_failure}") from None

    def stop(self, timeout: float = 30.0) -> None:
        """Wait for the remaining events (or stop at once after ``timeout``)."""
        self._thread.join(timeout)
        self._stop.set()
        self._thread.join(10)

    def ids(self) -> list[str]:
        return [a["id"] for a in self.accepted]


def redis_outage(server: ServerProcess, redis: Any, publisher: Publisher, during: int = 80) -> None:
    """Kill the server's Redis while ``publisher`` runs, let ``during`` events be accepted
    without it, start it again (empty: a new epoch) and wait until the buffer is flushed."""
    redis.stop()
    wait_until(lambda: server.status()["status"] == "degraded", 15, message="status degraded")
    outage_start = len(publisher.accepted)
    publisher.wait_accepted(outage_start + during)
    assert all(a["seq"] is None for a in publisher.accepted[outage_start + 1:outage_start + during])
    redis.start()
    wait_until(lambda: (lambda r: r["status"] == "ok" and r["pending"] == 0)(server.status()["redis"]), 30,
               message="redis healthy again and the buffer flushed")


def publish_agent_events(server: ServerProcess, numbers: range) -> list[dict[str, Any]]:
    return [server.publish("agent_started", {"agent_name": "worker", "details": {"n": n}}) for n in numbers]


def assert_contiguous(events: list[dict[str, Any]]) -> None:
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"gap or duplicate in {seqs}"
    assert len({e["id"] for e in events}) == len(events)


@pytest.mark.parametrize("mode", ["kick", "drop"])  # a server-side disconnect; a killed transport
def test_resume_after_server_disconnect_while_events_flow(server: ServerProcess, make_client, mode: str) -> None:
    client, seen = make_client(server, "pywatcher")
    client.connect()
    admin = {"Authorization": f"Bearer {server.token()}"}
    total = 60
    published: list[dict[str, Any]] = []

    def publisher() -> None:
        session = requests.Session()
        for n in range(total):
            response = session.post(f"{server.url}/api/events", headers=admin, timeout=10,
                                    json={"type": "agent_started", "data": {"agent_name": "worker",
                                                                            "details": {"n": n}}})
            published.append(response.json())

    thread = threading.Thread(target=publisher)
    thread.start()
    try:
        client.wait_for(lambda: len(seen.numbers()) >= 10, timeout=20)
        response = requests.post(f"{server.url}/api/connections/disconnect",
                                 json={"user_id": "pywatcher", "mode": mode},
                                 headers=admin, timeout=10)
        assert len(response.json()["disconnected"]) == 1, response.text
        client.wait_for(lambda: "reconnecting" in seen.states, timeout=10)
    finally:
        thread.join(60)
    client.wait_for(lambda: seen.states[-1:] == ["connected"], timeout=20)
    last_id = published[-1]["id"]
    client.wait_for(lambda: any(e["id"] == last_id for e in seen.events), timeout=20)

    assert seen.numbers() == list(range(total))
    assert_contiguous(seen.events)
    assert seen.states == ["connecting", "connected", "reconnecting", "connected"]
    assert client.positions()["monitoring"]["seq"] == seen.events[-1]["seq"]
    assert client.stats["resyncs"] == 0 and seen.errors == []


def test_resync_after_restart_fetches_history_and_adopts_new_epoch(
        start_server: Callable[..., ServerProcess], async_mode: str, make_client) -> None:
    first = start_server(async_mode)
    client, seen = make_client(first, "pyrestart")
    client.connect()
    publish_agent_events(first, range(3))
    client.wait_for(lambda: seen.numbers() == [0, 1, 2], timeout=10)
    old_epoch = client.positions()["monitoring"]["epoch"]
    before = len(seen.events)

    first.kill()
    client.wait_for(lambda: "reconnecting" in seen.states, timeout=10)
    second = start_server(async_mode, port=first.port)
    publish_agent_events(second, range(3, 5))
    client.wait_for(lambda: seen.resyncs, timeout=30)
    publish_agent_events(second, range(5, 7))
    client.wait_for(lambda: seen.numbers()[-1:] == [6], timeout=15)

    history = requests.get(f"{second.url}/api/events", params={"room": "monitoring", "after": 0},
                           headers={"Authorization": f"Bearer {second.token()}"}, timeout=10).json()
    new_epoch = history["epoch"]
    assert new_epoch != old_epoch
    assert seen.resyncs == [{"room": "monitoring", "epoch": new_epoch, "previous_epoch": old_epoch,
                             "fetched": seen.resyncs[0]["fetched"], "lost": 0, "unverified": 0, "gaps": [],
                             "complete": True}]
    assert seen.resyncs[0]["fetched"] >= 1
    assert client.positions()["monitoring"] == {"seq": seen.events[-1]["seq"], "epoch": new_epoch}
    assert seen.numbers() == list(range(7))
    after_restart = seen.events[before:]
    assert after_restart[0]["seq"] == 1, "the new epoch is read from its start"
    assert_contiguous(after_restart)
    # Exactly what the new server holds for the room, in order.
    assert [e["id"] for e in after_restart] == [e["id"] for e in history["events"]]


def test_redis_outage_delivers_each_event_once_and_reports_no_loss(
        start_server: Callable[..., ServerProcess], async_mode: str, own_redis: Any, make_client) -> None:
    """While Redis is away the server delivers at once without a seq; when Redis returns the
    same events get seqs of a new epoch and come back through history. Each reaches the
    application once, in order, and the resync reports no loss."""
    server = start_server(async_mode, env={"EVENTBUS_REDIS_URL": own_redis.url})
    client, seen = make_client(server, "pyredis", gap_timeout=0.3)
    client.connect()
    publisher = Publisher(server.url, server.token(), rate=150, total=450).start()
    try:
        publisher.wait_accepted(100)
        redis_outage(server, own_redis, publisher)
    finally:
        publisher.stop()
    accepted = publisher.ids()
    assert len(accepted) == 450 and publisher.failed == 0
    # Done when the client stands where the room's history ends (nothing else is published).
    history = requests.get(f"{server.url}/api/events", params={"room": "monitoring", "after": 0},
                           headers={"Authorization": f"Bearer {server.token()}"}, timeout=10).json()
    client.wait_for(lambda: client.positions()["monitoring"] == {"seq": history["latest_seq"],
                                                                 "epoch": history["epoch"]}, timeout=20)
    delivered = [e["id"] for e in seen.all if e["type"] == "agent_started"]
    assert delivered == accepted, "each accepted event once, in the order accepted"
    assert seen.unsequenced, "the outage delivered events without a seq"
    assert [(r["lost"], r["unverified"]) for r in seen.resyncs] == [(0, 0)] * len(seen.resyncs), seen.resyncs
    assert client.stats["lost"] == 0 and client.stats["duplicates"] >= len(seen.unsequenced)
