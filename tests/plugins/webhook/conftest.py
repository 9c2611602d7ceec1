"""Fixtures for the webhook plugin: secrets, verifying receivers that always stop, and buses
with webhook endpoints on a scaled-down retry schedule."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import eventbus_webhook
from eventbus import Config, EventBus
from eventbus_webhook.testing import WebhookReceiver

FAST = [0, 0.05, 0.05, 0.05]  # retry schedule in seconds, small enough for tests


@pytest.fixture
def secret() -> str:
    return eventbus_webhook.generate_secret()


@pytest.fixture
def receiver_factory() -> Iterator[Callable[..., WebhookReceiver]]:
    started: list[WebhookReceiver] = []

    def factory(secret: str, respond: Any = None, port: int = 0) -> WebhookReceiver:
        receiver = WebhookReceiver(secret, respond, port=port)
        started.append(receiver)
        return receiver.start()

    yield factory
    for receiver in started:
        receiver.stop()


@pytest.fixture
def free_port() -> int:
    """A loopback port nothing listens on (a receiver that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def webhook_config(tmp_path: Any) -> Callable[..., Config]:
    def build(*endpoints: dict[str, Any], **plugin: Any) -> Config:
        plugin.setdefault("jitter", 0)
        return Config(data_dir=str(tmp_path / "data"), webhooks=list(endpoints),
                      plugins={"webhook": plugin})
    return build


@pytest.fixture
def webhook_bus(bus_factory: Callable[..., EventBus], webhook_config: Callable[..., Config]) -> Callable[..., EventBus]:
    """``webhook_bus(endpoint, ..., **plugin_settings)``: a started bus with only this plugin."""
    def build(*endpoints: dict[str, Any], **plugin: Any) -> EventBus:
        return bus_factory([eventbus_webhook], webhook_config(*endpoints, **plugin), connect_signals=False)
    return build


@pytest.fixture
def endpoint() -> Callable[..., dict[str, Any]]:
    """``endpoint(name, url, secret, **fields)``: an endpoint table on the fast schedule."""
    def build(name: str, url: str, secret: str, **fields: Any) -> dict[str, Any]:
        fields.setdefault("retry_schedule", FAST)
        return {"name": name, "url": url, "secret": secret, **fields}
    return build
