"""Settings from environment variables and an optional ``eventbus.toml``, validated once.

A bad value stops start-up with :class:`ConfigError`, whose message names the variable and
what it expects. Environment variables win over the file.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs

from .events import DEFAULT_MAX_EVENT_BYTES, EventBusError

ASYNC_MODES = ("threading", "gevent", "eventlet")
OVERFLOW_POLICIES = ("drop_oldest", "drop_newest")
FLUSH_POLICIES = ("line", "batch", "os")
CHAT_SESSION_POLICIES = ("private", "open")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(EventBusError):
    code = "config_error"


def default_data_dir() -> str:
    """The data dir when ``EVENTBUS_DATA_DIR`` is unset: one per user, in the platform's
    user-data folder (``$XDG_DATA_HOME/eventbus``, by default ``~/.local/share/eventbus``, on
    Linux; ``~/Library/Application Support/eventbus`` on macOS; ``%LOCALAPPDATA%\\eventbus``
    on Windows), so every process of the user, started from any folder, finds the same
    generated secret key and webhook outbox."""
    return platformdirs.user_data_dir("eventbus", appauthor=False)


def _parse_bool(name: str, value: str) -> bool:
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{name}: expected true or false, got {value!r}")


def _parse_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        number = None
    if number is None or number < lo or (hi is not None and number > hi):
        limit = f"{lo}-{hi}" if hi is not None else f">= {lo}"
        raise ConfigError(f"{name}: expected an integer {limit}, got {value!r}")
    return number


def _parse_float(name: str, value: Any, lo: float) -> float:
    try:
        number = float(str(value).strip())
    except ValueError:
        number = None
    if number is None or number < lo:
        raise ConfigError(f"{name}: expected a number >= {lo}, got {value!r}")
    return number


def _parse_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    text = str(value).strip().lower()
    if text not in choices:
        raise ConfigError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
    return text


def _parse_secret(name: str, value: Any) -> str:
    text = str(value)
    if len(text) < 32:
        raise ConfigError(f"{name}: expected at least 32 characters (HS256 needs a 256-bit key), "
                          f"got {len(text)}; or unset it to have one generated")
    return text


def _parse_list(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [part.strip() for part in str(value).split(",") if part.strip()]


_ROLE_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def _parse_roles(name: str, value: Any) -> list[str]:
    """Role names, comma-separated: letters, digits and ``_.:-``."""
    roles = _parse_list(value)
    for role in roles:
        if not _ROLE_NAME.fullmatch(role):
            raise ConfigError(f"{name}: expected role names of letters, digits and _.:- "
                              f"(comma-separated), got {role!r}")
    return roles


def _parse_proxies(name: str, value: Any) -> list[str]:
    """Addresses or CIDR networks, comma-separated (``10.0.0.0/8,127.0.0.1``)."""
    import ipaddress

    out = []
    for item in _parse_list(value):
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError(f"{name}: expected IP addresses or CIDR networks, got {item!r}") from None
        out.append(item)
    return out


#: Signature algorithms a JWKS token may use: public-key ones only (never HS*, never none).
JWKS_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def _parse_jwks_url(name: str, value: Any) -> str:
    """An ``https://`` URL; ``http://`` only for ``localhost``, ``127.0.0.1`` or ``::1``."""
    from .redact import redact_url

    url = str(value).strip()
    try:
        parts = urlsplit(url)
        scheme, host, _ = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError:  # a bad port or bracketed host
        scheme, host = "", None
    if host and (scheme == "https" or (scheme == "http" and host in _LOOPBACK_HOSTS)):
        return url
    raise ConfigError(f"{name}: expected an https:// URL (http:// only for localhost, 127.0.0.1 "
                      f"or ::1), got {redact_url(url)!r}")


def _parse_server_url(name: str, value: Any) -> str:
    """An ``http://`` or ``https://`` URL with a host (a path prefix is kept, a trailing
    ``/`` removed)."""
    from .redact import redact_url

    url = str(value).strip().rstrip("/")
    try:
        parts = urlsplit(url)
        scheme, host, _ = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError:
        scheme, host = "", None
    if scheme in ("http", "https") and host:
        return url
    raise ConfigError(f"{name}: expected the server's URL, like http://127.0.0.1:5050, got {redact_url(url)!r}")


