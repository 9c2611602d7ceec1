"""The client helpers (Python ``EventBusClient`` and the JS helper under Node) through faults
of the network and of the server, in every async mode, with the memory backend:

- TCP resets: a proxy between the helpers and the server resets their connections (RST)
  while 300 events/s flow; each helper resumes, and delivers every accepted event once, in
  seq order, with no reported loss.
- SIGKILL: the server dies and another one starts (a new epoch) while the helpers cannot
  reach it and events flow; when they are back the network still fails their history reads
  for a second. They resync from history and report as lost exactly the accepted events
  they missed that history no longer had, and never a delivered one.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from eventbus.testing import wait_until
from eventbus_client import EventBusClient

from .proxy import TcpProxy

try:
    from ..e2e.server import ServerProcess
    from ..e2e.test_node_client import JS_DIR, NodeScript, wait_positioned
    from ..e2e.test_python_client import Publisher
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from e2e.server import ServerProcess  # type: ignore[no-redef]
    from e2e.test_node_client import JS_DIR, NodeScript, wait_positioned  # type: ignore[no-redef]
    from e2e.test_python_client import Publisher  # type: ignore[no-redef]

ROOM = "monitoring"
Record = dict[str, Any]
HAS_NODE = shutil.which("node") is not None and (JS_DIR / "node_modules" / "socket.io-client").is_dir()
#: socket.io-client retries at most every 0.5 s here (its default backs off to 5 s).
NODE_OPTIONS = '--options={"socketOptions": {"reconnectionDelay": 100, "reconnectionDelayMax": 500}}'


class PythonHelper:
    """An :class:`EventBusClient` on ``/monitoring`` that records, in delivery order, every
    envelope with the epoch its room counted in, its states and its resyncs."""

    def __init__(self, url: str, token: str):
        self.delivered: list[tuple[str | None, dict[str, Any]]] = []
        self.states: list[str] = []
        self.resyncs: list[dict[str, Any]] = []
        self.errors: list[BaseException] = []
        self.client = EventBusClient(url, token=token, on_resync=self.resyncs.append, on_error=self.errors.append,
                                     on_state_change=lambda state, previous: self.states.append(state),
                                     reconnect_delay=0.1, reconnect_delay_max=0.5, gap_timeout=0.5)
        self.client.on("*", self._record)

    def _record(self, event_type: str, envelope: Any) -> None:
        if isinstance(envelope, dict) and "id" in envelope:
            epoch = self.client.positions().get(envelope.get("room"), {}).get("epoch")
            self.delivered.append((epoch, envelope))

    def reconnects(self) -> int:
        return self.states.count("reconnecting")

    def positioned(self, seq: int, epoch: str) -> None:
        self.client.wait_for(lambda: self.client.positions()[ROOM] == {"seq": seq, "epoch": epoch}, timeout=20)


class NodeHelper:
    """``helper_client.mjs`` (the JS helper) on ``/monitoring``, read the same way."""

    def __init__(self, url: str, token: str):
        self.script = NodeScript("helper_client.mjs", url, token, "/monitoring", NODE_OPTIONS)

    @property
    def delivered(self) -> list[tuple[str | None, dict[str, Any]]]:
        return [(r.get("epoch"), r["envelope"]) for r in list(self.script.records)
                if r.get("kind") == "deliver" and isinstance(r.get("envelope"), dict) and "id" in r["envelope"]]

    @property
    def resyncs(self) -> list[dict[str, Any]]:
        return [r for r in list(self.script.records) if r.get("kind") == "resync"]

    @property
    def errors(self) -> list[Record]:
        return [r for r in list(self.script.records) if r.get("kind") == "error"]

    def reconnects(self) -> int:
        return sum(1 for r in list(self.script.records) if r.get("kind") == "state" and r["state"] == "reconnecting")

    def connected(self) -> bool:
        states = [r["state"] for r in list(self.script.records) if r.get("kind") == "state"]
        return states[-1:] == ["connected"]

    def positioned(self, seq: int, epoch: str) -> None:
        wait_positioned(self.script, ROOM, seq, epoch)


@pytest.fixture
def helpers() -> Iterator[Callable[[str, str], list[Any]]]:
    """``helpers(url, token)``: the Python helper, and the Node one when Node is there."""
    made: list[Any] = []

    def make(url: str, token: str) -> list[Any]:
        python = PythonHelper(url, token)
        made.append(python)
        python.client.connect()
        found: list[Any] = [python]
        if HAS_NODE:
            node = NodeHelper(url, token)
            made.append(node)
            node.script.wait_kind("state", state="connected")
            found.append(node)
        return found

    yield make
    for helper in made:
        if isinstance(helper, PythonHelper):
            helper.client.close()
        else:
            helper.script.close()


def history_end(server: ServerProcess) -> dict[str, Any]:
    response = requests.get(f"{server.url}/api/events", params={"room": ROOM, "after": 0},
                            headers={"Authorization": f"Bearer {server.token()}"}, timeout=10)
    return response.json()


def connected(helper: Any) -> bool:
    return helper.client.state == "connected" if isinstance(helper, PythonHelper) else helper.connected()


def test_tcp_resets_while_events_flow(start_server: Callable[..., ServerProcess], async_mode: str,
                                      helpers: Callable[[str, str], list[Any]]) -> None:
    server = start_server(async_mode)
    with TcpProxy(server.port) as proxy:
        followers = helpers(proxy.url, server.token("watcher", ()))
        publisher = Publisher(server.url, server.token(), rate=300, total=1200).start()
        try:
            for round_ in range(1, 4):
                publisher.wait_accepted(250 * round_)
                assert proxy.reset() >= len(followers)
                wait_until(lambda: all(h.reconnects() >= round_ and connected(h) for h in followers), 20,
                           message=f"every helper reconnected after reset {round_}")
        finally:
            publisher.stop()
        assert len(publisher.accepted) == 1200 and publisher.failed == 0
        end = history_end(server)
        for helper in followers:
            helper.positioned(end["latest_seq"], end["epoch"])

    accepted = publisher.ids()
    for helper in followers:
        name = type(helper).__name__
        envelopes = [env for _epoch, env in helper.delivered]
        seqs = [env["seq"] for env in envelopes if env.get("room") == ROOM]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"{name}: seqs not contiguous, in order"
        agent = [env["id"] for env in envelopes if env["type"] == "agent_started"]
        assert agent == accepted, f"{name}: not every accepted event once, in order"
        assert all(r["lost"] == 0 and r["unverified"] == 0 for r in helper.resyncs), (name, helper.resyncs)
        assert helper.reconnects() >= 3, name


def test_server_sigkill_reports_exactly_what_was_missed(start_server: Callable[..., ServerProcess],
                                                        async_mode: str,
                                                        helpers: Callable[[str, str], list[Any]]) -> None:
    env = {"EVENTBUS_HISTORY_SIZE": "100"}
    first = start_server(async_mode, env=env)
    with TcpProxy(first.port) as proxy:
        followers = helpers(proxy.url, first.token("watcher", ()))
        publisher = Publisher(first.url, first.token(), rate=300, total=3000).start()  # stopped early
        try:
            publisher.wait_accepted(200)
            failed = publisher.failed
            first.kill()
            proxy.refuse()  # the helpers cannot come back until the new server has moved on
            # After its first failure the publisher has every answer the first server gave.
            wait_until(lambda: publisher.failed > failed, 10, message="the publisher sees the server gone")
            before_kill = len(publisher.accepted)
            second = start_server(async_mode, env=env, port=first.port)
            publisher.wait_accepted(before_kill + 250)  # 150 more than the new history keeps
            # The helpers' sockets get through; their history reads fail for a second.
            proxy.fail_requests(b"GET /api/events")
            proxy.refuse(False)
            wait_until(lambda: all(connected(h) for h in followers), 20, message="every helper reconnected")
            errors = [len(h.errors) for h in followers]
            wait_until(lambda: all(len(h.errors) > n for h, n in zip(followers, errors)), 10,
                       message="every helper's history read failed")
            assert not any(h.resyncs for h in followers)
            time.sleep(1.0)  # how long history reads keep failing
            proxy.fail_requests(None)
            wait_until(lambda: all(h.resyncs for h in followers), 20, message="every helper resynced")
            publisher.wait_accepted(len(publisher.accepted) + 150)
        finally:
            publisher.stop(timeout=0)
        end = history_end(second)
        for helper in followers:
            helper.positioned(end["latest_seq"], end["epoch"])

    old, new = publisher.accepted[:before_kill], publisher.accepted[before_kill:]
    new_seqs = {a["seq"] for a in new}
    for helper in followers:
        name = type(helper).__name__
        delivered = helper.delivered
        ids = [env["id"] for _epoch, env in delivered]
        assert len(ids) == len(set(ids)), f"{name}: an event delivered twice"
        agent_ids = [env["id"] for _epoch, env in delivered if env["type"] == "agent_started"]
        got = set(agent_ids)
        assert agent_ids == [a["id"] for a in publisher.accepted if a["id"] in got], f"{name}: out of order"
        # The first server's history died with it: what it accepted but could not send in
        # time is lost without a trace the helper could report (counted here, not asserted).
        unseen_old = [a for a in old if a["id"] not in got]
        print(f"{name} [{async_mode}]: {len(unseen_old)} event(s) accepted by the killed server never sent")

        resyncs = [r for r in helper.resyncs if r["epoch"] == end["epoch"]]
        # The failed reads were retried: what the new history held was read, not skipped.
        assert sum(r["fetched"] for r in resyncs) >= 100, f"{name}: history not read: {resyncs}"
        assert resyncs and all(r["unverified"] == 0 for r in resyncs), resyncs
        assert all(r["lost"] == 0 for r in helper.resyncs if r["epoch"] != end["epoch"]), helper.resyncs
        gap_seqs = {seq for r in resyncs for low, high in r["gaps"] for seq in range(low, high + 1)}
        assert sum(r["lost"] for r in resyncs) == len(gap_seqs) >= 150, resyncs
        missed = {a["seq"] for a in new if a["id"] not in got}
        assert missed <= gap_seqs, f"{name}: missed events not reported: {sorted(missed - gap_seqs)}"
        delivered_new = {env["seq"] for epoch, env in delivered if epoch == end["epoch"] and env.get("seq")}
        assert not gap_seqs & delivered_new, f"{name}: delivered events reported lost"
        # Any other reported seq is not an accepted event: one of the room's presence events.
        assert not (gap_seqs - missed) & new_seqs, name
        assert {a["id"] for a in new if a["seq"] > max(gap_seqs)} <= got, \
            f"{name}: an event after the gap was not delivered"
