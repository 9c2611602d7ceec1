"""SIGKILL under load: every event a real server answered with 202 reaches the webhook
receiver after a restart (verified with the ``standardwebhooks`` library), none twice.

Four threads publish at full speed while the receiver is down or hangs; the server is
killed at a random moment, restarted on the same data dir, and the receiver comes back.
"""

from __future__ import annotations

import json
import os
import random
import stat
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

import eventbus_webhook
from eventbus.testing import wait_until
from eventbus_webhook.testing import WebhookReceiver, decode

from ..e2e.server import ServerProcess, free_port

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")

PUBLISHERS = 4


class Publishers:
    """``PUBLISHERS`` threads POSTing events as fast as the server answers, each on its own
    keep-alive session; ``acked`` holds the id of every event answered with 202."""

    def __init__(self, server: ServerProcess):
        self.url = f"{server.url}/api/events"
        self.headers = {"Authorization": f"Bearer {server.token()}"}
        self.acked: list[str] = []
        self.other: Counter[int] = Counter()  # non-202 answers before the kill
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(PUBLISHERS)]

    def _run(self, n: int) -> None:
        session = requests.Session()
        i = 0
        while not self._stop.is_set():
            i += 1
            body = {"type": "tool_executed", "data": {"tool": "search", "publisher": n, "i": i}}
            try:
                response = session.post(self.url, json=body, headers=self.headers, timeout=10)
            except requests.RequestException:
                return  # the server is gone
            if response.status_code == 202:
                self.acked.append(response.json()["id"])
            else:
                self.other[response.status_code] += 1

    def __enter__(self) -> Publishers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)


def hanging(receiver_box: list[WebhookReceiver]) -> Callable[[dict[str, Any]], int]:
    """A receiver that takes requests and never answers before it is stopped."""
    def respond(request: dict[str, Any]) -> int:
        receiver_box[0].release.wait(60)
        return 503
    return respond


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_acknowledged_event_is_delivered_once_after_sigkill(start_server, async_mode, tmp_path):
    secret = eventbus_webhook.generate_secret()
    port = free_port()
    env = {
        "EVENTBUS_DATA_DIR": str(tmp_path / "data"),
        # Many quick retries: nothing becomes a dead letter while the receiver is away.
        "EVENTBUS_WEBHOOKS": json.dumps([{"name": "receiver", "url": f"http://127.0.0.1:{port}/hook",
                                          "secret": secret, "timeout": 30,
                                          "retry_schedule": [0] + [0.2] * 200}]),
        "EVENTBUS_WEBHOOK_JITTER": "0",
    }
    acked: list[str] = []
    # Three crashes in a row, each at a random moment under full load, the receiver down
    # or hanging; each restart resumes what the previous run left.
    for receiver_state in ("down", "hanging", "down"):
        away: list[WebhookReceiver] = []
        if receiver_state == "hanging":
            away.append(WebhookReceiver(secret, hanging(away), port=port).start())
        server = start_server(async_mode, env=env, umask=0)
        with Publishers(server) as publishers:
            wait_until(lambda: len(publishers.acked) >= 20, timeout=20, message="first acknowledgements")
            time.sleep(random.uniform(0.05, 0.5))  # the random moment of the crash
            server.kill()
        assert not publishers.other, f"refusals before the kill: {dict(publishers.other)}"
        acked += publishers.acked
        for receiver in away:
            receiver.stop()

    with WebhookReceiver(secret, port=port) as receiver:
        last = start_server(async_mode, env=env, umask=0)
        wait_until(lambda: last.status()["transports"]["webhook"]["health"]["pending"] == 0,
                   timeout=60, message="the outbox drained")
        delivered = Counter(r["id"] for r in receiver.accepted)
        assert receiver.invalid == 0
    lost = set(acked) - set(delivered)
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged events never delivered, e.g. {sorted(lost)[:3]}"
    twice = [i for i, n in delivered.items() if n > 1]
    assert not twice, f"{len(twice)} events delivered twice, e.g. {twice[:3]}"
    assert all(decode(r)["data"]["tool"] == "search" for r in receiver.accepted)
    data = tmp_path / "data"
    assert mode(data) == 0o700
    assert {p.name: mode(p) for p in data.iterdir()} == {p.name: 0o600 for p in data.iterdir()}
    assert os.path.exists(data / "webhooks.sqlite3")
