"""Webhook endpoint settings: parsing and validation of ``config.webhooks`` and the
``[plugins.webhook]`` table, with errors that name ``EVENTBUS_WEBHOOKS`` and the endpoint."""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import re
import secrets as _secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from eventbus.config import ConfigError
from eventbus.redact import redact_url
from eventbus.settings import Setting, choice

if TYPE_CHECKING:
    from eventbus.config import Config
    from eventbus.events import Event

SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24
#: Seconds before each attempt, the first counted from acceptance: immediately, 5 s, 5 min,
#: 30 min, 2 h, 5 h, 10 h, 10 h (the Standard Webhooks reference schedule).
DEFAULT_SCHEDULE = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
DEFAULT_TIMEOUT = 15.0
DEFAULT_CONCURRENCY = 2
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
SOURCE = "EVENTBUS_WEBHOOKS"

ENDPOINT_FIELDS = {"name", "url", "secret", "secrets", "event_types", "rooms", "enabled",
                   "timeout", "concurrency", "retry_schedule", "headers"}
GLOBAL_FIELDS = {"schedule_scale", "jitter", "max_pending", "max_age", "dead_letter_max",
                 "dead_letter_max_age", "max_retry_after", "housekeeping_interval", "outbox_file",
                 "durable_accept"}
#: Which events are in the outbox before ``emit`` returns (so before an HTTP 202 or a
#: Socket.IO ack): events from clients (HTTP API, Socket.IO); those and ``bus.emit()``
#: calls of the application; or none. Agents' blinker signals never wait.
DURABLE_ACCEPT = ("clients", "emit", "off")
#: Event origins that ``durable_accept = "clients"`` covers: those that get an answer.
CLIENT_ORIGINS = frozenset({"http", "client"})
#: ``durable_accept = "emit"`` adds direct ``bus.emit()`` calls.
EMIT_ORIGINS = CLIENT_ORIGINS | {"api"}


def generate_secret(nbytes: int = 32) -> str:
    """A fresh ``whsec_`` secret of ``nbytes`` random bytes."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(nbytes)).decode("ascii")


def decode_secret(secret: str) -> bytes:
    """The HMAC key inside a ``whsec_`` secret; ``ValueError`` when it is not one."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a secret must be a string starting with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the part after 'whsec_' is not valid base64") from None
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"the secret holds {len(key)} bytes; at least {MIN_SECRET_BYTES} random "
                         f"bytes are needed (`eventbus webhook secret` generates one)")
    return key


def _globs(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{what!r} must be a non-empty list of glob patterns such as \"agent_*\"")
    return tuple(value)


def _compile(globs: tuple[str, ...] | None) -> re.Pattern[str] | None:
    if globs is None or "*" in globs:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs))


@dataclass
class Endpoint:
    """One receiver. Built by :func:`parse_endpoints`; ``keys`` are the decoded secrets,
    newest first, all of which sign every delivery (rotation). ``url`` (which may hold
    credentials), ``keys`` and ``headers`` stay out of ``repr``; show :attr:`display_url`."""

    name: str
    url: str = field(repr=False)
    keys: tuple[bytes, ...] = field(repr=False)
    event_types: tuple[str, ...] = ("*",)
    rooms: tuple[str, ...] | None = None
    enabled: bool = True
    timeout: float = DEFAULT_TIMEOUT
    concurrency: int = DEFAULT_CONCURRENCY
    retry_schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    headers: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._type_re = _compile(self.event_types)
        self._room_re = _compile(self.rooms)

    def matches(self, event: Event) -> bool:
        """Whether ``event`` passes this endpoint's type and room filters."""
        if self._type_re is not None and not self._type_re.match(event.type):
            return False
        return self._room_re is None or bool(self._room_re.match(event.room))

    @property
    def display_url(self) -> str:
        """The URL as shown anywhere: ``scheme://host[:port]/path``, no user, password,
        query or fragment."""
        return redact_url(self.url)

    def describe(self) -> dict[str, Any]:
        """Settings without the secrets, for status pages and the CLI."""
        return {"name": self.name, "url": self.display_url, "event_types": list(self.event_types),
                "rooms": None if self.rooms is None else list(self.rooms), "enabled": self.enabled,
                "timeout": self.timeout, "concurrency": self.concurrency,
                "retry_schedule": list(self.retry_schedule), "secrets": len(self.keys)}


