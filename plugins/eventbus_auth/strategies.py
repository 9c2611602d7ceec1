"""Authentication strategies (identity-provider JWKS, validator adapter, JWT, API keys) and
the default authorization rules.

Order: ``auth["api_key"]`` goes straight to the API keys. A token from the configured
identity provider (``EVENTBUS_JWKS_URL``: header ``alg`` among ``EVENTBUS_JWT_ALGORITHMS``
and unverified ``iss`` equal to ``EVENTBUS_JWT_ISSUER``) is decided by the JWKS strategy
alone (:mod:`eventbus_auth.jwks`). Any other token goes to the operator's validator next,
because an existing auth system's tokens are often JWTs signed with keys we do not hold, and
our JWT check would refuse them as forged. Our JWT check comes next and refuses a JWT-shaped
token outright (so an expired token is reported as ``token_expired``). API keys come last.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import importlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from eventbus.config import ConfigError
from eventbus.events import ADMIN_NAMESPACE
from eventbus.hookspecs import hookimpl
from eventbus.identity import AuthError, Identity
from eventbus.settings import Setting

from .jwks import JwksStrategy
from .sessions import PRIVILEGED_ROLES, SESSION_ACTIONS, SessionRules, parse_sessions, session_of
from .settings import SETTINGS, check_jwks_settings

if TYPE_CHECKING:
    from eventbus.config import Config

log = logging.getLogger("eventbus.auth")

ALGORITHM = "HS256"
LEEWAY_SECONDS = 10
DEFAULT_TTL = 24 * 3600
#: The refusal of an HS256 token whose signature does not match: almost always a token made
#: with another secret key (another data dir, or another EVENTBUS_SECRET_KEY).
SIGNED_WITH_ANOTHER_KEY = ("invalid token: signed with another key: is EVENTBUS_SECRET_KEY / "
                           "EVENTBUS_DATA_DIR the same where the token was made as on the server?")

Validator = Callable[[str], Any]

#: The roles the built-in rules give a meaning to: ``admin`` (everything), ``publisher``
#: (``POST /api/events``) and ``agent`` (any chat session; events on behalf of any user).
BUILTIN_ROLES = ("admin", "agent", "publisher")


def known_roles(config: Config) -> list[str]:
    """The built-in roles and those declared with ``EVENTBUS_ROLES``, sorted."""
    return sorted(set(BUILTIN_ROLES) | set(config.roles))


def _jwt() -> Any:
    try:
        import jwt
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise ConfigError("JWT tokens need PyJWT: pip install 'eventbus[auth]'") from None
    return jwt


def create_token(secret: str, user: str, roles: Iterable[str] = (), ttl: float = DEFAULT_TTL,
                 sessions: Iterable[str] | None = None) -> str:
    """A signed HS256 token for ``user`` with ``roles``, valid for ``ttl`` seconds. With
    ``sessions``, the token carries the ``sessions`` claim: its user may use exactly those
    chat sessions."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": str(user), "roles": list(roles), "iat": now, "exp": now + int(ttl)}
    if sessions is not None:
        claims["sessions"] = list(sessions)
    return _jwt().encode(claims, secret, algorithm=ALGORITHM)


def load_validator(spec: str) -> Validator:
    """Import ``package.module:callable``; any problem is a :class:`ConfigError`."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"EVENTBUS_AUTH_VALIDATOR: expected 'package.module:callable', got {spec!r}")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except Exception as exc:  # noqa: BLE001 - any import failure is a configuration error
        raise ConfigError(
            f"EVENTBUS_AUTH_VALIDATOR: cannot load {spec!r}: {type(exc).__name__}: {exc}") from None
    if not callable(target):
        raise ConfigError(f"EVENTBUS_AUTH_VALIDATOR: {spec!r} is not callable")
    return target


def looks_like_jwt(token: str) -> bool:
    """Three dot-separated base64url parts whose first decodes to a JSON header with ``alg``."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        return False
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (ValueError, binascii.Error, RecursionError):  # RecursionError: a deeply nested header
        return False
    return isinstance(header, dict) and "alg" in header


def _roles(value: Any, source: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset([value])
    if isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(r, str) for r in value):
        return frozenset(value)
    raise AuthError(f"{source}: 'roles' must be a list of strings", code="unauthorized")


def _token_of(auth: Mapping[str, Any]) -> str | None:
    token = auth.get("token")
    if not isinstance(token, str) or not token:
        return None
    return token.removeprefix("Bearer ").strip() or None


