"""Deliveries to real loopback receivers that verify every request with the official
``standardwebhooks`` library: filtering, retries, Retry-After, 410, timeouts, dead letters,
isolation and outbox bounds."""

from __future__ import annotations

import threading
import time

from eventbus.testing import wait_until
from eventbus_webhook.testing import decode


def webhook_health(bus):
    return bus.transport("webhook").health()


def test_events_reach_receiver_verified_with_official_library(webhook_bus, receiver_factory, secret, endpoint):
    receiver = receiver_factory(secret)
    bus = webhook_bus(endpoint("crm", receiver.url, secret, event_types=["agent_*"]))
    wanted = [bus.emit("agent_started", {"agent_name": "researcher", "i": i}).id for i in range(20)]
    wanted += [bus.emit("agent_completed", {"agent_name": "researcher"}).id]
    bus.emit("health_update", {"component": "db", "status": "ok"})  # filtered out
    bus.emit("chat_message", {"message": "hi"}, session_id="s1")  # filtered out

    accepted = receiver.wait_for_ids(wanted)
    assert receiver.invalid == 0
    assert {r["id"] for r in accepted} == set(wanted)
    first = next(r for r in accepted if r["id"] == wanted[0])
    assert set(first["body"]) == {"type", "timestamp", "data"}
    assert first["body"]["type"] == "agent_started"
    envelope = decode(first)
    assert envelope["id"] == wanted[0] and envelope["data"]["i"] == 0 and envelope["room"] == "monitoring"
    assert first["body"]["timestamp"] == envelope["timestamp"]
    assert first["headers"]["webhook-signature"].startswith("v1,")
    assert abs(int(first["headers"]["webhook-timestamp"]) - time.time()) < 60
    wait_until(lambda: webhook_health(bus)["delivered"] == len(wanted), message="delivered counted")
    health = webhook_health(bus)
    assert health["status"] == "ok" and health["pending"] == 0
    assert health["endpoints"]["crm"]["last_status"] == 204
    assert any(t["name"] == "webhook" for t in bus.status()["transports"])


def test_room_filter_and_several_endpoints(webhook_bus, receiver_factory, secret, endpoint):
    everything = receiver_factory(secret)
    chat_only = receiver_factory(secret)
    bus = webhook_bus(endpoint("all", everything.url, secret),
                      endpoint("chat", chat_only.url, secret, rooms=["session:*"]))
    chat = bus.emit("chat_message", {"message": "hello"}, session_id="s1").id
    agent = bus.emit("agent_started", {"agent_name": "a"}).id
    everything.wait_for_ids([chat, agent])
    chat_only.wait_for_ids([chat])
    bus.close()  # drains: nothing else can still arrive
    assert chat_only.ids() == {chat}


