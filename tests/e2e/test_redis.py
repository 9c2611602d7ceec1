"""Scale-out through Redis with real processes: two servers, agents in a third process,
a killed server, and Redis itself stopping and coming back."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from eventbus.testing import wait_until

from .ordered import ordered_client
from .server import ServerProcess, free_port

APPS = Path(__file__).parent / "apps"
REDIS_URL = os.environ.get("EVENTBUS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
pytestmark = pytest.mark.redis


def _redis_client(url: str) -> Any:
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"EVENTBUS_TEST_REDIS_URL={url} does not answer: {exc}")
    return client


@pytest.fixture
def redis_env() -> Iterator[dict[str, str]]:
    """The test Redis with a key prefix of this test's own; its keys are removed afterwards."""
    client = _redis_client(REDIS_URL)
    prefix = "{ebtest-" + uuid.uuid4().hex[:10] + "}"
    yield {"EVENTBUS_REDIS_URL": REDIS_URL, "EVENTBUS_REDIS_PREFIX": prefix, "EVENTBUS_REDIS_CLAIM_IDLE": "2"}
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


class ResumingClient:
    """Follows the room ``monitoring`` on one server after another, resuming with the last
    seq and epoch it saw, and records what it got."""

    def __init__(self, event: str = "tool_executed"):
        self.seqs: list[int] = []
        self.ids: list[str] = []
        self.all_seqs: list[int] = []  # every event of the room, presence included
        self.resyncs = 0
        self.last = 0
        self.epoch: str | None = None
        self.event = event
        self.sio: Any = None

    def _on_event(self, envelope: dict[str, Any]) -> None:
        seq = envelope.get("seq")
        if seq is not None and seq <= self.last:
            return  # a replayed event already seen
        if seq is not None:
            self.last = seq
            self.all_seqs.append(seq)
        if envelope["type"] == self.event:
            self.seqs.append(seq)
            self.ids.append(envelope["id"])

    def _on_resync(self, data: dict[str, Any]) -> None:
        # The shared history started again (Redis lost its data): follow the new numbering.
        self.epoch = data["epoch"]
        self.last = data["latest_seq"]
        self.resyncs += 1

    def connect(self, server: ServerProcess) -> None:
        sio = ordered_client(reconnection=False)
        sio.on("resync_required", self._on_resync, namespace="/monitoring")
        sio.on("*", lambda name, *args: self._on_event(args[0]) if args and isinstance(args[0], dict)
               and "seq" in args[0] else None, namespace="/monitoring")
        auth: dict[str, Any] = {"token": server.token()}
        if self.epoch is not None:
            auth["resume"] = {"rooms": {"monitoring": self.last}, "epoch": self.epoch}
        sio.connect(server.url, namespaces=["/monitoring"], auth=auth, transports=["websocket"], wait_timeout=10)
        if self.epoch is None:
            self.epoch = server.status()["history"]["epoch"]
        self.sio = sio

    def close(self) -> None:
        if self.sio is not None:
            self.sio.disconnect()


def run_agent(env: dict[str, str], count: int, rate: float = 0.0) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(APPS / "agent_worker.py"), str(count), str(rate)],
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_servers_and_an_agent_process(start_server: Callable[..., ServerProcess], async_mode: str,
                                          redis_env: dict[str, str]) -> None:
    a = start_server(async_mode, env=redis_env)
    b = start_server("threading", env=redis_env)
    clients = [ResumingClient(), ResumingClient()]
    try:
        clients[0].connect(a)
        clients[1].connect(b)
        agent = run_agent(redis_env, 300)
        out, _ = agent.communicate(timeout=60)
        assert "SENT 300 role=producer" in out, out
        a.publish("tool_executed", {"from": "http-a"})
        wait_until(lambda: all(len(c.seqs) >= 301 for c in clients), 30, message="301 events at both clients")
        for client in clients:
            assert len(client.seqs) == len(set(client.ids)) == 301
            assert client.seqs == sorted(client.seqs)
        assert clients[0].ids == clients[1].ids
        ingested = a.status()["redis"]["ingested"] + b.status()["redis"]["ingested"]
        assert ingested == 300  # each agent event handled by exactly one server
    finally:
        for client in clients:
            client.close()


