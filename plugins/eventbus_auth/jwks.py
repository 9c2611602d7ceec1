"""Tokens from an existing identity provider (Auth0, Keycloak, Cognito, any OIDC provider),
verified against the public keys it publishes at a JWKS URL.

A token is this strategy's when its header's ``alg`` is one of ``EVENTBUS_JWT_ALGORITHMS``
and its ``iss`` (read without verification, only to choose the strategy) is exactly
``EVENTBUS_JWT_ISSUER``. Such a token is then accepted or refused here alone: its signature
(with the key its ``kid`` names), ``exp`` (required), ``nbf`` and ``iat`` (with
``EVENTBUS_JWT_LEEWAY``), ``iss`` and ``aud`` are checked, and the user and roles come from
the configured claims.

Keys (:class:`JwksKeys`) are fetched with PyJWT's :class:`~jwt.PyJWKClient` (no redirects,
http(s) only, a timeout) and kept for ``EVENTBUS_JWKS_CACHE_SECONDS``. A ``kid`` that is not
among them triggers one early refetch, at most one per :data:`REFETCH_INTERVAL` seconds
server-wide, so tokens with made-up ``kid`` values cannot make the server hammer the
identity provider. A failed fetch refuses the tokens that need it (``unauthorized``, "keys
unavailable") and is not retried for :data:`RETRY_AFTER_FAILURE` seconds; it is counted
and logged once per outage.

The fetch runs in the connecting client's handler: under gevent and eventlet (``eventbus
serve`` monkey-patches the standard library first) it yields to other clients while it
waits; in threading mode it holds only the threads of the connections that wait for the
keys, while the request lasts (:data:`FETCH_TIMEOUT` per wait).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from eventbus.config import ConfigError
from eventbus.identity import AuthError, Identity
from eventbus.redact import redact_url

from .sessions import parse_sessions
from .settings import check_jwks_settings

if TYPE_CHECKING:
    from jwt import PyJWK

    from eventbus.config import Config

log = logging.getLogger("eventbus.auth")

#: Seconds a JWKS request may wait for the connection and for each read.
FETCH_TIMEOUT = 5.0
#: Least seconds between two refetches asked for by an unknown ``kid``.
REFETCH_INTERVAL = 30.0
#: Seconds after a failed fetch during which tokens are refused without asking again.
RETRY_AFTER_FAILURE = 5.0
#: The oldest PyJWT whose PyJWKClient follows no redirect (a JWKS answer is the key set or nothing).
MIN_PYJWT = (2, 14)
#: Separators of a roles claim given as one string (``scope: "read write"``).
_ROLE_SEPARATORS = re.compile(r"[\s,]+")
_MISSING = object()


class KeysUnavailable(Exception):
    """The JWKS could not be fetched (down, timed out, not a key set)."""


class UnknownKey(Exception):
    """The JWKS has no signing key with the token's ``kid``."""


