"""No configured secret in a log line or a public response: the Redis password (also when
Redis goes away and comes back), API keys, the signing key and a webhook endpoint's secret,
URL credentials and ``?api_key=`` (its deliveries fail, and the failures are logged)."""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import socketio

from ..e2e.server import ServerProcess, find_leaks, free_port
from .probe import wait_for

REDIS_PASSWORD = "redis-pw-" + secrets.token_hex(12)
API_KEY = "apikey-" + secrets.token_hex(12)
HOOK_PASSWORD = "hook-pw-" + secrets.token_hex(12)
HOOK_QUERY_KEY = "hook-query-" + secrets.token_hex(12)
HOOK_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")
SECRETS = {REDIS_PASSWORD: "redis password", API_KEY: "API key", HOOK_PASSWORD: "webhook URL password",
           HOOK_QUERY_KEY: "webhook URL api_key", HOOK_SECRET: "webhook secret"}


class PrivateRedis:
    """A ``redis-server --requirepass`` on a free port, which the test may kill and restart."""

    def __init__(self, binary: str, workdir: Path):
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://default:{REDIS_PASSWORD}@127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--requirepass", REDIS_PASSWORD,
             "--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        redis = pytest.importorskip("redis")
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)

        def pings() -> bool:
            try:
                return bool(client.ping())
            except redis.exceptions.RedisError:
                return False

        wait_for(pings, 10, message="private redis-server up")
        client.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    instance = PrivateRedis(binary, tmp_path)
    instance.start()
    yield instance
    instance.kill()


def _env(redis_url: str) -> dict[str, str]:
    closed = free_port()  # nothing listens there: every delivery fails and is logged
    hook = {"name": "closed", "url": f"http://hookuser:{HOOK_PASSWORD}@127.0.0.1:{closed}/hook?api_key={HOOK_QUERY_KEY}",
            "secret": HOOK_SECRET, "retry_schedule": [0, 0.2, 60]}
    return {"EVENTBUS_REDIS_URL": redis_url, "EVENTBUS_API_KEYS": f"{API_KEY}=ingest:publisher",
            "EVENTBUS_WEBHOOKS": json.dumps([hook])}


def _publish_with_api_key(server: ServerProcess, n: int) -> dict[str, Any]:
    response = requests.post(f"{server.url}/api/events", json={"type": "agent_started", "data": {"agent_name": f"a{n}"}},
                             headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10)
    assert response.status_code == 202, response.text
    return response.json()


def _redis_state(server: ServerProcess) -> str:
    return (server.status().get("redis") or {}).get("status", "?")


def test_no_secret_in_logs_or_public_responses(start_server: Callable[..., ServerProcess], async_mode: str,
                                               private_redis: PrivateRedis) -> None:
    server = start_server(async_mode, env=_env(private_redis.url))
    assert server.secrets().keys() >= SECRETS.keys()  # the scan on stop looks for each of them
    sio = socketio.Client(reconnection=False)
    sio.connect(server.url, namespaces=["/monitoring"], auth={"api_key": API_KEY}, transports=["websocket"],
                wait_timeout=10)
    sio.disconnect()
    _publish_with_api_key(server, 0)

    private_redis.kill()
    _publish_with_api_key(server, 1)  # buffered while Redis is away
    wait_for(lambda: _redis_state(server) == "degraded", 15, message="redis degraded")
    bodies = {"status while redis is away": requests.get(f"{server.url}/api/websocket/status", timeout=5).text}
    private_redis.start()
    wait_for(lambda: _redis_state(server) == "ok", 20, message="redis back")
    wait_for(lambda: "is back" in server.log(), 10, message="the reconnect log line")
    wait_for(lambda: server.status()["transports"]["webhook"]["health"].get("failures", 0) >= 2, 15,
             message="failed webhook deliveries (first attempt and a retry)")

    for path in ("/api/websocket/status", "/metrics", "/api/health"):
        bodies[path] = requests.get(f"{server.url}{path}", timeout=5).text
    listed = subprocess.run([sys.executable, "-m", "eventbus", "plugins", "--json"], env=server.env,
                            cwd=server.workdir, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    bodies["eventbus plugins --json"] = listed.stdout + listed.stderr
    leaks = [leak for label, text in bodies.items() for leak in find_leaks(text, SECRETS, label)]
    leaks += find_leaks(server.log_path.read_text(errors="replace"), SECRETS, "server log")
    assert leaks == []
    server.stop()  # and the scan of ServerProcess: every secret of its environment, the log