@dataclass
class WebhookSettings:
    """Plugin-wide settings from ``[plugins.webhook]`` (or ``EVENTBUS_WEBHOOK_*``)."""

    endpoints: list[Endpoint]
    schedule_scale: float = 1.0
    jitter: float = 0.2  # each scheduled delay is multiplied by a random factor in 1 ± jitter
    max_pending: int = 100_000  # per endpoint; more are refused and counted
    max_age: float = 3 * 86400.0  # pending longer than this become dead letters
    dead_letter_max: int = 10_000  # per endpoint; the oldest are pruned and counted
    dead_letter_max_age: float = 14 * 86400.0
    max_retry_after: float = 6 * 3600.0
    housekeeping_interval: float = 30.0
    outbox_file: str = "webhooks.sqlite3"
    durable_accept: str = "clients"  # one of DURABLE_ACCEPT

    def durable_for(self, origin: str) -> bool:
        """Whether an event of this origin is written to the outbox before ``emit`` returns.
        Signals never wait: an agent has no answer to wait for and must never be slowed."""
        if self.durable_accept == "emit":
            return origin in EMIT_ORIGINS
        return self.durable_accept == "clients" and origin in CLIENT_ORIGINS


def _number(label: str, key: str, value: Any, lo: float, integer: bool = False) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{label}: {key!r} must be a number >= {lo}, got {value!r}")
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        number = None
    if number is None or number < lo or (integer and float(value) != number):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{label}: {key!r} must be {kind} >= {lo}, got {value!r}")
    return number


def parse_endpoint(raw: Mapping[str, Any], index: int) -> Endpoint:
    """Validate one endpoint table; :class:`ConfigError` names the endpoint and the field."""
    label = f"{SOURCE}[{index}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{label}: expected an object with name, url and secret")
    name = raw.get("name")
    if isinstance(name, str) and name:
        label = f"{SOURCE} endpoint {name!r}"
    unknown = sorted(set(raw) - ENDPOINT_FIELDS)
    if unknown:
        raise ConfigError(f"{label}: unknown field(s) {', '.join(unknown)}; "
                          f"expected {', '.join(sorted(ENDPOINT_FIELDS))}")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"{label}: 'name' must be 1-64 letters, digits or _.-, got {name!r}")
    url = raw.get("url")
    parts = urlsplit(url) if isinstance(url, str) else None
    if not isinstance(url, str) or parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{label}: 'url' must be an http:// or https:// URL with a host, "
                          f"got {redact_url(url) if isinstance(url, str) else repr(url)}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port == -1:
        raise ConfigError(f"{label}: 'url' has an invalid port")
    if "secret" in raw and "secrets" in raw:
        raise ConfigError(f"{label}: give either 'secret' or 'secrets', not both")
    given = raw.get("secret", raw.get("secrets"))
    if given is None:
        raise ConfigError(f"{label}: 'secret' is required (`eventbus webhook secret` generates one)")
    secret_list = [given] if isinstance(given, str) else given
    if not isinstance(secret_list, list) or not secret_list:
        raise ConfigError(f"{label}: 'secret' must be a whsec_ string or a list of them")
    keys = []
    for secret in secret_list:
        try:
            keys.append(decode_secret(secret))
        except ValueError as exc:
            raise ConfigError(f"{label}: bad secret: {exc}") from None
    try:
        event_types = _globs(raw.get("event_types", ["*"]), "event_types")
        rooms = None if raw.get("rooms") is None else _globs(raw["rooms"], "rooms")
    except ValueError as exc:
        raise ConfigError(f"{label}: {exc}") from None
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{label}: 'enabled' must be true or false, got {enabled!r}")
    timeout = _number(label, "timeout", raw.get("timeout", DEFAULT_TIMEOUT), 0.001)
    concurrency = _number(label, "concurrency", raw.get("concurrency", DEFAULT_CONCURRENCY), 1, integer=True)
    if concurrency > 64:
        raise ConfigError(f"{label}: 'concurrency' must be at most 64, got {concurrency}")
    schedule = raw.get("retry_schedule", DEFAULT_SCHEDULE)
    if not isinstance(schedule, (list, tuple)) or not schedule:
        raise ConfigError(f"{label}: 'retry_schedule' must be a non-empty list of seconds")
    schedule = tuple(_number(label, "retry_schedule", s, 0) for s in schedule)
    headers = raw.get("headers", {})
    if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise ConfigError(f"{label}: 'headers' must be a table of string values")
    reserved = {h.lower() for h in headers} & {"webhook-id", "webhook-timestamp", "webhook-signature",
                                               "content-type"}
    if reserved:
        raise ConfigError(f"{label}: 'headers' may not set {', '.join(sorted(reserved))}")
    return Endpoint(name=name, url=url, keys=tuple(keys), event_types=event_types, rooms=rooms,
                    enabled=enabled, timeout=timeout, concurrency=concurrency,
                    retry_schedule=schedule, headers=dict(headers))


