"""The command line as a newcomer meets it: one data dir per user, so commands started from
any folder agree with the server; a token signed with another key says so; a port in use,
or no server at all, is one line and a non-zero exit; servers do not log noise on ordinary
WebSocket closes; ``eventbus serve`` runs gevent unless told otherwise."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import socketio

from eventbus import Config
from eventbus.testing import started_config, wait_until
from eventbus_client import EventBusClient, EventBusClientError

from .ordered import ordered_client
from .server import SECRET, ServerProcess, free_port

HINT = "signed with another key: is EVENTBUS_SECRET_KEY / EVENTBUS_DATA_DIR the same"
#: Lines a server must not log for ordinary WebSocket traffic (Werkzeug's and gevent's
#: reactions to reading a closed WebSocket as a request, their start-up notices).
NOISE = ("Bad request", "Request-URI Too Long", "Invalid HTTP method", "Traceback", "code 400", "code 414",
         "production deployment", "development server", "Serving Flask app")


def base_env(**extra: str) -> dict[str, str]:
    """This process's environment without any EVENTBUS_*/WEBSOCKET_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTBUS_", "WEBSOCKET_"))}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def cli(*args: str, env: dict[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-m", "eventbus", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


class PlainServe:
    """``eventbus serve --port P`` exactly as a user types it: no ``--async-mode``."""

    def __init__(self, workdir: Path, env: dict[str, str]):
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "serve.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "eventbus", "serve", "--port", str(self.port)],
                                         env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 40) -> None:
        def ready() -> bool:
            assert self.proc.poll() is None, f"server exited:\n{self.log()}"
            try:
                return requests.get(f"{self.url}/api/health", timeout=1).status_code < 500
            except requests.RequestException:
                return False

        wait_until(ready, timeout, interval=0.05, message="server answering")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@pytest.fixture
def plain_serve() -> Iterator[Callable[[Path, dict[str, str]], PlainServe]]:
    started: list[PlainServe] = []

    def start(workdir: Path, env: dict[str, str]) -> PlainServe:
        started.append(PlainServe(workdir, env))
        started[-1].wait_ready()
        return started[-1]

    yield start
    for serve in started:
        serve.stop()


# -- one data dir per user ------------------------------------------------------------------

def test_commands_from_any_folder_share_the_servers_generated_key(tmp_path: Path, plain_serve: Any) -> None:
    """Zero configuration: the server, ``token create`` and ``emit`` are started from three
    different folders and agree, because the generated key is in the per-user data dir."""
    home = tmp_path / "home"
    env = base_env(HOME=str(home), XDG_DATA_HOME=str(home / ".local" / "share"))
    serve = plain_serve(tmp_path / "server-folder", env)
    data_dir = home / ".local" / "share" / "eventbus"
    expected = data_dir if sys.platform.startswith("linux") else None
    banner = serve.log()
    if expected is not None:
        assert f"data dir:           {expected}" in banner
        assert (expected.stat().st_mode & 0o777, (expected / "secret_key").stat().st_mode & 0o777) == (0o700, 0o600)
    assert not (tmp_path / "server-folder" / ".eventbus").exists()

    token = cli("token", "create", "--user", "ops", "--role", "publisher", env=env, cwd=tmp_path / "elsewhere")
    assert token.returncode == 0, token.stderr
    emitted = cli("emit", "agent_started", "--data", '{"agent_name": "cli"}', "--url", serve.url,
                  "--token", token.stdout.strip(), env=env, cwd=tmp_path / "elsewhere")
    assert emitted.returncode == 0, emitted.stderr
    minted = cli("emit", "agent_started", "--data", "{}", env=dict(env, EVENTBUS_URL=serve.url),
                 cwd=tmp_path / "a-third-folder")  # no --token: one signed with the same local key
    assert minted.returncode == 0, minted.stderr
    assert json.loads(minted.stdout)["seq"] == json.loads(emitted.stdout)["seq"] + 1
    assert not (tmp_path / "elsewhere" / ".eventbus").exists()


