"""Python load generator worker (threads of ``socketio.Client``), speaking the same
JSON-line protocol as ``js/load_client.mjs``. Used when Node or ``benchmarks/js/node_modules``
is missing, and by the smoke test; its ceiling is far lower than the Node worker's.

Run: ``python load_client.py '{"url": ..., "namespace": ..., "token": ..., "clients": N}'``.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import threading
import time
from collections import Counter
from typing import Any

import socketio

BUCKET_BASE = 0.01  # ms
BUCKET_STEP = math.log(1.02)


class Recorder:
    def __init__(self, clients: int):
        self.clients = clients
        self.lock = threading.Lock()
        self.disconnects: Counter[str] = Counter()
        self.connected = 0
        self.last_any = 0.0
        self.arm(None, 0)

    def arm(self, run: str | None, expect: int) -> None:
        self.run, self.expect = run, expect
        self.received = 0
        self.hist: Counter[int] = Counter()
        self.max_ms = 0.0
        self.first_at = self.last_at = 0.0
        self.batches = 0
        self.cpu0 = _cpu()
        self.wall0 = time.time()

    def record(self, envelope: Any) -> None:
        data = envelope.get("data") if isinstance(envelope, dict) else None
        now = time.time()
        self.last_any = now
        if not isinstance(data, dict) or data.get("r") != self.run:
            return
        ms = max((now - data["t"]) * 1000, 0.001)
        with self.lock:
            self.hist[max(0, int(math.log(ms / BUCKET_BASE) / BUCKET_STEP))] += 1
            self.max_ms = max(self.max_ms, ms)
            self.first_at = self.first_at or now
            self.last_at = now
            self.received += 1

    def record_batch(self, batch: Any) -> None:
        if isinstance(batch, list):
            self.batches += 1
            for envelope in batch:
                self.record(envelope)

    def snapshot(self) -> dict[str, Any]:
        return {"received": self.received, "expect_total": self.expect * self.clients,
                "hist": {str(k): v for k, v in self.hist.items()}, "max_ms": self.max_ms,
                "first_at": self.first_at, "last_at": self.last_at, "cpu_s": _cpu() - self.cpu0,
                "wall_s": time.time() - self.wall0, "connected": self.connected,
                "disconnects": dict(self.disconnects), "batches": self.batches}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def out(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> None:
    cfg = json.loads(sys.argv[1])
    rec = Recorder(cfg["clients"])
    namespace = cfg.get("namespace") or "/"
    event = cfg.get("event") or "tool_executed"
    clients: list[socketio.Client] = []
    failed = 0
    started = time.time()
    for _ in range(cfg["clients"]):
        client = socketio.Client(reconnection=False)
        client.on(event, rec.record, namespace=namespace)
        client.on("events", rec.record_batch, namespace=namespace)

        def on_connect() -> None:
            rec.connected += 1

        def on_disconnect(reason: Any = "unknown") -> None:
            rec.connected -= 1
            rec.disconnects[str(reason)] += 1

        client.on("connect", on_connect, namespace=namespace)
        client.on("disconnect", on_disconnect, namespace=namespace)
        try:
            client.connect(cfg["url"], namespaces=[namespace], transports=["websocket"],
                           auth=({"token": cfg["token"], **({"batch": True} if cfg.get("batch") else {})}
                                 if cfg.get("token") else None), wait_timeout=30)
            clients.append(client)
        except socketio.exceptions.ConnectionError:
            failed += 1
    time.sleep(cfg.get("settle_ms", 300) / 1000)
    out({"type": "ready", "connected": rec.connected, "failed": failed, "connect_s": time.time() - started})
    for line in sys.stdin:
        if not line.strip():
            continue
        msg = json.loads(line)
        if msg["cmd"] == "arm":
            rec.arm(msg["run"], msg["expect"])
            out({"type": "armed", "run": msg["run"]})
        elif msg["cmd"] == "collect":
            deadline = time.time() + msg.get("timeout", 30)
            armed = time.time()
            while time.time() < deadline and rec.received < rec.expect * rec.clients:
                if time.time() - (rec.last_at or armed) > msg.get("idle", 3):
                    break
                time.sleep(0.02)
            out({"type": "result", **rec.snapshot()})
        elif msg["cmd"] == "quiet":
            deadline = time.time() + msg.get("timeout", 30)
            since = time.time()
            while time.time() < deadline and time.time() - max(rec.last_any, since) < msg.get("idle", 1):
                time.sleep(0.05)
            out({"type": "quiet", "drained": time.time() < deadline})
        elif msg["cmd"] == "stats":
            out({"type": "stats", **rec.snapshot()})
        elif msg["cmd"] == "quit":
            break
    # Leave without the per-client close handshakes (seconds each with threads); the server
    # sees the sockets close.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
