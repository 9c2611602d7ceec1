"""The Socket.IO plugin's settings: declared here, validated by the core with every other
setting when the plugins are loaded (a bad value stops start-up naming its variable)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eventbus.config import ASYNC_MODES
from eventbus.settings import ConfigError, Setting, boolean, choice, integer, number, text_list

if TYPE_CHECKING:
    from eventbus.config import Config


def parse_proxies(name: str, value: Any) -> list[str]:
    """Addresses or CIDR networks, comma-separated (``10.0.0.0/8,127.0.0.1``)."""
    import ipaddress

    out = []
    for item in text_list(name, value):
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError(f"{name}: expected IP addresses or CIDR networks, got {item!r}") from None
        out.append(item)
    return out


#: Signature algorithms a JWKS token may use: public-key ones only (never HS*, never none).


#: The Socket.IO server's settings (docs/security.md has every limit).
SETTINGS = (
    Setting("websocket_enabled", "WEBSOCKET_ENABLED", True, boolean, "false: HTTP API only, Socket.IO off"),
    Setting("cors_origins", "WEBSOCKET_CORS_ORIGINS", [], text_list,
            "origins allowed besides the server's own, comma-separated (empty: same origin only)"),
    Setting("allow_any_origin", "EVENTBUS_ALLOW_ANY_ORIGIN", False, boolean,
            "true: accept '*' in WEBSOCKET_CORS_ORIGINS"),
    Setting("async_mode", "WEBSOCKET_ASYNC_MODE", "threading", choice(*ASYNC_MODES),
            "threading, gevent or eventlet (eventbus serve: gevent when installed)"),
    Setting("chat_max_length", "EVENTBUS_CHAT_MAX_LENGTH", 4000, integer(1), "characters in one chat message"),
    Setting("client_rate", "EVENTBUS_CLIENT_RATE", 20.0, number(0.1), "client events per second per connection"),
    Setting("client_burst", "EVENTBUS_CLIENT_BURST", 40, integer(1), "client events allowed at once"),
    Setting("typing_interval", "EVENTBUS_TYPING_INTERVAL", 1.0, number(0),
            "seconds between typing indicators per user and room"),
    Setting("batch_window_ms", "EVENTBUS_BATCH_WINDOW_MS", 0.0, number(0),
            "> 0: clients that ask get events in batches collected over this window"),
    Setting("max_rooms_per_connection", "EVENTBUS_MAX_ROOMS_PER_CONNECTION", 100, integer(1),
            "rooms one connection may be in"),
    Setting("max_resume_rooms", "EVENTBUS_MAX_RESUME_ROOMS", 100, integer(1), "rooms in one resume"),
    Setting("max_connections_per_user", "EVENTBUS_MAX_CONNECTIONS_PER_USER", 50, integer(1),
            "connections per user and server process"),
    Setting("max_pending_sessions", "EVENTBUS_MAX_PENDING_SESSIONS", 1000, integer(1),
            "Engine.IO sessions not yet signed in, server-wide"),
    Setting("trusted_proxies", "EVENTBUS_TRUSTED_PROXIES", [], parse_proxies,
            "addresses or CIDRs whose X-Forwarded-* headers are believed"),
    Setting("health_degraded_status", "EVENTBUS_HEALTH_DEGRADED_STATUS", 503, integer(200, 599),
            "/api/health status while the backend is away or buffering"),
    Setting("publish_max_batch", "EVENTBUS_PUBLISH_MAX_BATCH", 1000, integer(1, 100000),
            "events in one POST /api/events batch"),
    Setting("publish_max_batch_bytes", "EVENTBUS_PUBLISH_MAX_BATCH_BYTES", 4 * 1024 * 1024, integer(1024),
            "body of one batch, in bytes"),
)


def check_origins(config: Config) -> None:
    """``*`` only with ``EVENTBUS_ALLOW_ANY_ORIGIN``; every other origin a scheme and host."""
    origins: list[str] = config.cors_origins
    if "*" in origins and not config.allow_any_origin:
        raise ConfigError(
            "WEBSOCKET_CORS_ORIGINS: '*' lets any web site connect with your users' tokens; "
            "set EVENTBUS_ALLOW_ANY_ORIGIN=true to allow it explicitly"
        )
    for origin in origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ConfigError(
                f"WEBSOCKET_CORS_ORIGINS: expected origins like https://app.example.com, got {origin!r}"
            )


def use(config: Config) -> None:
    """Declare (once) and check the settings on ``config``."""
    config.declare(SETTINGS)
    check_origins(config)