def test_a_former_dot_eventbus_folder_is_pointed_out(isolated_env: dict[str, str], tmp_path: Path) -> None:
    from eventbus_socketio.commands import _former_data_dir_note

    env = {k: v for k, v in isolated_env.items() if k != "EVENTBUS_DATA_DIR"}
    assert _former_data_dir_note(Config.from_env(env)) is None
    (tmp_path / ".eventbus").mkdir()
    note = _former_data_dir_note(Config.from_env(env))
    assert note and "EVENTBUS_DATA_DIR=./.eventbus" in note and Config.from_env(env).data_dir in note
    assert _former_data_dir_note(Config.from_env({"EVENTBUS_DATA_DIR": "./.eventbus"})) is None


def test_serve_without_a_mode_runs_gevent(tmp_path: Path, plain_serve: Any) -> None:
    if importlib.util.find_spec("gevent") is None:
        pytest.skip("gevent is not installed")
    serve = plain_serve(tmp_path, base_env(EVENTBUS_SECRET_KEY=SECRET, EVENTBUS_DATA_DIR=str(tmp_path / "data")))
    assert serve.log().startswith(f"eventbus gevent server on {serve.url}")
    assert requests.get(f"{serve.url}/api/websocket/status", timeout=5).json()["async_mode"] == "gevent"


def test_serve_mode_is_gevent_unless_configured(isolated_env: dict[str, str], monkeypatch: Any) -> None:
    from eventbus_socketio import commands

    if importlib.util.find_spec("gevent") is None:
        pytest.skip("gevent is not installed")
    assert commands.serve_mode(Config.from_env(isolated_env)) == "gevent"
    assert commands.serve_mode(Config.from_env({**isolated_env, "WEBSOCKET_ASYNC_MODE": "threading"})) == "threading"
    assert commands.serve_mode(Config.from_env(isolated_env), "eventlet") == "eventlet"
    assert started_config(isolated_env).async_mode == "threading"  # embedded apps
    monkeypatch.setattr(commands.importlib.util, "find_spec", lambda name, *a: None)
    assert commands.serve_mode(Config.from_env(isolated_env)) == "threading"


