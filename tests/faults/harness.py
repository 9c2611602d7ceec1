"""Pieces of the fault suite: a private Redis the test may kill, agent processes, and
clients that record every event they are handed.

Run as a script, this module is the agent: ``python harness.py PRODUCER COUNT RATE``
builds ``EventBus.from_env()`` (EVENTBUS_REDIS_URL set: a producer), emits COUNT
``tool_executed`` events with ``data={"producer": PRODUCER, "i": i}`` at RATE per second,
closes the bus and prints one JSON line: the accepted event ids and the bus's counters.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOM = "monitoring"
EVENT = "tool_executed"


def wait_for(predicate: Callable[[], Any], timeout: float, message: str = "condition",
             interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it is truthy; AssertionError with ``message`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


# -- a private Redis -------------------------------------------------------------------
class RedisProcess:
    """``redis-server`` on a free port of its own, in ``workdir``; never the shared one.

    :param aof: ``appendonly yes`` with ``appendfsync everysec`` (else no persistence at all).
    """

    def __init__(self, workdir: Path, port: int, aof: bool = False):
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.binary = binary
        self.workdir = workdir
        self.port = port
        self.aof = aof
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"redis-{port}.log"
        workdir.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        persistence = (["--appendonly", "yes", "--appendfsync", "everysec", "--aof-load-truncated", "yes"]
                       if self.aof else ["--appendonly", "no"])
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--dir", str(self.workdir), "--logfile", str(self.log_path), *persistence],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.ping, 10, "redis-server to answer")

    def ping(self) -> bool:
        import redis

        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except Exception:  # noqa: BLE001
            return False
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last fsync."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        self.kill()

    def incr_aof(self) -> Path:
        """The AOF file the newest writes go to (Redis 7 multi-part AOF)."""
        files = sorted((self.workdir / "appendonlydir").glob("*.incr.aof"))
        assert files, f"no incremental AOF in {self.workdir}"
        return files[-1]

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=5)


# -- agents ------------------------------------------------------------------------------
class Agent:
    """One agent process (this module run as a script)."""

    def __init__(self, producer: str, count: int, rate: float, env: dict[str, str], workdir: Path):
        self.producer = producer
        self.count = count
        base = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTBUS_", "WEBSOCKET_"))}
        base.update({"EVENTBUS_DATA_DIR": str(workdir / f"agent-{producer}"), "PYTHONUNBUFFERED": "1",
                     "EVENTBUS_LOAD_PLUGINS": ""})
        base.update(env)
        self.log_path = workdir / f"agent-{producer}.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), producer, str(count),
                                          str(rate)], env=base, stdout=subprocess.PIPE, stderr=log, text=True)
        self.result: dict[str, Any] | None = None
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        assert first.startswith("PARTITION "), first + self.log()
        #: the ingest partition of this producer's events
        self.partition = int(first.split()[1])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def finish(self, timeout: float = 90) -> dict[str, Any]:
        out, _ = self.proc.communicate(timeout=timeout)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        assert lines, f"agent {self.producer} printed no result (rc={self.proc.returncode}):\n{out}\n{self.log()}"
        self.result = json.loads(lines[-1])
        return self.result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)


def agent_main(producer: str, count: int, rate: float) -> None:
    from eventbus import EventBus

    bus = EventBus.from_env()
    probe = bus.redis.partition_of(type("Probe", (), {"room": ROOM})()) if bus.redis else None
    print(f"PARTITION {probe}", flush=True)
    bus.start()
    accepted: list[str] = []
    refused = 0
    start = time.monotonic()
    for i in range(count):
        try:
            event = bus.emit(EVENT, {"producer": producer, "i": i})
        except Exception:  # noqa: BLE001 - counted and reported
            refused += 1
            continue
        if event is not None:
            accepted.append(event.id)
        delay = start + (i + 1) / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    ok = bus.close(timeout=60)
    print(json.dumps({"producer": producer, "accepted": accepted, "refused": refused, "ok": ok,
                      "role": bus.role, "partition": probe, "bus": bus.counters,
                      "redis": bus.redis.health() if bus.redis else None}), flush=True)


# -- clients -------------------------------------------------------------------------------
@dataclass
class Delivery:
    epoch: str | None
    seq: int | None
    id: str
    type: str
    data: dict[str, Any]
    fetched: bool = False  # came from GET /api/events, not the socket
    at: float = field(default_factory=time.monotonic)


@dataclass
class StreamRecorder:
    """A python-socketio client following ``monitoring`` by the protocol: it resumes with
    its last seq and epoch on every (re)connect, drops what it already has by seq, fills a
    seq gap from ``GET /api/events`` and, on ``resync_required``, reads the (new) epoch's
    history. It records every delivery, every gap on the socket and every loss it reports."""

    name: str
    deliveries: list[Delivery] = field(default_factory=list)
    epoch: str | None = None
    last: int | None = None
    socket_gaps: list[tuple[str | None, int, int]] = field(default_factory=list)
    reported_lost: list[tuple[str | None, int]] = field(default_factory=list)
    seq_repeats: int = 0  # envelopes dropped because their seq was already delivered
    resyncs: list[dict[str, Any]] = field(default_factory=list)
    connects: int = 0
    server: Any = None
    sio: Any = None

    def connect(self, server: Any) -> None:
        from ..e2e.ordered import ordered_client

        self.server = server
        if self.epoch is None:
            self.epoch = server.status()["history"]["epoch"]
        sio = ordered_client(reconnection=False)
        sio.on("*", self._on_any, namespace="/monitoring")
        auth: dict[str, Any] = {"token": server.token()}
        if self.epoch is not None and self.last is not None:
            auth["resume"] = {"rooms": {ROOM: self.last}, "epoch": self.epoch}
        sio.connect(server.url, namespaces=["/monitoring"], auth=auth, transports=["websocket"], wait_timeout=10)
        self.connects += 1
        self.sio = sio

    def close(self) -> None:
        if self.sio is not None:
            try:
                self.sio.disconnect()
            except Exception:  # noqa: BLE001
                pass
            self.sio = None

    # handlers run on the socket's reading thread, one message after another
    def _on_any(self, name: str, *args: Any) -> None:
        payload = args[0] if args else None
        if not isinstance(payload, dict):
            return
        if name == "resync_required" and payload.get("room") == ROOM:
            self._resync(payload)
        elif "seq" in payload and payload.get("room") == ROOM and "id" in payload:
            self._event(payload, fetched=False)

    def _event(self, envelope: dict[str, Any], fetched: bool) -> None:
        seq = envelope.get("seq")
        if seq is None:
            self._deliver(envelope, None, fetched)
            return
        if self.last is None:
            self.last = seq - 1  # the join point
        if seq <= self.last:
            self.seq_repeats += 1
            return
        if seq > self.last + 1:
            if not fetched:
                self.socket_gaps.append((self.epoch, self.last + 1, seq - 1))
            self._fetch(upto=seq - 1)
            if seq <= (self.last or 0):
                self.seq_repeats += 1
                return
            for missing in range((self.last or 0) + 1, seq):
                self.reported_lost.append((self.epoch, missing))
        self._deliver(envelope, seq, fetched)
        self.last = seq

    def _deliver(self, envelope: dict[str, Any], seq: int | None, fetched: bool) -> None:
        self.deliveries.append(Delivery(self.epoch, seq, envelope["id"], envelope["type"],
                                        envelope.get("data") or {}, fetched))

    def _resync(self, info: dict[str, Any]) -> None:
        self.resyncs.append(dict(info))
        if info.get("epoch") != self.epoch:
            self.epoch = info.get("epoch")
            self.last = 0
        self._fetch(upto=None)

    def _fetch(self, upto: int | None) -> None:
        """Deliver history after ``last`` (up to ``upto``, or everything); a seq history
        does not have is reported lost."""
        import requests

        after = self.last or 0
        while True:
            response = requests.get(f"{self.server.url}/api/events", params={"room": ROOM, "after": after},
                                    headers={"Authorization": f"Bearer {self.server.token()}"}, timeout=10)
            body = response.json()
            assert response.status_code == 200 and body.get("ok"), body
            if body["epoch"] != self.epoch:
                return  # another epoch began meanwhile: its resync_required follows
            for raw in body["events"]:
                if upto is not None and raw["seq"] > upto:
                    return
                if raw["seq"] > (self.last or 0) + 1:
                    for missing in range((self.last or 0) + 1, raw["seq"]):
                        self.reported_lost.append((self.epoch, missing))
                    self.last = raw["seq"] - 1
                self._event(raw, fetched=True)
            target = body["latest_seq"] if upto is None else min(upto, body["latest_seq"])
            if (self.last or 0) >= target:
                return
            if not body["events"]:
                if upto is None:  # the end of the range is gone from history
                    self.reported_lost += [(self.epoch, seq) for seq in range((self.last or 0) + 1, target + 1)]
                    self.last = target
                return
            after = self.last or 0

    def agent_events(self) -> list[Delivery]:
        return [d for d in self.deliveries if d.type == EVENT and "producer" in d.data]


class HelperClient:
    """The product's :class:`eventbus_client.EventBusClient`, recording what its handlers get."""

    def __init__(self, name: str, server: Any):
        from eventbus_client import EventBusClient

        self.name = name
        self.envelopes: list[dict[str, Any]] = []
        self.resyncs: list[dict[str, Any]] = []
        self.client = EventBusClient(server.url, token=lambda: server.token(), on_resync=self.resyncs.append,
                                     reconnect_delay=0.2, reconnect_delay_max=1.0)
        self.client.on(EVENT, self.envelopes.append)
        self.client.connect()

    def move_to(self, server: Any) -> None:
        """Where its next reconnect goes (what a load balancer does for a dead server)."""
        self.client.url = server.url.rstrip("/")  # the servers share the token secret

    def agent_events(self) -> list[dict[str, Any]]:
        return [e for e in list(self.envelopes) if "producer" in (e.get("data") or {})]

    def close(self) -> None:
        self.client.close()


