"""``eventbus.client.EventBusClient`` against real servers, in every async mode: resume after
a server-side disconnect while events flow, and resync after a restart (new epoch)."""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterator

import pytest
import requests

from eventbus.client import EventBusClient

from .server import ServerProcess


class Recorder:
    """Everything one client delivered, its state changes and resyncs."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.states: list[str] = []
        self.resyncs: list[dict[str, Any]] = []
        self.errors: list[BaseException] = []

    def numbers(self) -> list[int]:
        return [e["data"]["details"]["n"] for e in self.events if e["type"] == "agent_started"]


@pytest.fixture
def make_client() -> Iterator[Callable[..., tuple[EventBusClient, Recorder]]]:
    made: list[EventBusClient] = []

    def make(server: ServerProcess, user: str, **options: Any) -> tuple[EventBusClient, Recorder]:
        seen = Recorder()
        client = EventBusClient(server.url, "/monitoring", token=server.token(user, ()),
                                on_state_change=lambda state, previous: seen.states.append(state),
                                on_resync=seen.resyncs.append, on_error=seen.errors.append,
                                reconnect_delay=0.2, reconnect_delay_max=0.5, **options)
        client.on("*", lambda event_type, env: seen.events.append(env) if env.get("seq") else None)
        made.append(client)
        return client, seen

    yield make
    for client in made:
        client.close()


def publish_agent_events(server: ServerProcess, numbers: range) -> list[dict[str, Any]]:
    return [server.publish("agent_started", {"agent_name": "worker", "details": {"n": n}}) for n in numbers]


def assert_contiguous(events: list[dict[str, Any]]) -> None:
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"gap or duplicate in {seqs}"
    assert len({e["id"] for e in events}) == len(events)


@pytest.mark.parametrize("mode", ["kick", "drop"])  # a server-side disconnect; a killed transport
def test_resume_after_server_disconnect_while_events_flow(server: ServerProcess, make_client, mode: str) -> None:
    client, seen = make_client(server, "pywatcher")
    client.connect()
    admin = {"Authorization": f"Bearer {server.token()}"}
    total = 60
    published: list[dict[str, Any]] = []

    def publisher() -> None:
        session = requests.Session()
        for n in range(total):
            response = session.post(f"{server.url}/api/events", headers=admin, timeout=10,
                                    json={"type": "agent_started", "data": {"agent_name": "worker",
                                                                            "details": {"n": n}}})
            published.append(response.json())

    thread = threading.Thread(target=publisher)
    thread.start()
    try:
        client.wait_for(lambda: len(seen.numbers()) >= 10, timeout=20)
        response = requests.post(f"{server.url}/api/connections/disconnect",
                                 json={"user_id": "pywatcher", "mode": mode},
                                 headers=admin, timeout=10)
        assert len(response.json()["disconnected"]) == 1, response.text
        client.wait_for(lambda: "reconnecting" in seen.states, timeout=10)
    finally:
        thread.join(60)
    client.wait_for(lambda: seen.states[-1:] == ["connected"], timeout=20)
    last_id = published[-1]["id"]
    client.wait_for(lambda: any(e["id"] == last_id for e in seen.events), timeout=20)

    assert seen.numbers() == list(range(total))
    assert_contiguous(seen.events)
    assert seen.states == ["connecting", "connected", "reconnecting", "connected"]
    assert client.positions()["monitoring"]["seq"] == seen.events[-1]["seq"]
    assert client.stats["resyncs"] == 0 and seen.errors == []


def test_resync_after_restart_fetches_history_and_adopts_new_epoch(
        start_server: Callable[..., ServerProcess], async_mode: str, make_client) -> None:
    first = start_server(async_mode)
    client, seen = make_client(first, "pyrestart")
    client.connect()
    publish_agent_events(first, range(3))
    client.wait_for(lambda: seen.numbers() == [0, 1, 2], timeout=10)
    old_epoch = client.positions()["monitoring"]["epoch"]
    before = len(seen.events)

    first.kill()
    client.wait_for(lambda: "reconnecting" in seen.states, timeout=10)
    second = start_server(async_mode, port=first.port)
    publish_agent_events(second, range(3, 5))
    client.wait_for(lambda: seen.resyncs, timeout=30)
    publish_agent_events(second, range(5, 7))
    client.wait_for(lambda: seen.numbers()[-1:] == [6], timeout=15)

    history = requests.get(f"{second.url}/api/events", params={"room": "monitoring", "after": 0},
                           headers={"Authorization": f"Bearer {second.token()}"}, timeout=10).json()
    new_epoch = history["epoch"]
    assert new_epoch != old_epoch
    assert seen.resyncs == [{"room": "monitoring", "epoch": new_epoch, "previous_epoch": old_epoch,
                             "fetched": seen.resyncs[0]["fetched"], "lost": 0, "complete": True}]
    assert seen.resyncs[0]["fetched"] >= 1
    assert client.positions()["monitoring"] == {"seq": seen.events[-1]["seq"], "epoch": new_epoch}
    assert seen.numbers() == list(range(7))
    after_restart = seen.events[before:]
    assert after_restart[0]["seq"] == 1, "the new epoch is read from its start"
    assert_contiguous(after_restart)
    # Exactly what the new server holds for the room, in order.
    assert [e["id"] for e in after_restart] == [e["id"] for e in history["events"]]
