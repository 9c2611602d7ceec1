"""It just works from any process and any folder: the README's agent, copied from README.md at
test time, runs as its own process in another folder next to a real ``eventbus serve``, with
no configuration at all (the server and the agent share only the user's home), and its events
show in ``eventbus tail --json`` and over Socket.IO. Plus: no server (one warning, drops
counted), a server that appears later (the buffered events, in order), and a server that
restarts mid-stream (retried, nothing lost, nothing twice)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from eventbus.testing import wait_until

from .server import ServerProcess, free_port, make_token
from .test_redis import redis_env  # noqa: F401 - fixture: a key prefix of its own on the test Redis

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("EVENTBUS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def readme_agent() -> str:
    """The fenced Python block under "## An agent in ten lines" in README.md, verbatim."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## An agent in ten lines\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"^```python\n(.*?)^```", section, re.M | re.S)
    assert found, "README.md: no ```python block under '## An agent in ten lines'"
    return found.group(1)


def user_env(home: Path, **extra: str) -> dict[str, str]:
    """A user's environment with no eventbus settings at all: only HOME (and the per-user
    data dir under it, $XDG_DATA_HOME) says where the data dir is."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTBUS_", "WEBSOCKET_"))}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / ".local" / "share"), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def data_dir(home: Path) -> Path:
    return home / ".local" / "share" / "eventbus"


def server_env(home: Path, **extra: str) -> dict[str, str]:
    """For :class:`ServerProcess`: empty EVENTBUS_DATA_DIR and EVENTBUS_SECRET_KEY count as
    unset, so the server uses the per-user data dir and generates its key there."""
    return {**user_env(home), "EVENTBUS_DATA_DIR": "", "EVENTBUS_SECRET_KEY": "", **extra}


def local_token(home: Path, user: str = "watcher", roles: tuple[str, ...] = ("admin",)) -> str:
    return make_token(user, roles, secret=(data_dir(home) / "secret_key").read_text().strip())


def history(url: str, token: str, room: str = "monitoring") -> list[dict[str, Any]]:
    response = requests.get(f"{url}/api/events", params={"room": room, "after": 0, "limit": 10000},
                            headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["events"]


class Lines:
    """Reads a child's stream line by line in a thread; :meth:`wait_for` a matching line."""

    def __init__(self, stream: Any):
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        stream.close()

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 30.0) -> str:
        with self.cond:
            ok = self.cond.wait_for(lambda: any(predicate(line) for line in self.lines), timeout)
            assert ok, f"no such line within {timeout}s: {self.lines[-20:]}"
            return next(line for line in self.lines if predicate(line))

    def text(self) -> str:
        with self.cond:
            return "\n".join(self.lines)


class Agent:
    """A Python script in its own process and folder."""

    def __init__(self, folder: Path, code: str, env: dict[str, str], args: tuple[str, ...] = ()):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "agent.py").write_text(code)
        self.proc = subprocess.Popen([sys.executable, "agent.py", *args], cwd=folder, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out = Lines(self.proc.stdout)
        self.err = Lines(self.proc.stderr)

    def finish(self, timeout: float = 60.0) -> tuple[str, str]:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"the agent did not finish:\n{self.err.text()[-3000:]}") from None
        self.out.thread.join(10)
        self.err.thread.join(10)
        assert code == 0, f"agent exited {code}:\n{self.err.text()[-3000:]}"
        assert "Traceback" not in self.err.text(), self.err.text()[-3000:]
        return self.out.text(), self.err.text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def agents() -> Iterator[Callable[..., Agent]]:
    started: list[Agent] = []

    def start(folder: Path, code: str, env: dict[str, str], args: tuple[str, ...] = ()) -> Agent:
        agent = Agent(folder, code, env, args)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.kill()


# -- the README's agent ---------------------------------------------------------------------

