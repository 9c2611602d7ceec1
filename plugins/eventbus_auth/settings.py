"""The auth plugin's settings: declared here, validated by the core with every other
setting when the plugins are loaded (a bad value stops start-up naming its variable)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from eventbus.config import CHAT_SESSION_POLICIES
from eventbus.settings import ConfigError, Setting, choice, number, optional_text, text_list

if TYPE_CHECKING:
    from eventbus.config import Config


ROLE_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def parse_roles(name: str, value: Any) -> list[str]:
    """Role names, comma-separated: letters, digits and ``_.:-``."""
    roles = text_list(name, value)
    for role in roles:
        if not ROLE_NAME.fullmatch(role):
            raise ConfigError(f"{name}: expected role names of letters, digits and _.:- "
                              f"(comma-separated), got {role!r}")
    return roles


JWKS_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def parse_jwks_url(name: str, value: Any) -> str:
    """An ``https://`` URL; ``http://`` only for ``localhost``, ``127.0.0.1`` or ``::1``."""
    from eventbus.redact import redact_url

    url = str(value).strip()
    try:
        parts = urlsplit(url)
        scheme, host, _ = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError:  # a bad port or bracketed host
        scheme, host = "", None
    if host and (scheme == "https" or (scheme == "http" and host in LOOPBACK_HOSTS)):
        return url
    raise ConfigError(f"{name}: expected an https:// URL (http:// only for localhost, 127.0.0.1 "
                      f"or ::1), got {redact_url(url)!r}")


def parse_jwt_algorithms(name: str, value: Any) -> list[str]:
    """Comma-separated public-key algorithms (:data:`JWKS_ALGORITHMS`); HS* and ``none``
    are refused: a token from an identity provider is signed with its private key."""
    algorithms = text_list(name, value)
    if not algorithms:
        raise ConfigError(f"{name}: expected at least one of {', '.join(JWKS_ALGORITHMS)}")
    for alg in algorithms:
        if alg.upper().startswith("HS") or alg.lower() == "none":
            raise ConfigError(f"{name}: {alg!r} is refused: identity-provider tokens must use a "
                              f"public-key algorithm ({', '.join(JWKS_ALGORITHMS)}); with HS* or "
                              "none anyone who knows the published key could sign tokens")
        if alg not in JWKS_ALGORITHMS:
            raise ConfigError(f"{name}: unknown algorithm {alg!r}; expected some of "
                              f"{', '.join(JWKS_ALGORITHMS)}")
    return algorithms


def parse_claim_path(name: str, value: Any) -> str:
    """A claim name or dotted path (``sub``, ``realm_access.roles``,
    ``https://example.com/roles``), 1 to 200 characters."""
    path = str(value).strip()
    if not path or len(path) > 200:
        raise ConfigError(f"{name}: expected a claim name or dotted path (1 to 200 characters), got {path!r}")
    return path


def parse_role_map(name: str, value: Any) -> dict[str, list[str]]:
    """``IDP_ROLE=ROLE[+ROLE]``, comma-separated (or a TOML table ``{idp_role = "role"}``):
    which eventbus roles each identity-provider role gives."""
    pairs: list[tuple[str, str]] = []
    if isinstance(value, Mapping):
        for source, target in value.items():
            for role in [target] if isinstance(target, str) else list(target):
                pairs.append((str(source), str(role)))
    else:
        for item in text_list(name, value):
            source, sep, target = item.rpartition("=")
            if not sep or not source.strip() or not target.strip():
                raise ConfigError(f"{name}: expected IDP_ROLE=ROLE pairs, comma-separated "
                                  f"(e.g. eventbus-admin=admin,writer=publisher), got {item!r}")
            pairs += [(source, role) for role in target.split("+")]
    out: dict[str, list[str]] = {}
    for source, role in pairs:
        role = role.strip()
        if not ROLE_NAME.fullmatch(role):
            raise ConfigError(f"{name}: expected eventbus role names of letters, digits and _.:-, got {role!r}")
        roles = out.setdefault(source.strip(), [])
        if role not in roles:
            roles.append(role)
    return out


