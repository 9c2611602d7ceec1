"""In-process fixtures: a Flask app with the Socket.IO plugin and Flask-SocketIO's test client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import eventbus_auth
import eventbus_socketio
from eventbus import Config, EventBus
from eventbus_auth import create_token

SECRET = "test-secret-" + "s" * 40


@pytest.fixture
def make_app(tmp_path: Any) -> Iterator[Callable[..., Any]]:
    """``make_app(**config)`` -> (app, manager); buses are closed after the test."""
    buses: list[EventBus] = []

    def factory(plugins: tuple[Any, ...] = (), **overrides: Any) -> tuple[Any, Any]:
        settings = {"secret_key": SECRET, "data_dir": str(tmp_path / "data"), **overrides}
        bus = EventBus(Config(**settings), plugins=[eventbus_auth, eventbus_socketio, *plugins],
                       load_entrypoints=False)
        buses.append(bus)
        app = eventbus_socketio.create_app(bus=bus)
        return app, app.extensions["eventbus"]

    yield factory
    for bus in buses:
        bus.close()


@pytest.fixture
def app_manager(make_app: Callable[..., Any]) -> tuple[Any, Any]:
    return make_app()


def token(user: str = "alice", roles: tuple[str, ...] = ("admin", "publisher"), ttl: int = 600) -> str:
    return create_token(SECRET, user, list(roles), ttl)


def received(client: Any, namespace: str, name: str | None = None) -> list[dict[str, Any]]:
    """Envelopes received so far (optionally of one event name)."""
    return [p["args"][0] for p in client.get_received(namespace) if name is None or p["name"] == name]
