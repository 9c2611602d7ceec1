"""Socket.IO transport and server: namespaces, rooms, auth, chat, presence and the HTTP API.

Importing the plugin is cheap; Flask and Flask-SocketIO are imported when a server is built,
so an agent-only process needs neither.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from eventbus.hookspecs import hookimpl

from . import settings
from .transport import SocketIOTransport

if TYPE_CHECKING:
    import click

    from eventbus.config import Config

    from .app import create_app
    from .manager import SocketManager

__all__ = ["SocketIOTransport", "SocketManager", "create_app"]


def __getattr__(name: str) -> Any:
    if name in ("SocketManager", "create_app"):
        try:
            from . import app, manager
        except ImportError as exc:
            raise ImportError(
                f"{name} needs Flask-SocketIO: pip install 'eventbus[socketio]' ({exc})") from exc
        return getattr(manager if name == "SocketManager" else app, name)
    raise AttributeError(name)


@hookimpl
def eventbus_declare_settings() -> tuple[Any, ...]:
    return settings.SETTINGS


@hookimpl
def eventbus_configure(config: Config) -> None:
    settings.check_origins(config)


@hookimpl
def eventbus_register_transports(register: Callable[[Any], None], config: Config) -> None:
    register(SocketIOTransport())


@hookimpl
def eventbus_register_commands(cli: click.Group) -> None:
    from .asyncapi import asyncapi_command
    from .bench import bench_command
    from .commands import emit_command, serve_command, tail_command
    from .demo import demo_command

    for command in (serve_command, emit_command, tail_command, demo_command, asyncapi_command, bench_command):
        cli.add_command(command)