def test_a_token_signed_with_another_key_says_so(start_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    server = start_server("threading")
    other = cli("token", "create", "--user", "ops", "--role", "publisher",
                env=base_env(EVENTBUS_DATA_DIR=str(tmp_path / "another-data-dir")), cwd=tmp_path)
    assert other.returncode == 0, other.stderr
    token = other.stdout.strip()

    response = requests.post(f"{server.url}/api/events", json={"type": "agent_started", "data": {}},
                             headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert response.status_code == 401 and HINT in response.json()["error"]["message"]
    emitted = cli("emit", "agent_started", "--url", server.url, "--token", token, env=base_env(), cwd=tmp_path)
    assert emitted.returncode != 0 and HINT in emitted.stderr
    assert len(emitted.stderr.strip().splitlines()) == 1, emitted.stderr

    errors: list[Any] = []
    sio = ordered_client(reconnection=False)
    sio.on("connect_error", errors.append, namespace="/monitoring")
    with pytest.raises(socketio.exceptions.ConnectionError):
        sio.connect(server.url, namespaces=["/monitoring"], auth={"token": token}, wait_timeout=10)
    assert errors and errors[0]["code"] == "unauthorized" and HINT in errors[0]["message"], errors
    for secret in (SECRET, (tmp_path / "another-data-dir" / "secret_key").read_text().strip()):
        assert secret not in response.text and secret not in emitted.stderr and secret not in str(errors)


# -- one-line errors ------------------------------------------------------------------------

def test_port_in_use_is_one_line_and_nothing_is_printed_before(async_mode: str, tmp_path: Path) -> None:
    """The port is held with SO_REUSEPORT, as another eventlet server would hold it: the
    server must still refuse to share it (eventlet's own listen() would accept)."""
    with socket.create_server(("127.0.0.1", 0), reuse_port=hasattr(socket, "SO_REUSEPORT")) as taken:
        port = taken.getsockname()[1]
        result = cli("serve", "--port", str(port), "--async-mode", async_mode, env=base_env(
            EVENTBUS_SECRET_KEY=SECRET, EVENTBUS_DATA_DIR=str(tmp_path / "data")), cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert result.stdout == ""  # no banner, no admin token for a server that never ran
    lines = [line for line in result.stderr.splitlines() if f"port {port} is in use" in line]
    assert len(lines) == 1 and "pass --port or stop the other server" in lines[0], output
    assert "Traceback" not in output and "Address already in use" not in output
    assert output.count("Eventlet is deprecated") == (1 if async_mode == "eventlet" else 0), output
    assert not (tmp_path / "data").exists()  # failed before anything was started


@pytest.mark.parametrize("command", [["emit", "agent_started"], ["tail"]], ids=["emit", "tail"])
def test_no_server_is_one_clear_line(command: list[str], tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    env = base_env(EVENTBUS_SECRET_KEY=SECRET, EVENTBUS_DATA_DIR=str(tmp_path / "data"))
    for extra, run_env in (([], dict(env, EVENTBUS_URL=url)), (["--url", url], env)):
        result = cli(*command, *extra, env=run_env, cwd=tmp_path)
        assert result.returncode != 0
        assert result.stderr.strip() == (f"Error: no eventbus server at {url}: is `eventbus serve` running? "
                                         "(EVENTBUS_URL/--url)"), result.stderr


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_the_python_client_names_the_url_it_could_not_reach(transport: str) -> None:
    port = free_port()
    client = EventBusClient(f"http://user:hunter22@127.0.0.1:{port}/?api_key=s3cr3t", token="t",
                            transports=[transport])
    try:
        with pytest.raises(EventBusClientError) as info:
            client.connect(timeout=5)
    finally:
        client.close()
    assert info.value.code == "connection_failed"
    assert str(info.value) == f"cannot connect to http://127.0.0.1:{port}/monitoring: Connection refused"


# -- quiet servers --------------------------------------------------------------------------

def _raw_websocket(port: int) -> socket.socket:
    """A WebSocket to Engine.IO, handshake done and the OPEN packet read."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                  f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    received = b""
    while b'"sid"' not in received:  # the 101 response and the Engine.IO OPEN packet
        chunk = sock.recv(65536)
        assert chunk, f"closed during the handshake: {received!r}"
        received += chunk
    return sock


def _frame(opcode: int, payload: bytes, length: int | None = None) -> bytes:
    """A masked client frame (zero mask: the payload goes as it is) announcing ``length``."""
    length = len(payload) if length is None else length
    head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length) if length > 125 else \
        struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    return head + b"\0\0\0\0" + payload


def _until_closed(sock: socket.socket) -> None:
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass  # reset: closed too
    finally:
        sock.close()


def test_websocket_closes_leave_no_noise_in_the_log(server: ServerProcess) -> None:
    """A refused oversized message (its remaining bytes reach the server after the
    WebSocket ended), an Engine.IO close followed by a WebSocket close frame, and clients
    that disconnect: the log shows none of the web server's reactions to reading those
    bytes as an HTTP request, and no start-up notice."""
    oversized = _raw_websocket(server.port)
    try:
        oversized.sendall(_frame(0x1, b"4" + b"x" * 1_500_000, length=2_000_000))
    except OSError:
        pass  # the server closed while the message was still being sent
    _until_closed(oversized)
    closing = _raw_websocket(server.port)
    closing.sendall(_frame(0x1, b"1") + _frame(0x8, struct.pack("!H", 1000)))
    _until_closed(closing)
    for transports in (["websocket"], ["polling", "websocket"]):
        sio = ordered_client(reconnection=False)
        sio.connect(server.url, namespaces=["/monitoring"], auth={"token": server.token("quiet")},
                    transports=transports, wait_timeout=10)
        sio.disconnect()
    wait_until(lambda: server.log().count("user=quiet namespace=/monitoring reason=") == 2, 10,
               message="both clients' disconnects logged")
    noisy = [line for line in server.log().splitlines() if any(marker in line for marker in NOISE)]
    assert not noisy, "\n".join(noisy)


def test_accepted_sockets_send_without_waiting_for_delayed_acks():
    """``eventbus serve`` listens with TCP_NODELAY, which accepted sockets inherit: a
    response written in pieces on a keep-alive connection is not held back ~40 ms by
    Nagle's algorithm waiting for the client's delayed ACK (gevent writes headers and
    body separately)."""
    import socket

    from eventbus_socketio.commands import listen

    listener = listen("127.0.0.1", 0)
    try:
        assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        try:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        finally:
            accepted.close()
            client.close()
    finally:
        listener.close()
