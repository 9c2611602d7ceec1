"""eventbus_auth: JWT, API-key and validator-adapter authentication, the default
authorization rules, and the ``eventbus token`` command."""

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from eventbus.hookspecs import hookimpl

from .cli import token_group
from .sessions import MemoryOwners, RedisOwners, SessionRules
from .strategies import BUILTIN_ROLES, AuthPlugin, create_token, default_authorize, known_roles, load_validator

if TYPE_CHECKING:
    import click

    from eventbus.config import Config
    from eventbus.identity import Identity
    from eventbus.settings import Setting

#: The strategies of the entry-point plugin, configured by the last bus that loads it.
module_plugin = AuthPlugin()


@hookimpl
def eventbus_declare_settings() -> "tuple[Setting, ...]":
    return module_plugin.eventbus_declare_settings()


@hookimpl
def eventbus_configure(config: "Config") -> None:
    module_plugin.eventbus_configure(config=config)


@hookimpl(trylast=True)  # plugins' strategies first: see the hook's contract
def eventbus_authenticate(auth: Mapping[str, Any], environ: Mapping[str, Any]) -> "Identity | None":
    return module_plugin.eventbus_authenticate(auth=auth, environ=environ)


@hookimpl(trylast=True)
def eventbus_authorize(identity: "Identity", namespace: str, room: "str | None", action: str) -> bool:
    return module_plugin.eventbus_authorize(identity=identity, namespace=namespace, room=room, action=action)


@hookimpl
def eventbus_issue_token(user: str, roles: "Sequence[str]", ttl: float) -> "str | None":
    return module_plugin.eventbus_issue_token(user=user, roles=roles, ttl=ttl)


@hookimpl
def eventbus_register_commands(cli: "click.Group") -> None:
    cli.add_command(token_group)


__all__ = [
    "BUILTIN_ROLES",
    "AuthPlugin",
    "MemoryOwners",
    "RedisOwners",
    "SessionRules",
    "create_token",
    "default_authorize",
    "known_roles",
    "load_validator",
    "module_plugin",
    "token_group",
]