def parse_endpoints(raw: Any) -> list[Endpoint]:
    if not isinstance(raw, list):
        raise ConfigError(f"{SOURCE}: expected a list of endpoint objects")
    endpoints = [parse_endpoint(item, i) for i, item in enumerate(raw)]
    seen: set[str] = set()
    for endpoint in endpoints:
        if endpoint.name in seen:
            raise ConfigError(f"{SOURCE} endpoint {endpoint.name!r}: the name is used twice")
        seen.add(endpoint.name)
    return endpoints


def load_settings(config: Config) -> WebhookSettings:
    """Everything the plugin needs from ``config``; raises :class:`ConfigError` when wrong."""
    table = config.plugin_settings("webhook")
    unknown = sorted(set(table) - GLOBAL_FIELDS)
    if unknown:
        raise ConfigError(f"[plugins.webhook]: unknown field(s) {', '.join(unknown)}; "
                          f"expected {', '.join(sorted(GLOBAL_FIELDS))}")
    config.declare(SETTINGS)
    settings = WebhookSettings(endpoints=parse_endpoints(config.webhooks))
    for key, lo, integer in _TUNING:
        if f"webhook_{key}" in config.configured:
            setattr(settings, key, getattr(config, f"webhook_{key}"))
        elif key in table:
            setattr(settings, key, _number("[plugins.webhook]", key, table[key], lo, integer))
    if settings.jitter >= 1:
        raise ConfigError(f"[plugins.webhook]: 'jitter' must be below 1, got {settings.jitter}")
    if "outbox_file" in table:
        settings.outbox_file = str(table["outbox_file"])
    settings.durable_accept = _durable_accept(config, table)
    return settings


def _durable_accept(config: Config, table: Mapping[str, Any]) -> str:
    if "webhook_durable_accept" in config.configured:
        return str(config.webhook_durable_accept)
    value = table.get("durable_accept", "clients")
    if value not in DURABLE_ACCEPT:
        raise ConfigError(f"[plugins.webhook]: 'durable_accept' must be one of {', '.join(DURABLE_ACCEPT)}, "
                          f"got {value!r}")
    return str(value)


def _endpoint_list(name: str, value: Any) -> list[dict[str, Any]]:
    """``EVENTBUS_WEBHOOKS``: a JSON list of endpoint objects (or the TOML array of tables)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ConfigError(f"{name}: expected a JSON list of endpoints: {exc}") from None
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ConfigError(f"{name}: expected a list of endpoint objects")
    return value


def _tuning(key: str, lo: float, integer: bool) -> Setting:
    env_name = f"EVENTBUS_WEBHOOK_{key.upper()}"
    return Setting(f"webhook_{key}", env_name, getattr(WebhookSettings, key),
                   lambda name, value: _number(name, key, value, lo, integer),
                   _TUNING_HELP[key])


_TUNING_HELP = {
    "schedule_scale": "multiplies every retry delay (tests: 0.01)",
    "jitter": "each retry delay is multiplied by a random factor in 1 +- jitter",
    "max_pending": "pending deliveries per endpoint; further events are refused and counted",
    "max_age": "seconds a delivery may stay pending before it becomes a dead letter",
    "dead_letter_max": "dead letters kept per endpoint",
    "dead_letter_max_age": "seconds a dead letter is kept",
    "max_retry_after": "longest Retry-After honoured, in seconds",
    "housekeeping_interval": "seconds between outbox clean-ups",
}
_TUNING = (("schedule_scale", 0, False), ("jitter", 0, False), ("max_pending", 1, True), ("max_age", 1, False),
           ("dead_letter_max", 0, True), ("dead_letter_max_age", 1, False), ("max_retry_after", 0, False),
           ("housekeeping_interval", 0.01, False))

#: The webhook plugin's settings; ``[plugins.webhook]`` in eventbus.toml sets the same.
SETTINGS = (
    Setting("webhooks", "EVENTBUS_WEBHOOKS", [], _endpoint_list,
            "JSON list of endpoints (or [[webhooks]] tables in eventbus.toml)", secret=True),
    *(_tuning(key, lo, integer) for key, lo, integer in _TUNING),
    Setting("webhook_durable_accept", "EVENTBUS_WEBHOOK_DURABLE_ACCEPT", "clients", choice(*DURABLE_ACCEPT),
            "clients: events from clients are in the outbox before the answer; emit: every emit; off"),
)