def _parse_jwt_algorithms(name: str, value: Any) -> list[str]:
    """Comma-separated public-key algorithms (:data:`JWKS_ALGORITHMS`); HS* and ``none``
    are refused: a token from an identity provider is signed with its private key."""
    algorithms = _parse_list(value)
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


def _parse_claim_path(name: str, value: Any) -> str:
    """A claim name or dotted path (``sub``, ``realm_access.roles``,
    ``https://example.com/roles``), 1 to 200 characters."""
    path = str(value).strip()
    if not path or len(path) > 200:
        raise ConfigError(f"{name}: expected a claim name or dotted path (1 to 200 characters), got {path!r}")
    return path


def _parse_role_map(name: str, value: Any) -> dict[str, list[str]]:
    """``IDP_ROLE=ROLE[+ROLE]``, comma-separated (or a TOML table ``{idp_role = "role"}``):
    which eventbus roles each identity-provider role gives."""
    pairs: list[tuple[str, str]] = []
    if isinstance(value, Mapping):
        for source, target in value.items():
            for role in [target] if isinstance(target, str) else list(target):
                pairs.append((str(source), str(role)))
    else:
        for item in _parse_list(value):
            source, sep, target = item.rpartition("=")
            if not sep or not source.strip() or not target.strip():
                raise ConfigError(f"{name}: expected IDP_ROLE=ROLE pairs, comma-separated "
                                  f"(e.g. eventbus-admin=admin,writer=publisher), got {item!r}")
            pairs += [(source, role) for role in target.split("+")]
    out: dict[str, list[str]] = {}
    for source, role in pairs:
        role = role.strip()
        if not _ROLE_NAME.fullmatch(role):
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
    _parse_jwks_url("EVENTBUS_JWKS_URL", cfg.jwks_url)
    _parse_jwt_algorithms("EVENTBUS_JWT_ALGORITHMS", cfg.jwt_algorithms)
    if not cfg.jwt_issuer:
        raise ConfigError("EVENTBUS_JWT_ISSUER: required with EVENTBUS_JWKS_URL: the exact 'iss' of "
                          "your identity provider's tokens, e.g. https://YOUR_TENANT.auth0.com/")
    if not cfg.jwt_audience:
        raise ConfigError("EVENTBUS_JWT_AUDIENCE: required with EVENTBUS_JWKS_URL: the audiences "
                          "(API identifier, client id) your tokens are issued for, comma-separated; "
                          "'*' accepts any audience of the issuer")
    if "*" in cfg.jwt_audience and len(cfg.jwt_audience) > 1:
        raise ConfigError("EVENTBUS_JWT_AUDIENCE: '*' (any audience) cannot be combined with audiences")


def _parse_api_keys(name: str, value: Any) -> dict[str, tuple[str, tuple[str, ...]]]:
    """``KEY=USER:ROLE+ROLE`` entries, comma-separated (or a TOML table list)."""
    keys: dict[str, tuple[str, tuple[str, ...]]] = {}
    entries: list[tuple[str, str, list[Any]]]
    if isinstance(value, list) and all(isinstance(v, Mapping) for v in value):
        entries = [(str(v.get("key", "")), str(v.get("user", "")), list(v.get("roles", [])))
                   for v in value]
    else:
        entries = []
        for item in _parse_list(value):
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


