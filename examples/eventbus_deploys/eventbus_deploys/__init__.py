"""eventbus_deploys: tell everyone watching eventbus that a deployment finished.

One module, five hooks: an event type (``deploy_finished``), a transport that hands events to
Python ``logging`` (and so to whatever your logging ships to), an auth strategy for the CI
system's key, and the ``eventbus deploy`` command.
"""

from __future__ import annotations

import fnmatch
import hmac
import json
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import click

from eventbus import Config, ConfigError, Event, EventTypeSpec, Identity, Transport, hookimpl
from eventbus.settings import Setting, text

__version__ = "0.1.0"

DEPLOY_FINISHED = EventTypeSpec(
    "deploy_finished",
    category="ops",
    namespace="/monitoring",
    room="monitoring",
    description="A deployment finished (successfully or not).",
    schema={
        "type": "object",
        "properties": {"service": {"type": "string"}, "version": {"type": "string"},
                       "ok": {"type": "boolean"}, "url": {"type": "string"}},
        "required": ["service", "version", "ok"],
    },
)

#: The plugin's settings, filled by eventbus_configure.
settings: dict[str, Any] = {}


class LoggingTransport(Transport):
    """Writes the events it accepts to a :mod:`logging` logger, one JSON line each.
    Failed deploys and critical alerts are logged as errors."""

    name = "deploy-log"

    def __init__(self, logger: str = "eventbus.deploys", types: tuple[str, ...] = ("deploy_finished", "alert_*")):
        self.logger = logging.getLogger(logger)
        self.types = types
        self.logged = 0

    def accepts(self, event: Event) -> bool:
        # Runs in the emitter's thread: keep it cheap.
        return any(fnmatch.fnmatchcase(event.type, pattern) for pattern in self.types)

    def send(self, event: Event) -> None:
        failed = event.data.get("ok") is False or event.data.get("severity") == "critical"
        self.logger.log(logging.ERROR if failed else logging.INFO, "%s %s", event.type, event.to_json())
        self.logged += 1

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "logged": self.logged}


def ci_key(variable: str, value: Any) -> str:
    if len(str(value)) < 16:
        raise ConfigError(f"{variable}: use at least 16 random characters")
    return str(value)


@hookimpl
def eventbus_declare_settings() -> list[Setting]:
    return [
        Setting("deploy_key", "EVENTBUS_DEPLOY_KEY", None, ci_key,
                "the key CI publishes deploys with", secret=True),
        Setting("deploy_logger", "EVENTBUS_DEPLOY_LOGGER", "eventbus.deploys", text,
                "the logger deploy events are written to"),
    ]


@hookimpl
def eventbus_configure(config: Config) -> None:
    settings.clear()
    settings.update(ci_key=config.deploy_key, logger=config.deploy_logger)


@hookimpl
def eventbus_register_event_types(register: Callable[..., EventTypeSpec]) -> None:
    register(DEPLOY_FINISHED)


@hookimpl
def eventbus_register_transports(register: Callable[[Transport], None], config: Config) -> None:
    register(LoggingTransport(settings.get("logger", "eventbus.deploys")))


@hookimpl
def eventbus_authenticate(auth: Mapping[str, Any], environ: Mapping[str, Any]) -> Identity | None:
    """The CI key is a publisher called "ci". Anything else is for the next strategy."""
    key, token = settings.get("ci_key"), auth.get("token")
    if not key or not isinstance(token, str):
        return None
    if hmac.compare_digest(token.encode(), str(key).encode()):
        return Identity("ci", frozenset({"publisher"}), {"sub": "ci"}, "deploy-key")
    return None


@click.command("deploy")
@click.argument("service")
@click.argument("version")
@click.option("--failed", is_flag=True, help="The deployment failed.")
@click.option("--url", default=None, help="Server URL (default http://127.0.0.1:EVENTBUS_PORT).")
@click.option("--token", default=None, help="The CI key or a publisher token (EVENTBUS_TOKEN).")
def deploy_command(service: str, version: str, failed: bool, url: str | None, token: str | None) -> None:
    """Announce that SERVICE reached VERSION (POST /api/events)."""
    import requests

    token = token or os.environ.get("EVENTBUS_TOKEN")
    if not token:
        raise click.UsageError("pass --token or set EVENTBUS_TOKEN")
    port = os.environ.get("EVENTBUS_PORT", "5050")
    base = (url or f"http://127.0.0.1:{port}").rstrip("/")
    body = {"type": "deploy_finished", "data": {"service": service, "version": version, "ok": not failed}}
    try:
        response = requests.post(f"{base}/api/events", json=body, timeout=10,
                                 headers={"Authorization": f"Bearer {token}"})
    except requests.RequestException as exc:
        raise click.ClickException(f"cannot reach {base}: {exc}") from None
    if response.status_code != 202:
        raise click.ClickException(f"refused: {response.status_code} {response.text.strip()}")
    click.echo(json.dumps(response.json()))


@hookimpl
def eventbus_register_commands(cli: click.Group) -> None:
    cli.add_command(deploy_command)
