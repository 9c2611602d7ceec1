"""The ``eventbus`` command. The core adds ``plugins``; plugins add the rest (``serve``,
``token``, ``emit``, ``tail``, ``webhook``...) through ``eventbus_register_commands``."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click

from .config import Config, ConfigError
from .events import EventRegistry
from .plugins import PluginManager, create_plugin_manager


class CLIState:
    """What every subcommand can reach through ``click.get_current_context().obj``."""

    def __init__(self, config: Config, pm: PluginManager):
        self.config = config
        self.pm = pm


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="eventbus")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """eventbus: real-time events for AI-agent applications."""
    if verbose:
        logging.basicConfig(level=logging.DEBUG if verbose > 1 else logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_obj
def plugins_command(state: CLIState, as_json: bool) -> None:
    """List loaded plugins, where they came from, their hooks and transports."""
    rows = state.pm.describe()
    for row in rows:
        plugin = state.pm.get_plugin(row["name"])
        found: list[Any] = []
        impl = getattr(plugin, "eventbus_register_transports", None)
        if impl is not None:
            try:
                impl(register=found.append, config=state.config)
            except Exception as exc:  # noqa: BLE001
                row["transport_error"] = f"{type(exc).__name__}: {exc}"
        row["transports"] = [getattr(t, "name", type(t).__name__) for t in found]
        for transport in found:
            close = getattr(transport, "close", None)
            if close is not None:
                close()
    registry = EventRegistry()
    state.pm.hook.eventbus_register_event_types(register=registry.register)
    failures = [f.__dict__ for f in state.pm.failures]
    if as_json:
        click.echo(json.dumps({"plugins": rows, "failed": failures,
                               "event_types": registry.names()}, indent=2))
        return
    if not rows:
        click.echo("no plugins loaded")
    for row in rows:
        click.echo(f"{row['name']}  ({row['source']})")
        click.echo(f"    hooks: {', '.join(row['hooks']) or '-'}")
        if row["transports"]:
            click.echo(f"    transports: {', '.join(row['transports'])}")
    for failure in failures:
        click.echo(f"{failure['name']}  FAILED ({failure['source']}): {failure['error']}")


@cli.command("settings")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--markdown", is_flag=True, help="Print the Markdown table of docs/settings.md (defaults only).")
@click.pass_obj
def settings_command(state: CLIState, as_json: bool, markdown: bool) -> None:
    """List every setting the core and the loaded plugins declare: variable, value, owner.
    Values you set are marked with *; secrets are never shown."""
    rows = state.config.settings()
    if as_json:
        click.echo(json.dumps({"settings": rows}, indent=2))
        return
    if markdown:
        click.echo(settings_markdown(rows))
        return
    width = max((len(row["env"]) for row in rows), default=0)
    for row in rows:
        mark = "*" if row["configured"] else " "
        click.echo(f"{row['env']:<{width}} {mark} {row['value'] or '-':<24} {row['plugin']:<18} {row['help']}")


def settings_markdown(rows: list[dict[str, Any]]) -> str:
    """The settings table of docs/settings.md: one row per setting, by owner."""
    lines = ["| variable | default | plugin | what it does |", "|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: (r["plugin"] != "eventbus", r["plugin"])):
        default = f"`{row['default']}`" if row["default"] else "unset"
        lines.append(f"| `{row['env']}` | {default.replace('|', '&#124;')} | {row['plugin']} | "
                     f"{row['help'].replace('|', '&#124;')} |")
    return "\n".join(lines)


def build_cli(config: Config) -> tuple[click.Group, CLIState]:
    pm = create_plugin_manager(config)
    pm.hook.eventbus_register_commands(cli=cli)
    return cli, CLIState(config, pm)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: load settings and plugins, then run the command."""
    try:
        config = Config.from_env()
        group, state = build_cli(config)
    except ConfigError as exc:
        click.echo(f"eventbus: configuration error: {exc}", err=True)
        sys.exit(2)
    group.main(args=argv, obj=state, prog_name="eventbus")


if __name__ == "__main__":  # pragma: no cover
    main()