def test_secret_rotation_signs_with_every_secret(webhook_bus, receiver_factory):
    from eventbus_webhook import generate_secret

    old, new = generate_secret(), generate_secret()
    old_receiver, new_receiver = receiver_factory(old), receiver_factory(new)
    bus = webhook_bus({"name": "old", "url": old_receiver.url, "secret": [new, old]},
                      {"name": "new", "url": new_receiver.url, "secrets": [new, old]})
    event = bus.emit("agent_started", {"agent_name": "a"})
    old_receiver.wait_for_ids([event.id])
    new_receiver.wait_for_ids([event.id])
    signatures = old_receiver.accepted[0]["headers"]["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)


def test_failing_first_attempts_still_delivers_every_event_once_per_id(
        webhook_bus, receiver_factory, secret, endpoint):
    receiver = receiver_factory(secret, respond=lambda req: 500 if req["attempt"] <= 2 else 200)
    bus = webhook_bus(endpoint("flaky", receiver.url, secret, concurrency=4))
    wanted = [bus.emit("tool_executed", {"tool": "search", "i": i}).id for i in range(30)]

    accepted = receiver.wait_for_ids(wanted)
    assert sorted(r["id"] for r in accepted) == sorted(wanted)  # exactly once accepted per id
    assert all(receiver.attempts[i] == 3 for i in wanted)
    # The webhook-id is stable across retries: all three attempts carried the event id.
    assert {r["id"] for r in receiver.requests} == set(wanted)
    health = wait_until(lambda: (h := webhook_health(bus))["delivered"] == 30 and h, message="delivered")
    assert health["retries"] == 60 and health["failures"] == 60 and health["dead_letters"] == 0


def test_retry_after_is_honoured_and_pauses_the_endpoint(webhook_bus, receiver_factory, secret, endpoint):
    def respond(request):
        return (503, {"Retry-After": "1"}) if request["attempt"] == 1 else 200

    receiver = receiver_factory(secret, respond=respond)
    bus = webhook_bus(endpoint("busy", receiver.url, secret, retry_schedule=[0, 0.01, 0.01]))
    event = bus.emit("agent_started", {"agent_name": "a"})
    receiver.wait_for_requests(1)
    health = wait_until(lambda: (h := webhook_health(bus)["endpoints"]["busy"])["retries"] and h,
                        message="retry recorded")
    assert health["paused_for_s"] > 0 and health["last_status"] == 503
    receiver.wait_for_ids([event.id], timeout=5)
    first, second = receiver.requests[0], receiver.requests[1]
    assert second["received_at"] - first["received_at"] >= 0.95  # not the 0.01 s schedule


def test_gone_disables_the_endpoint_until_enabled(webhook_bus, receiver_factory, secret, endpoint, caplog):
    gone = threading.Event()
    gone.set()
    receiver = receiver_factory(secret, respond=lambda req: 410 if gone.is_set() else 200)
    bus = webhook_bus(endpoint("old", receiver.url, secret))
    first = bus.emit("agent_started", {"agent_name": "a"})
    health = wait_until(lambda: (h := webhook_health(bus))["endpoints_disabled"] and h, message="disabled")
    assert health["status"] == "down"
    ep = health["endpoints"]["old"]
    assert ep["state"] == "disabled" and ep["disabled"] == 1 and "410" in ep["disabled_reason"]
    assert ep["dead_letters"] == 1
    assert "410 Gone" in caplog.text and "eventbus webhook enable old" in caplog.text

    skipped = bus.emit("agent_started", {"agent_name": "b"})
    wait_until(lambda: webhook_health(bus)["skipped_disabled"] == 1, message="skip counted")
    assert receiver.attempts[skipped.id] == 0

    gone.clear()
    transport = bus.transport("webhook")
    assert transport.outbox.enable("old")  # what `eventbus webhook enable old` does
    wait_until(lambda: webhook_health(bus)["endpoints_disabled"] == 0, timeout=5, message="re-enabled")
    later = bus.emit("agent_started", {"agent_name": "c"})
    receiver.wait_for_ids([later.id])
    assert transport.outbox.redeliver(first.id) == 1
    receiver.wait_for_ids([first.id], timeout=5)


def test_hanging_receiver_hits_the_timeout(webhook_bus, receiver_factory, secret, endpoint):
    def hang(request):
        if request["attempt"] == 1:
            receiver.release.wait(30)
        return 200

    receiver = receiver_factory(secret, respond=hang)
    bus = webhook_bus(endpoint("slow", receiver.url, secret, timeout=0.3))
    started = time.monotonic()
    event = bus.emit("agent_started", {"agent_name": "a"})
    receiver.wait_for_ids([event.id], timeout=5)
    assert receiver.attempts[event.id] == 2
    assert time.monotonic() - started >= 0.3
    health = webhook_health(bus)["endpoints"]["slow"]
    assert health["timeouts"] == 1 and "timeout" in health["last_error"]


def test_exhausted_events_become_dead_letters_and_can_be_redelivered(
        webhook_bus, receiver_factory, secret, endpoint):
    healthy = threading.Event()
    receiver = receiver_factory(secret, respond=lambda req: 200 if healthy.is_set() else 500)
    bus = webhook_bus(endpoint("down", receiver.url, secret, retry_schedule=[0, 0.01]))
    wanted = [bus.emit("alert_created", {"message": f"m{i}"}).id for i in range(5)]
    health = wait_until(lambda: (h := webhook_health(bus))["dead_letters"] == 5 and h, message="dead letters")
    assert health["dead_lettered"] == 5 and health["pending"] == 0 and health["status"] == "degraded"
    assert health["endpoints"]["down"]["state"] == "failing"
    assert all(receiver.attempts[i] == 2 for i in wanted)
    outbox = bus.transport("webhook").outbox
    assert {d.event_id for d in outbox.dead_letters()} == set(wanted)

    healthy.set()
    assert outbox.redeliver(None, "down") == 5
    receiver.wait_for_ids(wanted)
    wait_until(lambda: webhook_health(bus)["endpoints"]["down"]["state"] == "ok", message="recovered")


def test_dead_endpoint_never_slows_another_endpoint_or_the_bus(
        webhook_bus, receiver_factory, secret, endpoint):
    def hang(request):
        receiver_slow.release.wait(30)
        return 200

    receiver_slow = receiver_factory(secret, respond=hang)
    receiver_fast = receiver_factory(secret)
    bus = webhook_bus(endpoint("slow", receiver_slow.url, secret, timeout=10, concurrency=2),
                      endpoint("fast", receiver_fast.url, secret))
    started = time.monotonic()
    wanted = [bus.emit("agent_started", {"agent_name": "a", "i": i}).id for i in range(200)]
    emit_seconds = time.monotonic() - started
    receiver_fast.wait_for_ids(wanted, timeout=10)
    fast_seconds = time.monotonic() - started
    assert emit_seconds < 1.0
    assert fast_seconds < 5.0  # far below the slow endpoint's 10 s timeout
    slow = webhook_health(bus)["endpoints"]["slow"]
    assert slow["delivered"] == 0 and slow["in_flight"] >= 2 and slow["pending"] == 200


def test_outbox_bounds_are_enforced_and_counted(webhook_bus, free_port, secret, endpoint):
    down = f"http://127.0.0.1:{free_port}/hook"
    bus = webhook_bus(endpoint("down", down, secret, retry_schedule=[0, 3600]), max_pending=5,
                      max_age=1, housekeeping_interval=0.1, dead_letter_max=3)
    for i in range(8):
        bus.emit("agent_started", {"agent_name": "a", "i": i})
    wait_until(lambda: (h := webhook_health(bus))["refused_outbox_full"] == 3 and h["accepted"] == 5,
               message="refusals counted")
    # Older than max_age: pending rows become dead letters; only dead_letter_max are kept.
    health = wait_until(lambda: (h := webhook_health(bus))["expired"] == 5 and h["dead_letters_pruned"] == 2
                        and h, timeout=5, message="expired and pruned")
    assert health["pending"] == 0 and health["dead_letters"] == 3
    assert "Connection" in health["endpoints"]["down"]["last_error"]


def test_pending_deliveries_survive_a_restart(webhook_bus, receiver_factory, free_port, secret, endpoint):
    url = f"http://127.0.0.1:{free_port}/hook"
    first = webhook_bus(endpoint("later", url, secret, retry_schedule=[0] + [0.3] * 7))
    wanted = [first.emit("agent_started", {"agent_name": "a", "i": i}).id for i in range(10)]
    wait_until(lambda: webhook_health(first)["failures"] >= 10, message="first attempts failed")
    first.close()

    receiver = receiver_factory(secret, port=free_port)
    second = webhook_bus(endpoint("later", url, secret, retry_schedule=[0] + [0.3] * 7))
    receiver.wait_for_ids(wanted, timeout=10)
    wait_until(lambda: webhook_health(second)["pending"] == 0, message="outbox drained")
