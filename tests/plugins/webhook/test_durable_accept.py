"""Durable accept: an event from a client is in the outbox before ``emit`` returns (so before
the HTTP 202 or the Socket.IO ack), concurrent publishers share commits, a failed write
refuses the event, and stored events whose hand-off never came are still delivered."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import eventbus_webhook
from eventbus import ConfigError, Event, EventBus
from eventbus.events import EventBusError
from eventbus.hookspecs import hookimpl
from eventbus.testing import RecordingTransport, started_config, wait_until
from eventbus_webhook import transport as transport_module
from eventbus_webhook.outbox import Outbox
from eventbus_webhook.settings import load_settings
from eventbus_webhook.testing import decode


def stored_rows(bus: EventBus) -> list[tuple[str, str, str]]:
    """``(event_id, status, body)`` read through a connection of its own, as another process would."""
    path = bus.transport("webhook").outbox_path
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT event_id, status, body FROM deliveries ORDER BY id").fetchall()


def hold_worker(bus: EventBus) -> threading.Event:
    """Block the webhook worker (as a busy or slow one would be) until the returned event is set."""
    release = threading.Event()
    started = threading.Event()
    worker = next(w for w in bus.workers if w.name == "webhook")

    def block() -> None:
        started.set()
        release.wait(10)

    worker.call_soon(block)
    assert started.wait(5)
    return release


def test_a_client_event_is_stored_before_emit_returns(webhook_bus, receiver_factory, secret, endpoint):
    receiver = receiver_factory(secret)
    bus = webhook_bus(endpoint("crm", receiver.url, secret))
    release = hold_worker(bus)
    try:
        event = bus.emit("agent_started", {"agent_name": "a"}, origin="http")
        assert [row[:2] for row in stored_rows(bus)] == [(event.id, "intake")]
        assert receiver.requests == []  # held until the worker gives it its seq
    finally:
        release.set()
    (request,) = receiver.wait_for_ids([event.id])
    assert decode(request)["seq"] == event.seq == 1  # the final body carries the seq
    health = wait_until(lambda: (h := bus.transport("webhook").health())["delivered"] == 1 and h)
    assert health["accepted"] == 1 and health["pending"] == 0 and health["durable_accept"] == "clients"


@pytest.mark.parametrize("origin", ["http", "client"])
def test_both_client_origins_are_stored_before_the_answer(webhook_bus, free_port, secret, endpoint, origin):
    bus = webhook_bus(endpoint("down", f"http://127.0.0.1:{free_port}/hook", secret))
    release = hold_worker(bus)
    try:
        event = bus.emit("agent_started", {"agent_name": "a"}, origin=origin)
        assert [row[0] for row in stored_rows(bus)] == [event.id]
    finally:
        release.set()


@pytest.mark.parametrize("setting, origin, stored", [
    ("clients", "signal", False), ("clients", "api", False),
    ("emit", "api", True), ("emit", "signal", False), ("off", "http", False)])
def test_which_origins_wait_for_the_outbox(webhook_bus, free_port, secret, endpoint, setting, origin, stored):
    bus = webhook_bus(endpoint("down", f"http://127.0.0.1:{free_port}/hook", secret),
                      durable_accept=setting)
    release = hold_worker(bus)
    try:
        event = bus.emit("agent_started", {"agent_name": "a"}, origin=origin)
        assert bool(stored_rows(bus)) is stored
    finally:
        release.set()
    # Stored or not, the worker delivers it to the outbox in the end.
    wait_until(lambda: [row[:2] for row in stored_rows(bus)] == [(event.id, "pending")],
               message="the event pending in the outbox")


def test_concurrent_publishers_share_commits(webhook_bus, free_port, secret, endpoint, monkeypatch):
    bus = webhook_bus(endpoint("down", f"http://127.0.0.1:{free_port}/hook", secret))
    outbox = bus.transport("webhook").outbox
    real_enqueue = Outbox.enqueue
    first_commit = threading.Event()
    go = threading.Event()

    def slow_enqueue(self: Outbox, rows: Any, *args: Any, **kwargs: Any) -> int:
        if not first_commit.is_set():  # a slow fsync: the others queue up meanwhile
            first_commit.set()
            go.wait(5)
        return real_enqueue(self, rows, *args, **kwargs)

    monkeypatch.setattr(Outbox, "enqueue", slow_enqueue)
    ids: list[str] = []

    def publish() -> None:
        ids.append(bus.emit("agent_started", {"agent_name": "a"}, origin="http").id)

    threads = [threading.Thread(target=publish) for _ in range(8)]
    threads[0].start()
    assert first_commit.wait(5)
    for thread in threads[1:]:
        thread.start()
    wait_until(lambda: len(outbox._group_waiting) == 7, message="seven publishers waiting")
    go.set()
    for thread in threads:
        thread.join(5)
    assert len(ids) == 8
    assert outbox.group_commits == 2  # the slow one, then the seven that waited for it
    wait_until(lambda: sorted(r[0] for r in stored_rows(bus)) == sorted(ids), message="all stored")


def test_a_failed_write_refuses_the_event_everywhere(bus_factory, webhook_config, free_port, secret,
                                                     endpoint, monkeypatch):
    recorder = RecordingTransport()
    bus = bus_factory([eventbus_webhook], webhook_config(endpoint("down", f"http://127.0.0.1:{free_port}/h",
                                                                  secret)),
                      transports=[recorder], connect_signals=False)

    def broken(self: Outbox, *args: Any, **kwargs: Any) -> int:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(Outbox, "enqueue", broken)
    with pytest.raises(EventBusError) as refused:
        bus.emit("agent_started", {"agent_name": "a"}, origin="http")
    assert refused.value.code == "unavailable"
    monkeypatch.undo()
    after = bus.emit("agent_started", {"agent_name": "b"}, origin="http")
    recorder.wait_for(1)
    assert [e.id for e in recorder.events] == [after.id]  # the refused one went nowhere
    health = bus.transport("webhook").health()
    assert health["intake_failed"] == 1 and health["accepted"] == 1


def test_filters_and_disabled_endpoints_are_counted_once(webhook_bus, free_port, secret, endpoint):
    url = f"http://127.0.0.1:{free_port}/hook"
    bus = webhook_bus(endpoint("agents", url, secret, event_types=["agent_*"]),
                      endpoint("off", url, secret, enabled=False))
    bus.emit("health_update", {"component": "db", "status": "ok"}, origin="http")  # neither wants it
    bus.emit("agent_started", {"agent_name": "a"}, origin="http")
    # The worker hands both events over after emit returned: wait for it to empty the intake.
    health = wait_until(lambda: (h := bus.transport("webhook").health())["accepted"] == 1
                        and h["intake_waiting"] == 0 and h)
    assert health["endpoints"]["off"]["skipped_disabled"] == 2
    assert len(stored_rows(bus)) == 1


def test_stored_events_are_due_in_the_bus_order_even_when_stored_in_another(
        webhook_bus, free_port, secret, endpoint):
    bus = webhook_bus(endpoint("down", f"http://127.0.0.1:{free_port}/hook", secret,
                               retry_schedule=[3600]))  # nothing is attempted: rows stay put
    transport = bus.transport("webhook")
    first, second = (Event(type="agent_started", data={"n": n}, room="monitoring", origin="http")
                     for n in (1, 2))
    transport.intake(first)  # two publishers race: `first` is stored first ...
    transport.intake(second)
    second.seq, first.seq = 1, 2  # ... but `second` took the bus lock first
    transport.send_batch([second, first])  # the worker's queue is in seq order
    due = transport.outbox.due("down", now=float("inf"))
    assert [d.event_id for d in due] == [second.id, first.id]


def test_an_event_stored_but_never_handed_on_is_delivered_without_seq(
        webhook_bus, receiver_factory, secret, endpoint, monkeypatch):
    receiver = receiver_factory(secret)
    bus = webhook_bus(endpoint("crm", receiver.url, secret), housekeeping_interval=0.05)
    transport = bus.transport("webhook")
    monkeypatch.setattr(transport_module, "INTAKE_GRACE", 0.2)
    # What a full worker queue does: the bus stored it, then the worker dropped it.
    lost = Event(type="agent_started", data={"agent_name": "a"}, room="monitoring", origin="http")
    transport.intake(lost)
    (request,) = receiver.wait_for_ids([lost.id], timeout=5)
    assert decode(request)["seq"] is None and decode(request)["data"] == {"agent_name": "a"}
    health = wait_until(lambda: (h := transport.health())["delivered"] == 1 and h["intake_waiting"] == 0 and h,
                        message="delivered, and forgotten by the transport")
    assert health["unsequenced"] == 1 and health["pending"] == 0


def test_start_delivers_what_a_crash_left_stored_but_unsequenced(
        webhook_bus, receiver_factory, webhook_config, secret, endpoint, free_port):
    url = f"http://127.0.0.1:{free_port}/hook"
    config = webhook_config(endpoint("crm", url, secret))
    path = Path(config.data_dir) / "webhooks.sqlite3"
    with Outbox(path) as outbox:  # what a process killed between storing and sequencing left
        outbox.enqueue([("crm", "evt_left", "agent_started",
                         '{"type":"agent_started","timestamp":"t","data":{"id":"evt_left","seq":null}}', time.time())],
                       status="intake")
    receiver = receiver_factory(secret, port=free_port)
    bus = webhook_bus(endpoint("crm", url, secret))
    receiver.wait_for_ids(["evt_left"])
    assert bus.transport("webhook").health()["unsequenced"] == 1


def test_durable_accept_setting(isolated_env, secret):
    base = {**isolated_env, "EVENTBUS_WEBHOOKS": f'[{{"name": "a", "url": "http://x/h", "secret": "{secret}"}}]'}
    assert load_settings(started_config(base)).durable_accept == "clients"
    assert load_settings(started_config({**base, "EVENTBUS_WEBHOOK_DURABLE_ACCEPT": "emit"})).durable_accept == "emit"
    with pytest.raises(ConfigError, match="EVENTBUS_WEBHOOK_DURABLE_ACCEPT: expected one of clients, emit, off"):
        load_settings(started_config({**base, "EVENTBUS_WEBHOOK_DURABLE_ACCEPT": "yes"}))
    config = started_config(base)
    config.plugins = {"webhook": {"durable_accept": "sometimes"}}
    with pytest.raises(ConfigError, match=r"\[plugins.webhook\]: 'durable_accept'"):
        load_settings(config)


class Redactor:
    """A plain implementation that rewrites events in place."""

    @hookimpl
    def eventbus_event(self, event: Event) -> None:
        event.data = {**event.data, "secret": "[redacted]"}


class DropAlerts:
    """A wrapper that drops ``alert_created`` after the other implementations ran."""

    @hookimpl(wrapper=True, tryfirst=True)
    def eventbus_event(self, event: Event) -> Any:
        results = yield
        return [False] if event.type == "alert_created" else results


def test_it_stores_what_other_plugins_made_of_the_event(bus_factory, webhook_config, receiver_factory,
                                                          secret, endpoint):
    receiver = receiver_factory(secret)
    bus = bus_factory([Redactor(), DropAlerts(), eventbus_webhook],
                      webhook_config(endpoint("crm", receiver.url, secret)), connect_signals=False)
    assert bus.emit("alert_created", {"message": "m"}, origin="http") is None  # dropped
    kept = bus.emit("agent_started", {"agent_name": "a", "secret": "pw"}, origin="http")
    (request,) = receiver.wait_for_ids([kept.id])
    assert decode(request)["data"] == {"agent_name": "a", "secret": "[redacted]"}
    wait_until(lambda: bus.transport("webhook").health()["delivered"] == 1, message="delivered")
    assert stored_rows(bus) == []  # the delivered row is gone, and the dropped one never came
    assert bus.transport("webhook").health()["accepted"] == 1