@dataclass
class Config:
    """Validated settings. Build with :meth:`from_env`; tests may construct it directly."""

    secret_key: str | None = None
    host: str = "127.0.0.1"
    port: int = 5050
    websocket_enabled: bool = True
    cors_origins: list[str] = field(default_factory=list)  # empty: same origin only
    allow_any_origin: bool = False
    async_mode: str = "threading"
    redis_url: str | None = None
    redis_prefix: str = "{eventbus}"  # key prefix: several deployments can share one Redis
    redis_claim_idle: float = 5.0  # seconds: a dead server's ingest partitions move on within it
    redis_buffer: int = 10000  # events held per process while Redis is away
    redis_fanout_maxlen: int = 100000
    redis_ingest_maxlen: int = 100000
    history_size: int = 1000
    history_max_age: float = 3600.0
    load_plugins: list[str] | None = None  # None: every installed plugin
    disable_plugins: list[str] = field(default_factory=list)
    auth_validator: str | None = None
    api_keys: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    log_sink_path: str | None = None
    log_sink_max_bytes: int = 10 * 1024 * 1024
    log_sink_backups: int = 5
    log_sink_flush: str = "batch"
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    data_dir: str = field(default_factory=default_data_dir)  # EVENTBUS_DATA_DIR; one per user
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    queue_size: int = 10000
    overflow: str = "drop_oldest"
    chat_max_length: int = 4000
    client_rate: float = 20.0  # client events per second per connection
    client_burst: int = 40
    typing_interval: float = 1.0  # at most one typing_indicator per user and room per interval
    batch_window_ms: float = 0.0  # > 0: clients that ask for batches get `events` packets
    # -- limits on what one client may hold (docs/security.md) --
    max_json_depth: int = 32  # nesting of objects and lists in any client JSON
    max_rooms_per_connection: int = 100
    max_resume_rooms: int = 100  # rooms in one resume (each also costs a rate-limit token)
    max_connections_per_user: int = 50  # across namespaces, per server process
    max_pending_sessions: int = 1000  # Engine.IO sessions not yet signed in to a namespace
    history_max_rooms: int = 10000  # rooms with retained events; idle rooms go first
    history_max_events: int = 200000  # retained events across all rooms
    chat_sessions: str = "private"  # "private": a session belongs to its users; "open": any user
    roles: list[str] = field(default_factory=list)  # roles beyond admin, agent, publisher
    trusted_proxies: list[str] = field(default_factory=list)  # addresses/CIDRs whose X-Forwarded-* count
    health_degraded_status: int = 503  # /api/health status while the backend is away or buffering
    # -- tokens from an identity provider, verified against its JWKS (docs/security.md) --
    jwks_url: str | None = None  # https (http only for localhost); None: strategy off
    jwt_issuer: str | None = None  # exact `iss`; required with jwks_url
    jwt_audience: list[str] = field(default_factory=list)  # required with jwks_url; ["*"]: any
    jwt_algorithms: list[str] = field(default_factory=lambda: ["RS256", "ES256"])  # asymmetric only
    jwt_user_claim: str = "sub"  # claim path of the user id
    jwt_roles_claim: list[str] = field(default_factory=lambda: ["roles"])  # claim paths, roles united
    jwt_role_map: dict[str, list[str]] = field(default_factory=dict)  # IdP role -> eventbus roles
    jwks_cache_seconds: float = 300.0
    jwt_leeway: float = 10.0  # seconds of clock skew allowed for exp, nbf, iat
    # -- agents in other processes (eventbus/forwarder.py) and the publish API --
    url: str | None = None  # EVENTBUS_URL: the server; None: the server file, then EVENTBUS_PORT
    forward: bool = False  # a bus that does not serve forwards to the server; from_env: true
    forward_buffer: int = 10000  # events a forwarding bus keeps while the server is away
    publish_max_batch: int = 1000  # events in one POST /api/events batch
    publish_max_batch_bytes: int = 4 * 1024 * 1024  # body of one batch
    publish_dedupe_size: int = 100000  # publisher event ids remembered (10 min), memory history
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Attributes :meth:`from_env` took from the environment or the file (the rest are defaults).
    configured: set[str] = field(default_factory=set, repr=False, compare=False)

    def plugin_settings(self, name: str) -> dict[str, Any]:
        """The ``[plugins.<name>]`` table of ``eventbus.toml`` (empty when absent)."""
        return dict(self.plugins.get(name, {}))

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    def ensure_data_dir(self) -> Path:
        """The data dir, created with mode 0700 when missing; an existing one that other
        users can read is tightened (with a warning in the log). Call it before writing
        anything into the data dir."""
        from .files import private_dir

        return private_dir(self.data_path)

    def ensure_secret_key(self) -> str:
        """``EVENTBUS_SECRET_KEY`` if set, else the key kept in the data dir (created with
        mode 0600 on first use, an existing file made 0600), so the server and ``eventbus
        token create`` agree."""
        from .files import open_private

        if self.secret_key:
            return self.secret_key
        path = self.ensure_data_dir() / "secret_key"
        try:
            with open_private(path, "r") as fh:
                self.secret_key = fh.read().strip() or None
        except FileNotFoundError:
            pass
        if not self.secret_key:
            key = secrets.token_urlsafe(48)
            try:
                with open_private(path, "x") as fh:
                    fh.write(key + "\n")
            except FileExistsError:  # another process wrote it first: use theirs
                with open_private(path, "r") as fh:
                    key = fh.read().strip() or key
            self.secret_key = key
        return self.secret_key

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None,
                 toml_path: str | os.PathLike[str] | None = None) -> Config:
        """Read settings; ``EVENTBUS_CONFIG`` names the TOML file (default ``./eventbus.toml``
        when present)."""
        env = dict(os.environ if environ is None else environ)
        file_values: dict[str, Any] = {}
        plugins: dict[str, dict[str, Any]] = {}
        path = toml_path or env.get("EVENTBUS_CONFIG") or "eventbus.toml"
        if Path(path).is_file():
            try:
                with open(path, "rb") as fh:
                    doc = tomllib.load(fh)
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"{path}: cannot read configuration: {exc}") from None
            plugins = doc.pop("plugins", {}) or {}
            for key, value in doc.items():
                file_values[key.upper()] = value
        elif toml_path or env.get("EVENTBUS_CONFIG"):
            raise ConfigError(f"EVENTBUS_CONFIG: file not found: {path}")

        def lookup(*names: str) -> Any:
            for name in names:
                if name in env and env[name] != "":
                    return env[name]
            for name in names:
                short = name.removeprefix("EVENTBUS_").removeprefix("WEBSOCKET_")
                for candidate in (name, short):
                    if candidate in file_values:
                        return file_values[candidate]
            return None

        cfg = cls(env=env, plugins=plugins)

        def setv(attr: str, names: tuple[str, ...], parse: Callable[[str, Any], Any]) -> None:
            raw = lookup(*names)
            if raw is not None:
                setattr(cfg, attr, parse(names[0], raw))
                cfg.configured.add(attr)

        ident = lambda n, v: str(v)  # noqa: E731
        setv("secret_key", ("EVENTBUS_SECRET_KEY",), _parse_secret)
        setv("host", ("EVENTBUS_HOST",), ident)
        setv("port", ("EVENTBUS_PORT",), lambda n, v: _parse_int(n, v, 0, 65535))
        setv("websocket_enabled", ("WEBSOCKET_ENABLED",),
             lambda n, v: v if isinstance(v, bool) else _parse_bool(n, v))
        setv("allow_any_origin", ("EVENTBUS_ALLOW_ANY_ORIGIN",),
             lambda n, v: v if isinstance(v, bool) else _parse_bool(n, v))
        setv("cors_origins", ("WEBSOCKET_CORS_ORIGINS",), lambda n, v: _parse_list(v))
        setv("async_mode", ("WEBSOCKET_ASYNC_MODE",),
             lambda n, v: _parse_choice(n, v, ASYNC_MODES))
        setv("redis_url", ("EVENTBUS_REDIS_URL",), ident)
        setv("redis_prefix", ("EVENTBUS_REDIS_PREFIX",), lambda n, v: str(v).strip() or "{eventbus}")
        setv("redis_claim_idle", ("EVENTBUS_REDIS_CLAIM_IDLE",), lambda n, v: _parse_float(n, v, 0.3))
        setv("redis_buffer", ("EVENTBUS_REDIS_BUFFER",), lambda n, v: _parse_int(n, v, 1))
        setv("redis_fanout_maxlen", ("EVENTBUS_REDIS_FANOUT_MAXLEN",), lambda n, v: _parse_int(n, v, 100))
        setv("redis_ingest_maxlen", ("EVENTBUS_REDIS_INGEST_MAXLEN",), lambda n, v: _parse_int(n, v, 100))
        setv("history_size", ("EVENTBUS_HISTORY_SIZE",), lambda n, v: _parse_int(n, v, 1))
        setv("history_max_age", ("EVENTBUS_HISTORY_MAX_AGE",), lambda n, v: _parse_float(n, v, 1))
        setv("disable_plugins", ("EVENTBUS_DISABLE_PLUGINS",), lambda n, v: _parse_list(v))
        setv("auth_validator", ("EVENTBUS_AUTH_VALIDATOR",), ident)
        setv("api_keys", ("EVENTBUS_API_KEYS",), _parse_api_keys)
        setv("log_sink_path", ("EVENTBUS_LOG_SINK_PATH",), ident)
        setv("log_sink_max_bytes", ("EVENTBUS_LOG_SINK_MAX_BYTES",), lambda n, v: _parse_int(n, v, 1024))
        setv("log_sink_backups", ("EVENTBUS_LOG_SINK_BACKUPS",), lambda n, v: _parse_int(n, v, 0, 1000))
        setv("log_sink_flush", ("EVENTBUS_LOG_SINK_FLUSH",),
             lambda n, v: _parse_choice(n, v, FLUSH_POLICIES))
        setv("data_dir", ("EVENTBUS_DATA_DIR",), lambda n, v: os.path.expanduser(str(v)))
        setv("max_event_bytes", ("EVENTBUS_MAX_EVENT_BYTES",), lambda n, v: _parse_int(n, v, 256))
        setv("queue_size", ("EVENTBUS_QUEUE_SIZE",), lambda n, v: _parse_int(n, v, 1))
        setv("overflow", ("EVENTBUS_QUEUE_OVERFLOW",), lambda n, v: _parse_choice(n, v, OVERFLOW_POLICIES))
        setv("chat_max_length", ("EVENTBUS_CHAT_MAX_LENGTH",), lambda n, v: _parse_int(n, v, 1))
        setv("client_rate", ("EVENTBUS_CLIENT_RATE",), lambda n, v: _parse_float(n, v, 0.1))
        setv("client_burst", ("EVENTBUS_CLIENT_BURST",), lambda n, v: _parse_int(n, v, 1))
        setv("typing_interval", ("EVENTBUS_TYPING_INTERVAL",), lambda n, v: _parse_float(n, v, 0))
        setv("batch_window_ms", ("EVENTBUS_BATCH_WINDOW_MS",), lambda n, v: _parse_float(n, v, 0))
        setv("max_json_depth", ("EVENTBUS_MAX_JSON_DEPTH",), lambda n, v: _parse_int(n, v, 2, 500))
        setv("max_rooms_per_connection", ("EVENTBUS_MAX_ROOMS_PER_CONNECTION",),
             lambda n, v: _parse_int(n, v, 1))
        setv("max_resume_rooms", ("EVENTBUS_MAX_RESUME_ROOMS",), lambda n, v: _parse_int(n, v, 1))
        setv("max_connections_per_user", ("EVENTBUS_MAX_CONNECTIONS_PER_USER",),
             lambda n, v: _parse_int(n, v, 1))
        setv("max_pending_sessions", ("EVENTBUS_MAX_PENDING_SESSIONS",), lambda n, v: _parse_int(n, v, 1))
        setv("history_max_rooms", ("EVENTBUS_HISTORY_MAX_ROOMS",), lambda n, v: _parse_int(n, v, 1))
        setv("history_max_events", ("EVENTBUS_HISTORY_MAX_EVENTS",), lambda n, v: _parse_int(n, v, 1))
        setv("chat_sessions", ("EVENTBUS_CHAT_SESSIONS",),
             lambda n, v: _parse_choice(n, v, CHAT_SESSION_POLICIES))
        setv("roles", ("EVENTBUS_ROLES",), _parse_roles)
        setv("trusted_proxies", ("EVENTBUS_TRUSTED_PROXIES",), _parse_proxies)
        setv("health_degraded_status", ("EVENTBUS_HEALTH_DEGRADED_STATUS",),
             lambda n, v: _parse_int(n, v, 200, 599))
        setv("jwks_url", ("EVENTBUS_JWKS_URL",), _parse_jwks_url)
        setv("jwt_issuer", ("EVENTBUS_JWT_ISSUER",), lambda n, v: str(v).strip() or None)
        setv("jwt_audience", ("EVENTBUS_JWT_AUDIENCE",), lambda n, v: _parse_list(v))
        setv("jwt_algorithms", ("EVENTBUS_JWT_ALGORITHMS",), _parse_jwt_algorithms)
        setv("jwt_user_claim", ("EVENTBUS_JWT_USER_CLAIM",), _parse_claim_path)
        setv("jwt_roles_claim", ("EVENTBUS_JWT_ROLES_CLAIM",),
             lambda n, v: [_parse_claim_path(n, p) for p in _parse_list(v)])
        setv("jwt_role_map", ("EVENTBUS_JWT_ROLE_MAP",), _parse_role_map)
        setv("jwks_cache_seconds", ("EVENTBUS_JWKS_CACHE_SECONDS",), lambda n, v: _parse_float(n, v, 1))
        setv("jwt_leeway", ("EVENTBUS_JWT_LEEWAY",), lambda n, v: _parse_float(n, v, 0))
        setv("url", ("EVENTBUS_URL",), _parse_server_url)
        setv("forward", ("EVENTBUS_FORWARD",), lambda n, v: v if isinstance(v, bool) else _parse_bool(n, v))
        if "forward" not in cfg.configured:
            cfg.forward = True  # from the environment: agents' processes reach the server
        setv("forward_buffer", ("EVENTBUS_FORWARD_BUFFER",), lambda n, v: _parse_int(n, v, 1))
        setv("publish_max_batch", ("EVENTBUS_PUBLISH_MAX_BATCH",), lambda n, v: _parse_int(n, v, 1, 100000))
        setv("publish_max_batch_bytes", ("EVENTBUS_PUBLISH_MAX_BATCH_BYTES",),
             lambda n, v: _parse_int(n, v, 1024))
        setv("publish_dedupe_size", ("EVENTBUS_PUBLISH_DEDUPE_SIZE",), lambda n, v: _parse_int(n, v, 0))
        check_jwks_settings(cfg)

        raw_load = env.get("EVENTBUS_LOAD_PLUGINS")
        if raw_load is None and "LOAD_PLUGINS" in file_values:
            raw_load = file_values["LOAD_PLUGINS"]
        if raw_load is not None:
            cfg.load_plugins = _parse_list(raw_load)

        hooks = lookup("EVENTBUS_WEBHOOKS")
        if hooks is not None:
            if isinstance(hooks, str):
                try:
                    hooks = json.loads(hooks)
                except ValueError as exc:
                    raise ConfigError(f"EVENTBUS_WEBHOOKS: expected a JSON list of endpoints: {exc}") from None
            if not isinstance(hooks, list) or not all(isinstance(h, dict) for h in hooks):
                raise ConfigError("EVENTBUS_WEBHOOKS: expected a list of endpoint objects")
            cfg.webhooks = hooks

        if "*" in cfg.cors_origins and not cfg.allow_any_origin:
            raise ConfigError(
                "WEBSOCKET_CORS_ORIGINS: '*' lets any web site connect with your users' tokens; "
                "set EVENTBUS_ALLOW_ANY_ORIGIN=true to allow it explicitly"
            )
        for origin in cfg.cors_origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ConfigError(
                    f"WEBSOCKET_CORS_ORIGINS: expected origins like https://app.example.com, got {origin!r}"
                )
        return cfg