# -- checks ----------------------------------------------------------------------------------
def check_stream(name: str, got: list[tuple[str, str, int]], accepted: dict[str, list[str]],
                 allowed_twice: frozenset[str] = frozenset()) -> list[str]:
    """Problems with one client's agent events ``got`` = ``[(id, producer, i)]`` in delivery
    order, against ``accepted`` = ``{producer: [event id of i=0, 1, ...]}``: each accepted
    event exactly once (``allowed_twice`` may come a second time), nothing else, each
    producer's in its order (of first deliveries)."""
    problems = []
    ids = [event_id for event_id, _p, _i in got]
    twice = [event_id for event_id in set(ids) if ids.count(event_id) > 1]
    dups = [event_id for event_id in twice if event_id not in allowed_twice or ids.count(event_id) > 2]
    if dups:
        problems.append(f"{name}: {len(dups)} event(s) delivered more than once")
    wanted = {event_id for ids_ in accepted.values() for event_id in ids_}
    missing = wanted - set(ids)
    if missing:
        problems.append(f"{name}: {len(missing)} accepted event(s) never delivered")
    extra = set(ids) - wanted
    if extra:
        problems.append(f"{name}: {len(extra)} event(s) nobody accepted")
    for producer in accepted:
        first_seen: list[int] = []
        for i in (i for _id, p, i in got if p == producer):
            if i not in first_seen:
                first_seen.append(i)
        if first_seen != sorted(first_seen):
            bad = next(k for k in range(1, len(first_seen)) if first_seen[k] < first_seen[k - 1])
            problems.append(f"{name}: producer {producer} out of order: i={first_seen[bad]} after "
                            f"i={first_seen[bad - 1]}")
    return problems


def republished(recorder: StreamRecorder) -> dict[str, list[tuple[str | None, int | None]]]:
    """Agent events the recorder got twice, once in each of two epochs: published again after
    Redis lost its data (``{id: [(epoch, seq), ...]}``)."""
    copies: dict[str, list[tuple[str | None, int | None]]] = {}
    for d in recorder.agent_events():
        copies.setdefault(d.id, []).append((d.epoch, d.seq))
    return {event_id: where for event_id, where in copies.items()
            if len(where) == 2 and where[0][0] != where[1][0]}


def check_seq(recorder: StreamRecorder) -> list[str]:
    """The recorder's sequenced deliveries, per epoch: contiguous, each seq once."""
    problems = []
    by_epoch: dict[str | None, list[int]] = {}
    for d in recorder.deliveries:
        if d.seq is not None:
            by_epoch.setdefault(d.epoch, []).append(d.seq)
    for epoch, seqs in by_epoch.items():
        if seqs != list(range(seqs[0], seqs[0] + len(seqs))):
            problems.append(f"{recorder.name}: seqs of epoch {epoch} not contiguous")
    return problems


if __name__ == "__main__":
    agent_main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))
