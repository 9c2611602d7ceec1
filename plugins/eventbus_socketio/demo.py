"""Simulated agents for ``eventbus demo`` and ``eventbus serve --demo``."""

from __future__ import annotations

from typing import Any

import click


def start_demo(manager: Any) -> None:
    """Run the demo agents in the server's process (filled in by the demo module)."""
    raise click.ClickException("the demo is not available in this build")


@click.command("demo")
def demo_command() -> None:
    """Run simulated agents against a running server."""
    raise click.ClickException("the demo is not available in this build")
