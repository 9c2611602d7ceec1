"""The stand-alone Flask application that ``eventbus serve`` runs."""

from __future__ import annotations

from typing import Any

from flask import Flask

from eventbus.bus import EventBus
from eventbus.config import Config

from .manager import SocketManager


def create_app(config: Config | None = None, bus: EventBus | None = None, **socketio_options: Any) -> Flask:
    """A Flask app with the Socket.IO server, the HTTP API and the live page.

    The :class:`SocketManager` is ``app.extensions["eventbus"]``. An existing data dir that
    other users can read is made private (``0700``) before anything is served.
    """
    if bus is None:
        bus = EventBus(config or Config.from_env())
    if bus.config.data_path.is_dir():
        bus.config.ensure_data_dir()
    app = Flask("eventbus")
    app.config["JSON_SORT_KEYS"] = False
    SocketManager(app, bus=bus, **socketio_options)
    return app