class AuthPlugin:
    """The three strategies and the default rules, bound to one bus's settings.

    The ``eventbus_auth`` module registers one shared instance; register your own
    ``AuthPlugin()`` when several buses with different settings live in one process.
    """

    def __init__(self) -> None:
        self.config: Config | None = None
        self.validator: Validator | None = None
        #: The private-session rules and their owners; ``None`` in ``open`` mode.
        self.sessions: SessionRules | None = None
        #: Identity-provider tokens (``EVENTBUS_JWKS_URL``); ``None`` when not configured.
        self.jwks: JwksStrategy | None = None

    @hookimpl
    def eventbus_declare_settings(self) -> tuple[Setting, ...]:
        return SETTINGS

    @hookimpl
    def eventbus_configure(self, config: Config) -> None:
        config.declare(SETTINGS)
        check_jwks_settings(config)
        self.config = config
        self.validator = load_validator(config.auth_validator) if config.auth_validator else None
        self.sessions = SessionRules.from_config(config)
        self.jwks = JwksStrategy.from_config(config, known_roles(config))

    @hookimpl(trylast=True)  # plugins' strategies first: see the hook's contract
    def eventbus_authenticate(self, auth: Mapping[str, Any], environ: Mapping[str, Any]) -> Identity | None:
        if self.config is None:
            return None
        api_key = auth.get("api_key")
        if api_key is not None:
            identity = self.check_api_key(api_key)
            if identity is None:
                raise AuthError("unknown API key", code="unauthorized")
            return identity
        token = _token_of(auth)
        if token is None:
            return None
        if self.jwks is not None:
            routed = self.jwks.route(token)
            if routed is not None:
                return self.jwks.authenticate(token, *routed)
        if self.validator is not None:
            identity = self.check_validator(token)
            if identity is not None:
                return identity
        if looks_like_jwt(token):
            return self.check_jwt(token)
        return self.check_api_key(token)

    def check_validator(self, token: str) -> Identity | None:
        try:
            claims = self.validator(token)  # type: ignore[misc]
        except AuthError:
            raise
        except Exception:  # the operator's code must not leak a traceback
            log.exception("auth validator %s failed", self.config.auth_validator if self.config else "?")
            raise AuthError("the authentication service failed", code="unauthorized") from None
        if claims is None or claims is False:
            return None
        if isinstance(claims, Identity):
            return claims
        if not isinstance(claims, Mapping):
            log.error("auth validator returned %s; expected a claims dict or None",
                      type(claims).__name__)
            raise AuthError("the authentication service failed", code="unauthorized")
        user = claims.get("sub", claims.get("user_id"))
        if user is None or user == "":
            raise AuthError("validator claims have neither 'sub' nor 'user_id'", code="unauthorized")
        parse_sessions(claims.get("sessions"), "validator")
        return Identity(str(user), _roles(claims.get("roles"), "validator"), dict(claims), "validator")

    def check_jwt(self, token: str) -> Identity:
        jwt = _jwt()
        secret = self.config.ensure_secret_key()  # type: ignore[union-attr]
        try:
            claims = jwt.decode(token, secret, algorithms=[ALGORITHM], leeway=LEEWAY_SECONDS,
                                options={"require": ["exp", "sub"]})
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired", code="token_expired") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"token has no {exc.claim!r} claim", code="unauthorized") from None
        except jwt.InvalidSignatureError:
            raise AuthError(SIGNED_WITH_ANOTHER_KEY, code="unauthorized") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}", code="unauthorized") from None
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise AuthError("token 'sub' must be a non-empty string", code="unauthorized")
        parse_sessions(claims.get("sessions"), "token")
        return Identity(claims["sub"], _roles(claims.get("roles"), "token"), claims, "jwt")

    def check_api_key(self, key: Any) -> Identity | None:
        if not isinstance(key, str) or self.config is None:
            return None
        candidate = key.encode("utf-8")
        found: tuple[str, tuple[str, ...]] | None = None
        # Compare against every key without stopping early, so timing says nothing.
        for known, owner in self.config.api_keys.items():
            if hmac.compare_digest(candidate, known.encode("utf-8")):
                found = owner
        if found is None:
            return None
        user, roles = found
        return Identity(user, frozenset(roles), {"sub": user, "roles": list(roles)}, "api_key")

    @hookimpl(trylast=True)
    def eventbus_authorize(self, identity: Identity, namespace: str, room: str | None,
                           action: str) -> bool:
        return default_authorize(identity, namespace, room, action, self.sessions)

    @hookimpl
    def eventbus_issue_token(self, user: str, roles: Iterable[str], ttl: float) -> str | None:
        """An HS256 token signed with ``EVENTBUS_SECRET_KEY`` or the key kept in the data dir
        (the key the JWT check verifies with); ``None`` before configuration or without PyJWT."""
        if self.config is None:
            return None
        try:
            return create_token(self.config.ensure_secret_key(), user, list(roles), ttl)
        except ConfigError as exc:
            log.warning("cannot issue a token: %s", exc)
            return None


def default_authorize(identity: Identity | None, namespace: str, room: str | None, action: str,
                      sessions: SessionRules | None = None) -> bool:
    """The built-in rules.

    - ``/admin`` and action ``admin`` need role ``admin``.
    - HTTP ``publish`` (``POST /api/events``) needs ``publisher`` or ``admin``.
    - ``act_as`` (an event whose ``user_id`` is another user's) needs ``admin`` or ``agent``.
    - ``join``, ``publish`` and ``history`` in a ``session:<id>`` room follow ``sessions``
      (:meth:`SessionRules.allows`); without ``sessions`` (``EVENTBUS_CHAT_SESSIONS=open``)
      any authenticated identity may.
    - Anything else is open to any authenticated identity.
    """
    if identity is None:
        return False
    if namespace == ADMIN_NAMESPACE or action == "admin":
        return identity.has_role("admin")
    if action == "publish" and namespace == "http":
        return identity.has_role("publisher", "admin")
    if action == "act_as":
        return identity.has_role(*PRIVILEGED_ROLES)
    session_id = session_of(room)
    if sessions is not None and session_id is not None and action in SESSION_ACTIONS:
        return sessions.allows(identity, session_id, action)
    return True
