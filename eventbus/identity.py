"""Who is connected: the identity that auth strategies return, and the error they raise."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .events import EventBusError


@dataclass(frozen=True)
class Identity:
    """An authenticated caller.

    :param user_id: stable user id (the JWT ``sub``).
    :param roles: e.g. ``{"admin"}``, ``{"publisher"}``.
    :param claims: everything the strategy knew (JWT claims, validator output).
    :param strategy: which strategy recognised the credentials.
    """

    user_id: str
    roles: frozenset[str] = frozenset()
    claims: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    strategy: str = ""

    def has_role(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))


class AuthError(EventBusError):
    """A refusal: ``unauthorized``, ``forbidden`` or ``token_expired``."""

    code = "unauthorized"