class JwksKeys:
    """The signing keys published at ``url``, by ``kid``.

    :param cache_seconds: how long a fetched key set is used before it is fetched again.
    :param timeout: seconds one request may take.
    :param refetch_interval: least seconds between two early refetches for unknown ``kid``s.
    :param retry_after_failure: seconds after a failed fetch during which no fetch is tried.
    :param clock: monotonic seconds (tests pass their own).

    ``counters``: ``fetches``, ``fetch_failures``, ``refetches`` (early, for an unknown
    ``kid``), ``refetches_limited`` (an unknown ``kid`` inside the interval), ``unknown_kid``,
    ``unavailable`` (lookups refused because the keys could not be had).
    """

    def __init__(self, url: str, cache_seconds: float = 300.0, *, timeout: float = FETCH_TIMEOUT,
                 refetch_interval: float = REFETCH_INTERVAL, retry_after_failure: float = RETRY_AFTER_FAILURE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        from jwt import PyJWKClient

        self.url = url
        # PyJWKClient fetches and parses; the cache policy is ours (see the module docstring).
        self.client = PyJWKClient(url, cache_jwk_set=False, cache_keys=False, timeout=timeout,
                                  headers={"User-Agent": "eventbus-jwks", "Accept": "application/json"})
        self.cache_seconds = cache_seconds
        self.refetch_interval = refetch_interval
        self.retry_after_failure = retry_after_failure
        self.clock = clock
        self.counters: Counter[str] = Counter()
        self._keys: dict[str, PyJWK] | None = None
        self._expires = 0.0
        self._last_refetch: float | None = None
        self._failed_at: float | None = None
        self._failures_in_outage = 0
        self._lock = threading.Lock()  # one fetch at a time; green under monkey-patching

    def get(self, kid: str) -> PyJWK:
        """The key for ``kid``. Raises :class:`UnknownKey` or :class:`KeysUnavailable`."""
        with self._lock:
            now = self.clock()
            fetched = False
            if self._keys is None or now >= self._expires:
                self._fetch(now)
                fetched = True
            key = self._keys.get(kid) if self._keys is not None else None
            if key is None and not fetched:
                if self._last_refetch is not None and now - self._last_refetch < self.refetch_interval:
                    self.counters["refetches_limited"] += 1
                else:
                    self._last_refetch = now
                    self.counters["refetches"] += 1
                    self._fetch(now)
                    key = self._keys.get(kid) if self._keys is not None else None
            if key is None:
                self.counters["unknown_kid"] += 1
                raise UnknownKey(kid)
            return key

    def _fetch(self, now: float) -> None:
        """Replace the key set, or raise :class:`KeysUnavailable` (the cached set stays
        usable until it expires)."""
        if self._failed_at is not None and now - self._failed_at < self.retry_after_failure:
            self.counters["unavailable"] += 1
            raise KeysUnavailable("the last fetch failed moments ago")
        self.counters["fetches"] += 1
        try:
            keys = self.client.get_signing_keys()
        except Exception as exc:  # noqa: BLE001 - any failure of the endpoint is an outage
            self._failed(now, exc)
        else:
            self._keys = {key.key_id: key for key in keys if key.key_id}
            self._expires = now + self.cache_seconds
            if self._failed_at is not None:
                log.info("JWKS %s answers again (after %d failed fetches)", redact_url(self.url),
                         self._failures_in_outage)
            self._failed_at = None
            self._failures_in_outage = 0

    def _failed(self, now: float, exc: BaseException) -> None:
        self.counters["fetch_failures"] += 1
        self.counters["unavailable"] += 1
        if self._failed_at is None:  # the first failure of an outage is logged, the rest counted
            log.warning("JWKS %s unavailable: %s; tokens that need its keys are refused until it answers",
                        redact_url(self.url), _reason(exc))
        self._failed_at = now
        self._failures_in_outage += 1
        raise KeysUnavailable(_reason(exc)) from None


def _version(text: str) -> tuple[int, ...]:
    """``"2.15.1"`` -> ``(2, 15)``; anything unparsable counts as new enough."""
    try:
        return tuple(int(part) for part in text.split(".")[:2])
    except ValueError:
        return (999,)


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    text = str(cause).splitlines()[0] if str(cause) else ""
    return f"{type(cause).__name__}: {text[:200]}" if text else type(cause).__name__


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The claim at ``path``: the literal key first (``https://example.com/roles``,
    ``cognito:groups``), else a dotted path into nested objects (``realm_access.roles``,
    ``resource_access.my-app.roles``), where each step may itself hold dots
    (``https://example.com/claims.roles``). ``None`` when absent."""
    found = _walk(claims, path.split("."))
    return None if found is _MISSING else found


def _walk(node: Any, parts: list[str]) -> Any:
    if not parts:
        return node
    if not isinstance(node, Mapping):
        return _MISSING
    for cut in range(len(parts), 0, -1):  # the longest key first
        key = ".".join(parts[:cut])
        if key in node:
            found = _walk(node[key], parts[cut:])
            if found is not _MISSING:
                return found
    return _MISSING


def roles_from(value: Any, path: str) -> list[str]:
    """A roles claim: a list of strings, or one string of names separated by spaces or commas
    (``scope``). Anything else is an :class:`AuthError`."""
    if value is None:
        return []
    if isinstance(value, str):
        return [role for role in _ROLE_SEPARATORS.split(value) if role]
    if isinstance(value, (list, tuple)) and all(isinstance(role, str) for role in value):
        return [role for role in value if role]
    raise AuthError(f"token claim {path!r} must be a list of strings or a space-separated string",
                    code="unauthorized")


class JwksStrategy:
    """Verifies identity-provider tokens with the settings of one :class:`Config`.

    :param keys: the key source (default: :class:`JwksKeys` for ``config.jwks_url``).
    :param known_roles: the roles the role map may give (typos stop start-up).
    """

    def __init__(self, config: Config, known_roles: Iterable[str] = (), keys: JwksKeys | None = None) -> None:
        check_jwks_settings(config)
        if not config.jwks_url:
            raise ConfigError("EVENTBUS_JWKS_URL: not set")
        import jwt
        from jwt.algorithms import has_crypto

        if not has_crypto:
            raise ConfigError("EVENTBUS_JWKS_URL: verifying RS256/ES256 tokens needs cryptography: "
                              "pip install 'eventbus[auth]'")
        if _version(jwt.__version__) < MIN_PYJWT:
            raise ConfigError(f"EVENTBUS_JWKS_URL: needs PyJWT >= {'.'.join(map(str, MIN_PYJWT))} (older "
                              f"versions follow redirects when fetching keys), found {jwt.__version__}: "
                              "pip install 'eventbus[auth]'")
        known = set(known_roles)
        for source, targets in config.jwt_role_map.items():
            unknown = [role for role in targets if known and role not in known]
            if unknown:
                raise ConfigError(f"EVENTBUS_JWT_ROLE_MAP: {source}={unknown[0]}: unknown role {unknown[0]!r}; "
                                  f"known roles: {', '.join(sorted(known))} (declare more with EVENTBUS_ROLES)")
        self.issuer: str = config.jwt_issuer or ""
        self.audience: list[str] | None = None if config.jwt_audience == ["*"] else list(config.jwt_audience)
        self.algorithms = list(config.jwt_algorithms)
        self.user_claim = config.jwt_user_claim
        self.roles_claims = list(config.jwt_roles_claim)
        self.role_map = {source: list(targets) for source, targets in config.jwt_role_map.items()}
        self.leeway = config.jwt_leeway
        self.keys = keys or JwksKeys(config.jwks_url, config.jwks_cache_seconds)

    @classmethod
    def from_config(cls, config: Config, known_roles: Iterable[str] = ()) -> JwksStrategy | None:
        """The strategy, or ``None`` when ``EVENTBUS_JWKS_URL`` is not set."""
        if not config.jwks_url:
            check_jwks_settings(config)
            return None
        strategy = cls(config, known_roles)
        log.info("tokens from %s are verified against %s (%s; audience %s)", strategy.issuer,
                 redact_url(config.jwks_url), ",".join(strategy.algorithms),
                 "any" if strategy.audience is None else ",".join(strategy.audience))
        return strategy

    def route(self, token: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """``(header, unverified claims)`` when ``token`` is this strategy's (see the module
        docstring), else ``None``. Nothing read here is trusted: it only picks the strategy."""
        if token.count(".") != 2:
            return None
        import jwt

        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") not in self.algorithms:
                return None
            claims = jwt.decode(token, options={"verify_signature": False})
        except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
            return None
        if not isinstance(claims, dict) or claims.get("iss") != self.issuer:
            return None
        return header, claims

    def authenticate(self, token: str, header: Mapping[str, Any], unverified: Mapping[str, Any]) -> Identity:
        """The identity of a routed token, or :class:`AuthError` (``token_expired`` for an
        expired token, ``unauthorized`` for everything else)."""
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError(f"a token from {self.issuer} needs a 'kid' header naming its signing key",
                            code="unauthorized")
        try:
            key = self.keys.get(kid)
        except KeysUnavailable:
            raise AuthError("the identity provider's signing keys are unavailable right now; try again shortly",
                            code="unauthorized") from None
        except UnknownKey:
            raise AuthError("the token's signing key (kid) is not among the identity provider's keys",
                            code="unauthorized") from None
        claims = self._verified(token, key, "aud" in unverified)
        return Identity(self._user(claims), frozenset(self._roles(claims)), dict(claims), "jwks")

    def _verified(self, token: str, key: PyJWK, has_aud: bool) -> dict[str, Any]:
        import jwt

        check_aud = self.audience is not None and has_aud
        try:
            claims = jwt.decode(token, key, algorithms=self.algorithms, issuer=self.issuer,
                                audience=self.audience if check_aud else None, leeway=self.leeway,
                                options={"require": ["exp", "iss"], "verify_aud": check_aud})
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired", code="token_expired") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"token has no {exc.claim!r} claim", code="unauthorized") from None
        except jwt.InvalidAudienceError:
            raise AuthError("token audience is not accepted (EVENTBUS_JWT_AUDIENCE)", code="unauthorized") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}", code="unauthorized") from None
        if self.audience is not None and not has_aud:
            # Cognito access tokens name their app client in `client_id` instead of `aud`.
            if claims.get("client_id") not in self.audience:
                raise AuthError("token has no 'aud' claim (nor a 'client_id' of an accepted audience)",
                                code="unauthorized")
        parse_sessions(claims.get("sessions"), "token")
        return claims

    def _user(self, claims: Mapping[str, Any]) -> str:
        user = claim_at(claims, self.user_claim)
        if isinstance(user, int) and not isinstance(user, bool):
            user = str(user)
        if not isinstance(user, str) or not user:
            raise AuthError(f"token claim {self.user_claim!r} (EVENTBUS_JWT_USER_CLAIM) must be a non-empty string",
                            code="unauthorized")
        return user

    def _roles(self, claims: Mapping[str, Any]) -> set[str]:
        """The roles of every configured claim; with a role map, only the roles it maps."""
        found: list[str] = []
        for path in self.roles_claims:
            found += roles_from(claim_at(claims, path), path)
        if not self.role_map:
            return set(found)
        return {target for role in found for target in self.role_map.get(role, ())}


__all__ = ["FETCH_TIMEOUT", "REFETCH_INTERVAL", "RETRY_AFTER_FAILURE", "JwksKeys", "JwksStrategy",
           "KeysUnavailable", "UnknownKey", "claim_at", "roles_from"]
