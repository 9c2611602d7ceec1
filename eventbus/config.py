"""Settings from environment variables and an optional ``eventbus.toml``, validated once.

A bad value stops start-up with :class:`ConfigError`, whose message names the variable and
what it expects. Environment variables win over the file.
"""

from __future__ import annotations

import copy
import os
import secrets
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs

from .events import DEFAULT_MAX_EVENT_BYTES
from .settings import ConfigError as ConfigError  # re-exported: part of the public API
from .settings import Setting, boolean, choice, describe, integer, number, text_list

ASYNC_MODES = ("threading", "gevent", "eventlet")
OVERFLOW_POLICIES = ("drop_oldest", "drop_newest")
FLUSH_POLICIES = ("line", "batch", "os")
CHAT_SESSION_POLICIES = ("private", "open")


def default_data_dir() -> str:
    """The data dir when ``EVENTBUS_DATA_DIR`` is unset: one per user, in the platform's
    user-data folder (``$XDG_DATA_HOME/eventbus``, by default ``~/.local/share/eventbus``, on
    Linux; ``~/Library/Application Support/eventbus`` on macOS; ``%LOCALAPPDATA%\\eventbus``
    on Windows), so every process of the user, started from any folder, finds the same
    generated secret key and webhook outbox."""
    return platformdirs.user_data_dir("eventbus", appauthor=False)


def _parse_secret(name: str, value: Any) -> str:
    text = str(value)
    if len(text) < 32:
        raise ConfigError(f"{name}: expected at least 32 characters (HS256 needs a 256-bit key), "
                          f"got {len(text)}; or unset it to have one generated")
    return text


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


def _ident(name: str, value: Any) -> str:
    return str(value)


#: The core's own settings (the plugins declare theirs through ``eventbus_declare_settings``).
CORE_SETTINGS: tuple[Setting, ...] = (
    Setting("secret_key", "EVENTBUS_SECRET_KEY", None, _parse_secret,
            "HS256 signing key (32+ characters); unset: generated and kept in the data dir", secret=True),
    Setting("host", "EVENTBUS_HOST", "127.0.0.1", _ident, "address eventbus serve listens on"),
    Setting("port", "EVENTBUS_PORT", 5050, integer(0, 65535), "port for HTTP and Socket.IO (0: any free port)"),
    Setting("data_dir", "EVENTBUS_DATA_DIR", "per-user data folder",
            lambda n, v: os.path.expanduser(str(v)), "generated secret key, webhook outbox, server file"),
    Setting("url", "EVENTBUS_URL", None, _parse_server_url,
            "the server emit, tail and agents in other processes talk to (unset: the local server)"),
    Setting("forward", "EVENTBUS_FORWARD", True, boolean,
            "a bus that does not serve forwards its events to the server over HTTP"),
    Setting("forward_buffer", "EVENTBUS_FORWARD_BUFFER", 10000, integer(1),
            "events a forwarding bus keeps while the server is away"),
    Setting("history_size", "EVENTBUS_HISTORY_SIZE", 1000, integer(1), "events kept per room for replay"),
    Setting("history_max_age", "EVENTBUS_HISTORY_MAX_AGE", 3600.0, number(1), "seconds an event is kept for replay"),
    Setting("history_max_rooms", "EVENTBUS_HISTORY_MAX_ROOMS", 10000, integer(1),
            "rooms with retained events; idle rooms go first"),
    Setting("history_max_events", "EVENTBUS_HISTORY_MAX_EVENTS", 200000, integer(1),
            "retained events across all rooms"),
    Setting("max_event_bytes", "EVENTBUS_MAX_EVENT_BYTES", DEFAULT_MAX_EVENT_BYTES, integer(256),
            "largest event data, in bytes of JSON"),
    Setting("max_json_depth", "EVENTBUS_MAX_JSON_DEPTH", 32, integer(2, 500),
            "nesting of objects and lists in any client JSON"),
    Setting("queue_size", "EVENTBUS_QUEUE_SIZE", 10000, integer(1), "events queued per transport"),
    Setting("overflow", "EVENTBUS_QUEUE_OVERFLOW", "drop_oldest", choice(*OVERFLOW_POLICIES),
            "what a full transport queue drops"),
    Setting("publish_dedupe_size", "EVENTBUS_PUBLISH_DEDUPE_SIZE", 100000, integer(0),
            "publisher event ids remembered for 10 minutes (without Redis)"),
    Setting("disable_plugins", "EVENTBUS_DISABLE_PLUGINS", [], text_list,
            "installed plugins not to load"),
    Setting("redis_url", "EVENTBUS_REDIS_URL", None, _ident, "Redis for several processes (unset: one process)",
            secret=True),
    Setting("redis_prefix", "EVENTBUS_REDIS_PREFIX", "{eventbus}", lambda n, v: str(v).strip() or "{eventbus}",
            "key prefix: several deployments can share one Redis"),
    Setting("redis_claim_idle", "EVENTBUS_REDIS_CLAIM_IDLE", 5.0, number(0.3),
            "seconds before a dead server's ingest partitions move on"),
    Setting("redis_buffer", "EVENTBUS_REDIS_BUFFER", 10000, integer(1), "events held per process while Redis is away"),
    Setting("redis_fanout_maxlen", "EVENTBUS_REDIS_FANOUT_MAXLEN", 100000, integer(100),
            "entries kept in the fan-out stream"),
    Setting("redis_ingest_maxlen", "EVENTBUS_REDIS_INGEST_MAXLEN", 100000, integer(100),
            "entries kept per ingest partition"),
)


