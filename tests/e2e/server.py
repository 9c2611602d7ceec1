"""Start real server processes on free ports for end-to-end tests, and always stop them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

SECRET = "e2e-secret-" + "x" * 40
ASYNC_MODES = ("threading", "gevent", "eventlet")


def selected_modes() -> list[str]:
    """``EVENTBUS_TEST_ASYNC_MODES=gevent,eventlet`` narrows the matrix (tox sets it)."""
    raw = os.environ.get("EVENTBUS_TEST_ASYNC_MODES")
    return [m for m in (raw.split(",") if raw else ASYNC_MODES) if m]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_token(user: str = "admin", roles: tuple[str, ...] = ("admin", "publisher"), ttl: int = 600,
               secret: str = SECRET) -> str:
    from eventbus_auth import create_token

    return create_token(secret, user, list(roles), ttl)


class ServerProcess:
    """``eventbus serve`` (or another command) in a child process with its own data dir."""

    def __init__(self, workdir: Path, async_mode: str = "threading", env: dict[str, str] | None = None,
                 command: list[str] | None = None, port: int | None = None):
        self.workdir = workdir
        self.async_mode = async_mode
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"server-{self.port}.log"
        self.command = command
        base = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTBUS_", "WEBSOCKET_"))}
        base.update({
            "EVENTBUS_SECRET_KEY": SECRET,
            "EVENTBUS_DATA_DIR": str(workdir / "data"),
            "PYTHONUNBUFFERED": "1",
        })
        base.update(env or {})
        self.env = base
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 40.0) -> "ServerProcess":
        cmd = self.command or [sys.executable, "-m", "eventbus", "serve"]
        cmd = [*cmd, "--port", str(self.port), "--async-mode", self.async_mode]
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     cwd=self.workdir, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(f"{self.url}/api/health", timeout=1).status_code < 500:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not answer within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except FileNotFoundError:
            return ""

    def token(self, user: str = "admin", roles: tuple[str, ...] = ("admin", "publisher"), ttl: int = 600) -> str:
        return make_token(user, roles, ttl, secret=self.env["EVENTBUS_SECRET_KEY"])

    def status(self) -> dict[str, Any]:
        return requests.get(f"{self.url}/api/websocket/status", timeout=5).json()

    def publish(self, event_type: str, data: dict[str, Any], token: str | None = None, **fields: Any) -> dict[str, Any]:
        response = requests.post(f"{self.url}/api/events", json={"type": event_type, "data": data, **fields},
                                 headers={"Authorization": f"Bearer {token or self.token()}"}, timeout=10)
        assert response.status_code == 202, response.text
        return response.json()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        except ProcessLookupError:
            pass