def test_the_readme_agent_reaches_the_server_from_another_process_and_folder(
        tmp_path: Path, start_server: Callable[..., ServerProcess], async_mode: str,
        agents: Callable[..., Agent]) -> None:
    from eventbus_client import EventBusClient

    home = tmp_path / "home"
    server = start_server(async_mode, env=server_env(home))
    announced = json.loads((data_dir(home) / "server.json").read_text())
    assert announced["url"] == server.url and announced["pid"] == server.proc.pid

    # Watching: `eventbus tail --json` (from a folder of its own) and a Socket.IO client on /chat.
    tail_dir = tmp_path / "tail"
    tail_dir.mkdir()
    tail = subprocess.Popen([sys.executable, "-m", "eventbus", "tail", "--json", "--count", "3",
                             "--type", "agent_*", "--type", "tool_executed"],
                            cwd=tail_dir, env=user_env(home), text=True,  # finds the server by its file
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    chat: list[dict[str, Any]] = []
    client = EventBusClient(server.url, "/chat", token=local_token(home), rooms=["session:s-1"])
    client.on("chat_response", lambda envelope: chat.append(envelope))
    try:
        tail_out, tail_err = Lines(tail.stdout), Lines(tail.stderr)
        tail_err.wait_for(lambda line: line.startswith("# connected"))
        client.connect(timeout=10)

        agent = agents(tmp_path / "somewhere" / "else", readme_agent(), user_env(home))
        _, err = agent.finish()
        assert "not delivered" not in err and "no server" not in err, err

        assert tail.wait(30) == 0, tail_err.text()
        tail_out.thread.join(10)
        seen = [json.loads(line) for line in tail_out.lines if line.strip()]
        assert [e["type"] for e in seen] == ["agent_started", "tool_executed", "agent_completed"]
        assert {e["source"] for e in seen} == {"researcher"} and {e["user_id"] for e in seen} == {None}
        assert seen[0]["data"] == {"task": "What is the capital of France?"} and seen[0]["session_id"] == "s-1"
        assert seen[1]["data"] == {"tool": "web_search", "duration_ms": 420, "ok": True}
        assert [e["seq"] for e in seen] == sorted(e["seq"] for e in seen)
        # `eventbus emit` from yet another folder finds the same server (not the default port).
        emitted = subprocess.run([sys.executable, "-m", "eventbus", "emit", "health_update",
                                  "--data", '{"component": "db", "status": "ok"}'], cwd=tmp_path,
                                 env=user_env(home), text=True, capture_output=True, timeout=60)
        assert emitted.returncode == 0, emitted.stderr
        assert json.loads(emitted.stdout)["seq"] > seen[-1]["seq"]
        wait_until(lambda: chat, timeout=10, message="chat_response over Socket.IO")
        assert (chat[0]["data"], chat[0]["room"], chat[0]["source"]) == (
            {"message": "Paris."}, "session:s-1", "researcher")
    finally:
        client.close()
        if tail.poll() is None:
            tail.kill()
            tail.wait(10)


# -- no server, a server that comes later, a server that restarts ------------------------------

COUNTING_AGENT = '''
import json, os, sys
from eventbus import signals
for i in range(int(sys.argv[1]) if len(sys.argv) > 1 else 8):
    signals.tool_executed.send("indexer", tool="embed", i=i)
print(json.dumps(signals.default_bus().status()["forwarder"]), flush=True)
'''


def test_with_no_server_the_agent_says_so_once_and_counts_what_it_drops(tmp_path: Path,
                                                                         agents: Callable[..., Agent]) -> None:
    home = tmp_path / "home"
    env = user_env(home, EVENTBUS_FORWARD_BUFFER="5")
    agent = agents(tmp_path / "agent", COUNTING_AGENT, env)
    out, err = agent.finish(timeout=30)
    warnings = [line for line in err.splitlines() if "no server to deliver events to" in line]
    assert len(warnings) == 1, err
    assert "EVENTBUS_URL is not set" in warnings[0] and "server.json" in warnings[0]
    status = json.loads(out)
    assert status["sent"] == 0 and status["dropped"] == 3 and status["buffered"] == 5
    assert "5 event(s) not delivered" in err and "8 dropped in all" in err, err


WAITING_AGENT = '''
import json, time
from eventbus import EventBus, signals
bus = EventBus.from_env()                  # used on its own: no start(), no serve()
for i in range(20):
    signals.tool_executed.send("indexer", tool="embed", i=i)
print("EMITTED", bus.status()["forwarder"]["state"], flush=True)
deadline = time.monotonic() + 60
while bus.status()["forwarder"]["sent"] < 20 and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps(bus.status()["forwarder"]), flush=True)
print("closed", bus.close(), flush=True)
'''


def test_a_server_that_appears_later_gets_the_buffered_events_in_order(
        tmp_path: Path, start_server: Callable[..., ServerProcess], async_mode: str,
        agents: Callable[..., Agent]) -> None:
    home = tmp_path / "home"
    agent = agents(tmp_path / "agent", WAITING_AGENT, user_env(home))
    agent.err.wait_for(lambda line: "no server to deliver events to" in line)
    agent.out.wait_for(lambda line: line.startswith("EMITTED"))
    server = start_server(async_mode, env=server_env(home))
    out, err = agent.finish()
    status = json.loads(out.splitlines()[1])
    assert (status["sent"], status["dropped"], status["buffered"]) == (20, 0, 0), status
    assert status["found_by"].endswith("server.json")
    assert out.splitlines()[2] == "closed True"
    assert sum("no server to deliver events to" in line for line in err.splitlines()) == 1
    events = [e for e in history(server.url, local_token(home)) if e["type"] == "tool_executed"]
    assert [e["data"]["i"] for e in events] == list(range(20))
    assert len({e["id"] for e in events}) == 20


STREAMING_AGENT = '''
import json, sys, time
from eventbus import EventBus, signals
count, rate = int(sys.argv[1]), float(sys.argv[2])
bus = EventBus.from_env()
for i in range(count):
    signals.tool_executed.send("indexer", tool="embed", i=i)
    if i == 0:
        print("STARTED", flush=True)
    time.sleep(1.0 / rate)
deadline = time.monotonic() + 60
while bus.status()["forwarder"]["sent"] < count and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps(bus.status()["forwarder"]), flush=True)
bus.close()
'''


@pytest.fixture
def redis_prefix(redis_env: dict[str, str]) -> str:
    """A key prefix of this test's own on the test Redis (removed afterwards)."""
    return redis_env["EVENTBUS_REDIS_PREFIX"]


@pytest.mark.redis
def test_a_server_that_restarts_mid_stream_loses_nothing_and_delivers_nothing_twice(
        tmp_path: Path, async_mode: str, agents: Callable[..., Agent], redis_prefix: str) -> None:
    """The agent (no Redis of its own: it forwards over HTTP) streams 300 events; its server
    is killed (SIGKILL) mid-stream and another starts on the same port. The agent retries
    the batch in flight with the same ids; the servers publish each id once (Redis id
    markers), so the shared history holds every event once, in the agent's order."""
    home = tmp_path / "home"
    env = server_env(home, EVENTBUS_REDIS_URL=REDIS_URL, EVENTBUS_REDIS_PREFIX=redis_prefix,
                     EVENTBUS_REDIS_CLAIM_IDLE="2")
    port = free_port()
    first = ServerProcess(tmp_path / "first", async_mode, env, port=port).start()
    second = ServerProcess(tmp_path / "second", async_mode, env, port=port)
    try:
        token = local_token(home)
        agent = agents(tmp_path / "agent", STREAMING_AGENT, user_env(home), ("300", "150"))
        agent.out.wait_for(lambda line: line == "STARTED")
        wait_until(lambda: len(history(first.url, token)) >= 50, timeout=30, message="50 events in")
        first.kill()
        second.start()
        out, _ = agent.finish(timeout=90)
        status = json.loads(out.splitlines()[-1])
        assert (status["sent"], status["dropped"], status["rejected"]) == (300, 0, 0), status
        assert status["retries"] >= 1, status
        events = [e for e in history(second.url, token) if e["type"] == "tool_executed"]
        assert [e["data"]["i"] for e in events] == list(range(300))
        assert len({e["id"] for e in events}) == 300
        assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    finally:
        first.kill()
        second.stop()