@dataclass(init=False)
class Config:
    """Validated settings. Build with :meth:`from_env`; tests may construct it directly
    (``Config(data_dir=..., client_rate=5)``: a plugin's setting given as a keyword is kept
    for when the plugin declares it).

    The core's own settings are attributes of this class; each plugin's are declared by the
    plugin (:mod:`eventbus.settings`) and read as attributes too (``config.log_sink_path``)
    once the plugin is loaded."""

    secret_key: str | None = None
    host: str = "127.0.0.1"
    port: int = 5050
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
    data_dir: str = field(default_factory=default_data_dir)  # EVENTBUS_DATA_DIR; one per user
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    queue_size: int = 10000
    overflow: str = "drop_oldest"
    max_json_depth: int = 32  # nesting of objects and lists in any client JSON
    history_max_rooms: int = 10000  # rooms with retained events; idle rooms go first
    history_max_events: int = 200000  # retained events across all rooms
    # -- agents in other processes (eventbus/forwarder.py) and the publish API --
    url: str | None = None  # EVENTBUS_URL: the server; None: the server file, then EVENTBUS_PORT
    forward: bool = False  # a bus that does not serve forwards to the server; from_env: true
    forward_buffer: int = 10000  # events a forwarding bus keeps while the server is away
    publish_dedupe_size: int = 100000  # publisher event ids remembered (10 min), memory history
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Attributes :meth:`from_env` took from the environment or the file (the rest are defaults).
    configured: set[str] = field(default_factory=set, repr=False, compare=False)
    #: Values of the settings plugins declare, by name.
    values: dict[str, Any] = field(default_factory=dict, repr=False)
    #: Every declared setting (the core's and the loaded plugins'), by name.
    declared: dict[str, Setting] = field(default_factory=dict, repr=False, compare=False)
    #: Which plugin declared each setting (``eventbus`` for the core's), by name.
    owners: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    #: The top-level values of ``eventbus.toml``, by upper-case key.
    file_values: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __init__(self, **kwargs: Any) -> None:
        for spec in fields(self):
            if spec.name in kwargs:
                value = kwargs.pop(spec.name)
            elif spec.default_factory is not MISSING:
                value = spec.default_factory()
            else:
                value = spec.default
            setattr(self, spec.name, value)
        self.values.update(kwargs)  # plugins' settings, until their plugin declares them
        self.configured.update(kwargs)
        for setting in CORE_SETTINGS:
            self.declared.setdefault(setting.name, setting)
            self.owners.setdefault(setting.name, "eventbus")

    def __getattr__(self, name: str) -> Any:
        """A plugin's setting: its value, else its declared default."""
        if name.startswith("__") or name in ("values", "declared", "owners"):
            raise AttributeError(name)
        if name in self.values:
            return self.values[name]
        setting = self.declared.get(name)
        if setting is not None:
            value = copy.copy(setting.default)  # a list or dict default is this config's own
            self.values[name] = value
            return value
        raise AttributeError(f"no setting {name!r}: no loaded plugin declares it")

    def __setattr__(self, name: str, value: Any) -> None:
        """A core setting is an attribute; any other name is a plugin's setting (kept for
        when its plugin declares it, if it has not yet)."""
        if name in _FIELD_NAMES or name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self.values[name] = value
            self.configured.add(name)

    def declare(self, settings: Iterable[Setting], owner: str = "") -> None:
        """Take ``settings`` (a plugin's declarations): each is read from the environment,
        then the file, and validated. A setting declared before is left as it is.
        Raises :class:`ConfigError` naming the variable of a bad value."""
        for setting in settings:
            if setting.name in self.declared:
                continue
            self.declared[setting.name] = setting
            self.owners[setting.name] = owner or self.owners.get(setting.name, "")
            if setting.name in self.values:
                continue  # given when the Config was made
            raw = self._lookup(setting)
            if raw is not None:
                self.values[setting.name] = setting.parse(setting.env, raw)
                self.configured.add(setting.name)

    def _lookup(self, setting: Setting) -> Any:
        value = self.env.get(setting.env)
        if value is not None and value != "":
            return value
        for key in (setting.env, setting.file_key.upper()):
            if key in self.file_values:
                return self.file_values[key]
        return None

    def settings(self) -> list[dict[str, Any]]:
        """Every declared setting with its current value (secrets hidden), for ``eventbus
        settings``."""
        rows = []
        for setting in self.declared.values():
            row = describe(setting, getattr(self, setting.name), setting.name in self.configured)
            row["plugin"] = self.owners.get(setting.name, "")
            rows.append(row)
        return rows

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

        cfg = cls(env=env, plugins=plugins, file_values=file_values)
        for setting in CORE_SETTINGS:
            raw = cfg._lookup(setting)
            if raw is not None:
                setattr(cfg, setting.name, setting.parse(setting.env, raw))
                cfg.configured.add(setting.name)
        if "forward" not in cfg.configured:
            cfg.forward = True  # from the environment: agents' processes reach the server

        raw_load = env.get("EVENTBUS_LOAD_PLUGINS")
        if raw_load is None and "LOAD_PLUGINS" in file_values:
            raw_load = file_values["LOAD_PLUGINS"]
        if raw_load is not None:
            cfg.load_plugins = text_list("EVENTBUS_LOAD_PLUGINS", raw_load)
        return cfg


_FIELD_NAMES = frozenset(spec.name for spec in fields(Config))
