"""Our signatures against the official standardwebhooks implementation."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from eventbus.events import Event
from eventbus_webhook import generate_secret, payload, signing
from eventbus_webhook.settings import decode_secret


def test_signature_matches_the_reference_implementation():
    secret = generate_secret()
    body = '{"type":"agent_started","data":{"note":"caf\u00e9 \u2713"}}'
    ours = signing.sign([decode_secret(secret)], "evt_1", 1700000000, body)
    theirs = Webhook(secret).sign("evt_1", datetime.fromtimestamp(1700000000, tz=UTC), body)
    assert ours == theirs


def test_rotation_headers_verify_with_either_secret_and_not_a_third():
    old, new = generate_secret(), generate_secret()
    event = Event(type="agent_started", data={"agent_name": "\u00e9"}, room="monitoring")
    body = payload(event)
    headers = signing.headers([decode_secret(new), decode_secret(old)], event.id, body)
    assert headers["webhook-id"] == event.id
    for secret in (old, new):
        assert Webhook(secret).verify(body.encode("utf-8"), headers)["data"]["id"] == event.id
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(body.encode("utf-8"), headers)


def test_payload_shape():
    event = Event(type="tool_executed", data={"tool": "search"}, room="monitoring", seq=3)
    body = json.loads(payload(event))
    assert body == {"type": "tool_executed", "timestamp": event.timestamp, "data": event.to_dict()}


def test_generated_secrets_are_long_enough_and_distinct():
    a, b = generate_secret(), generate_secret()
    assert a != b and len(decode_secret(a)) == 32