def test_sigkill_a_server_while_events_flow(start_server: Callable[..., ServerProcess],
                                            redis_env: dict[str, str]) -> None:
    a = start_server("threading", env=redis_env)
    b = start_server("threading", env=redis_env)
    follower = ResumingClient()
    follower.connect(a)
    agent = run_agent(redis_env, 400, rate=400)
    try:
        wait_until(lambda: len(follower.seqs) >= 50, 20, message="first events")
        a.kill()
        follower.connect(b)  # the client's reconnect lands on the surviving server
        out, _ = agent.communicate(timeout=60)
        assert "SENT 400" in out, out
        wait_until(lambda: len(follower.seqs) >= 400, 30, message="all 400 events after failover")
        seen = follower.all_seqs
        assert seen == list(range(seen[0], seen[0] + len(seen)))  # no gap, no duplicate
        assert len(follower.ids) == len(set(follower.ids)) == 400
    finally:
        agent.kill()
        follower.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Any]:
    """A private redis-server on a free port that the test may stop and start."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()

    class Instance:
        url = f"redis://127.0.0.1:{port}/0"
        proc: subprocess.Popen[bytes] | None = None

        def start(self) -> None:
            self.proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                          "--appendonly", "no", "--dir", str(tmp_path)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            client = __import__("redis").Redis.from_url(self.url)
            wait_until(lambda: _pings(client), 10, message="redis up")

        def stop(self) -> None:
            if self.proc and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)

    instance = Instance()
    instance.start()
    yield instance
    instance.stop()


def _health(server: ServerProcess) -> tuple[int, str]:
    import requests

    response = requests.get(f"{server.url}/api/health", timeout=5)
    return response.status_code, response.json()["status"]


def _pings(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001
        return False


def test_redis_stops_and_returns(start_server: Callable[..., ServerProcess], own_redis: Any) -> None:
    env = {"EVENTBUS_REDIS_URL": own_redis.url}
    a = start_server("threading", env=env)
    b = start_server("threading", env=env)
    at_a, at_b = ResumingClient(), ResumingClient()
    at_a.connect(a)
    at_b.connect(b)
    sent: list[str] = []
    stop = threading.Event()

    def publisher() -> None:
        while not stop.is_set() and len(sent) < 600:
            sent.append(a.publish("tool_executed", {"n": len(sent)})["id"])
            time.sleep(0.005)

    thread = threading.Thread(target=publisher)
    thread.start()
    try:
        wait_until(lambda: len(sent) >= 100, 20, message="publishing")
        own_redis.stop()
        wait_until(lambda: a.status()["status"] == "degraded", 15, message="status degraded")
        # A load balancer is told: 503 degraded while Redis is away or events wait for it.
        wait_until(lambda: _health(a) == (503, "degraded"), 15, message="/api/health 503 degraded")
        outage_start = len(sent)
        wait_until(lambda: len(sent) >= outage_start + 100, 20, message="publishing while Redis is down")
        # Local clients keep receiving while Redis is away.
        wait_until(lambda: len(at_a.ids) >= outage_start + 50, 20, message="local delivery during outage")
        own_redis.start()
        try:
            wait_until(lambda: a.status()["redis"]["status"] == "ok" and a.status()["redis"]["pending"] == 0,
                       30, message="redis healthy again and buffer flushed")
        except AssertionError:
            raise AssertionError(f"{a.status()['redis']} sent={len(sent)}") from None
        thread.join(30)
        stop.set()
        assert len(sent) == 600
        wait_until(lambda: _health(a) == (200, "ok"), 15, message="/api/health 200 ok once flushed")
        wait_until(lambda: len(set(at_a.ids)) >= 600, 30, message="every event at the publishing server")
        assert set(at_a.ids) == set(sent)
        # The other server gets what passed through Redis; anything in flight when Redis
        # died without persistence is the loss window (reported, bounded).
        wait_until(lambda: len(set(at_b.ids)) >= 550, 30, message="most events at the other server")
        lost = len(set(sent) - set(at_b.ids))
        print(f"redis outage: {len(sent)} sent, {lost} missing at the other server")
        assert a.status()["status"] == "active"
    finally:
        stop.set()
        thread.join(10)
        at_a.close()
        at_b.close()
