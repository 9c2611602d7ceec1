"""``eventbus token create``: mint a token signed with the bus's secret key."""

from __future__ import annotations

import click

from eventbus.config import Config, ConfigError

from .strategies import DEFAULT_TTL, create_token, known_roles


@click.group("token")
def token_group() -> None:
    """Create access tokens for clients and scripts."""


@token_group.command("create")
@click.option("--user", required=True, help="The user id (the token's 'sub').")
@click.option("--role", "roles", multiple=True,
              help="A role to grant (admin, agent, publisher, or one declared in EVENTBUS_ROLES); "
                   "repeat for several.")
@click.option("--session", "sessions", multiple=True,
              help="A chat session the user may use (the 'sessions' claim); repeat for several. "
                   "A token that lists sessions is limited to them.")
@click.option("--ttl", type=click.IntRange(min=1), default=DEFAULT_TTL, show_default=True,
              help="Lifetime in seconds.")
def create_command(user: str, roles: tuple[str, ...], sessions: tuple[str, ...], ttl: int) -> None:
    """Print a signed token (and nothing else) on stdout.

    The key is EVENTBUS_SECRET_KEY, or the one kept in EVENTBUS_DATA_DIR (created on first
    use, mode 0600), which is the key the server checks tokens with. A role the server does
    not know is refused, so a typo cannot mint a token that silently grants nothing.
    """
    state = click.get_current_context().obj
    config = state.config if state is not None else Config.from_env()
    known = known_roles(config)
    unknown = [role for role in roles if role not in known]
    if unknown:
        raise click.BadParameter(
            f"unknown role {', '.join(map(repr, unknown))}; known roles: {', '.join(known)} "
            "(declare more with EVENTBUS_ROLES=name,name)", param_hint="--role")
    try:
        secret = config.ensure_secret_key()
    except (OSError, ConfigError) as exc:
        raise click.ClickException(f"cannot read or create the secret key: {exc}") from None
    click.echo(create_token(secret, user, roles, ttl, sessions=list(sessions) if sessions else None))
