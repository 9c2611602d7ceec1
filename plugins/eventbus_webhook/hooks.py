"""The plugin's hook implementations: the ``webhook`` transport and the ``eventbus webhook``
commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from eventbus.hookspecs import hookimpl

from .settings import SETTINGS, load_settings
from .transport import WebhookTransport

if TYPE_CHECKING:
    import click

    from eventbus.config import Config
    from eventbus.settings import Setting
    from eventbus.transport import Transport


@hookimpl
def eventbus_declare_settings() -> tuple[Setting, ...]:
    return SETTINGS


@hookimpl
def eventbus_register_transports(register: Callable[[Transport], None], config: Config) -> None:
    """Register the ``webhook`` transport when endpoints are configured; a bad endpoint
    raises :class:`~eventbus.config.ConfigError` and stops start-up."""
    settings = load_settings(config)
    if settings.endpoints:
        register(WebhookTransport(settings, config.data_dir))


@hookimpl
def eventbus_register_commands(cli: click.Group) -> None:
    from .commands import register

    register(cli)
