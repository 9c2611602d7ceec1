"""``eventbus webhook ...``: inspect and repair deliveries straight from the outbox file, with
or without a running server."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from eventbus.config import ConfigError

from .outbox import Outbox
from .redaction import scrub
from .settings import WebhookSettings, generate_secret, load_settings


def _settings() -> tuple[WebhookSettings, Path]:
    config = click.get_current_context().obj.config
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None
    return settings, Path(config.data_dir) / settings.outbox_file


def _open(path: Path) -> Outbox | None:
    """The outbox if it exists; commands that only read never create one."""
    return Outbox(path).open() if path.exists() else None


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + "Z"


@click.group("webhook")
def webhook_group() -> None:
    """Webhook endpoints, dead letters and secrets."""


@webhook_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_command(as_json: bool) -> None:
    """Configured endpoints with their pending and dead-letter counts and last results."""
    settings, path = _settings()
    outbox = _open(path)
    try:
        counts = outbox.counts() if outbox else {}
        states = outbox.endpoint_states() if outbox else {}
    finally:
        if outbox:
            outbox.close()
    rows = []
    for endpoint in settings.endpoints:
        state = states.get(endpoint.name, {})
        disabled = (None if endpoint.enabled else "disabled in configuration") or (
            state.get("disabled_reason") or "disabled" if state.get("disabled") else None)
        rows.append({**endpoint.describe(), "disabled": disabled,
                     "pending": counts.get(endpoint.name, {}).get("pending", 0),
                     "dead_letters": counts.get(endpoint.name, {}).get("dead", 0),
                     "last_success_at": state.get("last_success_at"),
                     "last_error": scrub(state.get("last_error"), endpoint.url),
                     "last_error_at": state.get("last_error_at")})
    configured = {e.name for e in settings.endpoints}
    orphans = {name: c for name, c in counts.items() if name not in configured}
    if as_json:
        click.echo(json.dumps({"outbox": str(path), "endpoints": rows, "unconfigured": orphans}, indent=2))
        return
    if not rows:
        click.echo("no webhook endpoints configured (EVENTBUS_WEBHOOKS or [[webhooks]] in eventbus.toml)")
    for row in rows:
        click.echo(f"{row['name']}  {row['url']}  {'DISABLED: ' + row['disabled'] if row['disabled'] else 'enabled'}")
        click.echo(f"    types {','.join(row['event_types'])}  pending {row['pending']}  "
                   f"dead letters {row['dead_letters']}  last success {_when(row['last_success_at'])}")
        if row["last_error"]:
            click.echo(f"    last error {_when(row['last_error_at'])}: {row['last_error']}")
    for name, c in sorted(orphans.items()):
        click.echo(f"{name}  (no longer configured)  pending {c.get('pending', 0)}  "
                   f"dead letters {c.get('dead', 0)}")


@webhook_group.command("dead-letters")
@click.option("--endpoint", help="Only this endpoint.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with bodies) instead of a table.")
def dead_letters_command(endpoint: str | None, limit: int, as_json: bool) -> None:
    """Deliveries that ran out of attempts, newest first."""
    settings, path = _settings()
    outbox = _open(path)
    try:
        rows = outbox.dead_letters(endpoint, limit) if outbox else []
    finally:
        if outbox:
            outbox.close()
    urls = {e.name: e.url for e in settings.endpoints}
    for row in rows:  # texts stored by an older version may hold the endpoint's raw URL
        row.last_error = scrub(row.last_error, urls.get(row.endpoint))
    if as_json:
        click.echo(json.dumps([{**r.describe(), "body": json.loads(r.body)} for r in rows], indent=2))
        return
    if not rows:
        click.echo("no dead letters")
    for r in rows:
        click.echo(f"{r.id}  {r.endpoint}  {r.event_id}  {r.event_type}  attempts {r.attempts}  "
                   f"{_when(r.updated_at)}  {r.last_error or ''}")


@webhook_group.command("redeliver")
@click.argument("ident", required=False)
@click.option("--endpoint", help="Only deliveries to this endpoint.")
@click.option("--all", "everything", is_flag=True, help="Every dead letter (of --endpoint when given).")
def redeliver_command(ident: str | None, endpoint: str | None, everything: bool) -> None:
    """Schedule a dead letter again, now: IDENT is its row id (from dead-letters) or the
    event id. A running server picks it up within a second."""
    if (ident is None) == (not everything):
        raise click.UsageError("give one IDENT (row id or event id), or --all")
    _, path = _settings()
    outbox = _open(path)
    if outbox is None:
        raise click.ClickException(f"no webhook outbox at {path}: nothing to redeliver")
    try:
        count = outbox.redeliver(ident, endpoint)
    finally:
        outbox.close()
    if not count:
        raise click.ClickException(f"no delivery matches {ident or 'dead letters'}"
                                   + (f" for endpoint {endpoint}" if endpoint else ""))
    click.echo(f"rescheduled {count} deliver{'y' if count == 1 else 'ies'}")


@webhook_group.command("enable")
@click.argument("name")
def enable_command(name: str) -> None:
    """Re-enable an endpoint that was disabled (a receiver's 410 Gone)."""
    settings, path = _settings()
    configured = {e.name: e for e in settings.endpoints}
    if name not in configured:
        raise click.ClickException(f"no webhook endpoint named {name!r}; configured: "
                                   f"{', '.join(sorted(configured)) or 'none'}")
    outbox = _open(path)
    try:
        changed = outbox.enable(name) if outbox else False
    finally:
        if outbox:
            outbox.close()
    if not configured[name].enabled:
        click.echo(f"{name}: has enabled = false in the configuration; change it there to deliver")
    elif changed:
        click.echo(f"{name}: enabled; a running server resumes its deliveries within a second")
    else:
        click.echo(f"{name}: was not disabled")


@webhook_group.command("secret")
@click.option("--bytes", "nbytes", default=32, show_default=True, type=click.IntRange(24, 64),
              help="Random bytes in the secret.")
def secret_command(nbytes: int) -> None:
    """Print a new whsec_ signing secret (alone on stdout, for scripts)."""
    click.echo(generate_secret(nbytes))


def register(cli: Any) -> None:
    cli.add_command(webhook_group)
