"""Start real server processes on free ports for end-to-end tests, and always stop them."""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

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


#: Values shorter than this are not looked for (they would match by chance).
MIN_SECRET_LENGTH = 8


class SecretLeak(AssertionError):
    """A configured secret appeared in a server's log or in a response body."""


def _url_secrets(url: Any) -> list[str]:
    """The user info, password and query (whole and each value) of ``url``."""
    if not isinstance(url, str):
        return []
    parts = urlsplit(url)
    found = [parts.query, *(value for _, value in parse_qsl(parts.query))]
    if "@" in parts.netloc:
        found.append(parts.netloc.rpartition("@")[0])
        found.append(parts.password or "")
    return found


def configured_secrets(env: Mapping[str, str], data_dir: Path | None = None) -> dict[str, str]:
    """``{secret: where it was configured}`` for every secret in a server's environment:
    ``EVENTBUS_SECRET_KEY`` (or the key generated in ``data_dir``), the user info and query
    of ``EVENTBUS_REDIS_URL``, the ``EVENTBUS_API_KEYS`` keys, and each webhook's secrets,
    header values and URL user info and query. Values shorter than
    :data:`MIN_SECRET_LENGTH` are left out; URL-encoded values are looked for decoded too."""
    found: list[tuple[str, str]] = [("EVENTBUS_SECRET_KEY", env.get("EVENTBUS_SECRET_KEY", ""))]
    if data_dir is not None:
        try:
            found.append(("generated secret_key", (data_dir / "secret_key").read_text().strip()))
        except OSError:
            pass
    found += [("EVENTBUS_REDIS_URL", v) for v in _url_secrets(env.get("EVENTBUS_REDIS_URL"))]
    for item in env.get("EVENTBUS_API_KEYS", "").split(","):
        found.append(("EVENTBUS_API_KEYS", item.partition("=")[0].strip()))
    try:
        hooks = json.loads(env.get("EVENTBUS_WEBHOOKS") or "[]")
    except ValueError:
        hooks = []
    for hook in hooks if isinstance(hooks, list) else []:
        if not isinstance(hook, dict):
            continue
        where = f"EVENTBUS_WEBHOOKS {hook.get('name', '?')}"
        secrets = hook.get("secrets") if isinstance(hook.get("secrets"), list) else [hook.get("secret")]
        headers = hook.get("headers") if isinstance(hook.get("headers"), dict) else {}
        for value in [*secrets, *headers.values(), *_url_secrets(hook.get("url"))]:
            found.append((where, value))
    out: dict[str, str] = {}
    for where, value in found:
        if not isinstance(value, str):
            continue
        for form in {value, unquote(value)}:
            if len(form) >= MIN_SECRET_LENGTH:
                out.setdefault(form, where)
    return out


def find_leaks(text: str, secrets: Mapping[str, str], label: str) -> list[str]:
    """One description per line of ``text`` holding a secret (masked in the description)."""
    leaks = []
    for number, line in enumerate(text.splitlines(), 1):
        hits = [s for s in secrets if s in line]
        if hits:
            for secret in sorted(hits, key=len, reverse=True):
                line = line.replace(secret, f"<{secrets[secret]}>")
            leaks.append(f"{label}:{number}: {line[:300]}")
    return leaks


#: Servers still running, stopped at exit whatever happened to the test that started them.
_RUNNING: set[ServerProcess] = set()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_RUNNING):
        server.kill()


def make_token(user: str = "admin", roles: tuple[str, ...] = ("admin", "publisher"), ttl: int = 600,
               secret: str = SECRET) -> str:
    from eventbus_auth import create_token

    return create_token(secret, user, list(roles), ttl)


class ServerProcess:
    """``eventbus serve`` (or another command) in a child process with its own data dir.

    ``umask`` is the child's file mode creation mask (``None``: this process's). On
    :meth:`stop` the log and the status bodies are looked through for the secrets the server
    was configured with; one found fails the test (:class:`SecretLeak`)."""

    def __init__(self, workdir: Path, async_mode: str = "threading", env: dict[str, str] | None = None,
                 command: list[str] | None = None, port: int | None = None, umask: int | None = None):
        self.workdir = workdir
        self.async_mode = async_mode
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"server-{self.port}.log"
        self.command = command
        self.umask = umask
        base = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTBUS_", "WEBSOCKET_"))}
        base.update({
            "EVENTBUS_SECRET_KEY": SECRET,
            "EVENTBUS_DATA_DIR": str(workdir / "data"),
            "PYTHONUNBUFFERED": "1",
        })
        base.update(env or {})
        self.env = base
        self.proc: subprocess.Popen[bytes] | None = None
        self.leaks: list[str] = []  # secrets found in the log or in status bodies
        self._reported = 0

    def start(self, timeout: float = 40.0) -> ServerProcess:
        cmd = self.command or [sys.executable, "-m", "eventbus", "serve"]
        cmd = [*cmd, "--port", str(self.port), "--async-mode", self.async_mode]
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child writes it; closed in stop()
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     cwd=self.workdir, start_new_session=True,
                                     umask=-1 if self.umask is None else self.umask)
        _RUNNING.add(self)
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

    def secrets(self) -> dict[str, str]:
        """The secrets this server was configured with (see :func:`configured_secrets`)."""
        return configured_secrets(self.env, Path(self.env.get("EVENTBUS_DATA_DIR", self.workdir / "data")))

    def check_body(self, label: str, text: str) -> str:
        """Record any configured secret found in a response body; returns ``text``."""
        self.leaks += find_leaks(text, self.secrets(), label)
        return text

    def status(self) -> dict[str, Any]:
        response = requests.get(f"{self.url}/api/websocket/status", timeout=5)
        return json.loads(self.check_body("/api/websocket/status", response.text))

    def _check_public_bodies(self) -> None:
        """Status and metrics of a running server, looked through for secrets."""
        for path in ("/api/websocket/status", "/metrics"):
            try:
                self.check_body(path, requests.get(f"{self.url}{path}", timeout=2).text)
            except requests.RequestException:
                return  # not an HTTP server, or busy: the log is still checked

    def check_secrets(self) -> None:
        """Raise :class:`SecretLeak` when a configured secret appeared in the log (the
        admin token of the banner is a token, not a configured secret) or in a status body
        fetched through this object. Each leak is reported once."""
        try:
            log = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            log = ""
        found = [*self.leaks, *find_leaks(log, self.secrets(), self.log_path.name)]
        new = found[self._reported:]
        self._reported = len(found)
        if new:
            raise SecretLeak(f"{len(new)} line(s) hold a configured secret:\n" + "\n".join(new[:20]))

    def publish(self, event_type: str, data: dict[str, Any], token: str | None = None, **fields: Any) -> dict[str, Any]:
        response = requests.post(f"{self.url}/api/events", json={"type": event_type, "data": data, **fields},
                                 headers={"Authorization": f"Bearer {token or self.token()}"}, timeout=10)
        assert response.status_code == 202, response.text
        return response.json()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        _RUNNING.discard(self)
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """Stop the server, then fail (:class:`SecretLeak`) if its log or its status
        bodies showed a configured secret."""
        if self.proc is not None and self.proc.poll() is None:
            self._check_public_bodies()
            self._terminate()
        _RUNNING.discard(self)
        if self.proc is not None:
            self.check_secrets()

    def _terminate(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        except ProcessLookupError:
            pass