def check_jwks_settings(cfg: Config) -> None:
    """With ``EVENTBUS_JWKS_URL``, an issuer and an audience are required and only public-key
    algorithms are accepted; without it, an issuer or audience is a mistake (it would do
    nothing). Raises :class:`ConfigError` naming the variable."""
    if not cfg.jwks_url:
        for attr, var in (("jwt_issuer", "EVENTBUS_JWT_ISSUER"), ("jwt_audience", "EVENTBUS_JWT_AUDIENCE")):
            if getattr(cfg, attr):
                raise ConfigError(f"{var}: set EVENTBUS_JWKS_URL too (the identity provider's keys); "
                                  "without it no token is checked against this setting")
        return
    parse_jwks_url("EVENTBUS_JWKS_URL", cfg.jwks_url)
    parse_jwt_algorithms("EVENTBUS_JWT_ALGORITHMS", cfg.jwt_algorithms)
    if not cfg.jwt_issuer:
        raise ConfigError("EVENTBUS_JWT_ISSUER: required with EVENTBUS_JWKS_URL: the exact 'iss' of "
                          "your identity provider's tokens, e.g. https://YOUR_TENANT.auth0.com/")
    if not cfg.jwt_audience:
        raise ConfigError("EVENTBUS_JWT_AUDIENCE: required with EVENTBUS_JWKS_URL: the audiences "
                          "(API identifier, client id) your tokens are issued for, comma-separated; "
                          "'*' accepts any audience of the issuer")
    if "*" in cfg.jwt_audience and len(cfg.jwt_audience) > 1:
        raise ConfigError("EVENTBUS_JWT_AUDIENCE: '*' (any audience) cannot be combined with audiences")


def parse_api_keys(name: str, value: Any) -> dict[str, tuple[str, tuple[str, ...]]]:
    """``KEY=USER:ROLE+ROLE`` entries, comma-separated (or a TOML table list)."""
    keys: dict[str, tuple[str, tuple[str, ...]]] = {}
    entries: list[tuple[str, str, list[Any]]]
    if isinstance(value, list) and all(isinstance(v, Mapping) for v in value):
        entries = [(str(v.get("key", "")), str(v.get("user", "")), list(v.get("roles", [])))
                   for v in value]
    else:
        entries = []
        for item in text_list(name, value):
            key, sep, rest = item.partition("=")
            user, _, role_text = rest.partition(":")
            if not sep:
                raise ConfigError(
                    f"{name}: expected KEY=USER[:ROLE+ROLE], comma-separated; "
                    "an entry has no '=' (its text is not shown: it may be a key)"
                )
            entries.append((key, user, [r for r in role_text.split("+") if r]))
    for key, user, roles in entries:
        if len(key) < 16:
            raise ConfigError(f"{name}: every API key needs at least 16 characters")
        if not user:
            raise ConfigError(f"{name}: every API key needs a user (KEY=USER[:ROLE+ROLE])")
        keys[key] = (user, tuple(roles or ["publisher"]))
    return keys


def claim_paths(name: str, value: Any) -> list[str]:
    return [parse_claim_path(name, path) for path in text_list(name, value)]


#: The auth plugin's settings (docs/security.md).
SETTINGS = (
    Setting("api_keys", "EVENTBUS_API_KEYS", {}, parse_api_keys,
            "KEY=USER:ROLE+ROLE,... service keys (16+ characters each)", secret=True),
    Setting("auth_validator", "EVENTBUS_AUTH_VALIDATOR", None, optional_text,
            "package.module:callable that turns a token into claims (your existing auth)"),
    Setting("roles", "EVENTBUS_ROLES", [], parse_roles, "roles beyond admin, agent and publisher"),
    Setting("chat_sessions", "EVENTBUS_CHAT_SESSIONS", "private", choice(*CHAT_SESSION_POLICIES),
            "private: a chat session belongs to its users; open: any signed-in user may join"),
    Setting("jwks_url", "EVENTBUS_JWKS_URL", None, parse_jwks_url,
            "your identity provider's JWKS (https); unset: no identity-provider tokens"),
    Setting("jwt_issuer", "EVENTBUS_JWT_ISSUER", None, optional_text, "the exact 'iss' of its tokens"),
    Setting("jwt_audience", "EVENTBUS_JWT_AUDIENCE", [], text_list, "accepted audiences, comma-separated; '*': any"),
    Setting("jwt_algorithms", "EVENTBUS_JWT_ALGORITHMS", ["RS256", "ES256"], parse_jwt_algorithms,
            "accepted signature algorithms (public-key ones only)"),
    Setting("jwt_user_claim", "EVENTBUS_JWT_USER_CLAIM", "sub", parse_claim_path, "claim path of the user id"),
    Setting("jwt_roles_claim", "EVENTBUS_JWT_ROLES_CLAIM", ["roles"], claim_paths,
            "claim paths whose roles are united"),
    Setting("jwt_role_map", "EVENTBUS_JWT_ROLE_MAP", {}, parse_role_map,
            "IDP_ROLE=ROLE[+ROLE],...: identity-provider roles to eventbus roles"),
    Setting("jwks_cache_seconds", "EVENTBUS_JWKS_CACHE_SECONDS", 300.0, number(1), "how long keys are cached"),
    Setting("jwt_leeway", "EVENTBUS_JWT_LEEWAY", 10.0, number(0), "seconds of clock skew allowed"),
)
