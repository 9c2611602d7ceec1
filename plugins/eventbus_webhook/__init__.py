"""eventbus_webhook: Standard Webhooks delivery with a durable SQLite outbox, retries,
dead letters and per-endpoint health."""

from .hooks import eventbus_declare_settings, eventbus_register_commands, eventbus_register_transports
from .settings import Endpoint, WebhookSettings, generate_secret, load_settings
from .signing import payload, sign
from .transport import WebhookTransport

__version__ = "0.1.0"

__all__ = [
    "Endpoint",
    "WebhookSettings",
    "WebhookTransport",
    "__version__",
    "eventbus_declare_settings",
    "eventbus_register_commands",
    "eventbus_register_transports",
    "generate_secret",
    "load_settings",
    "payload",
    "sign",
]
