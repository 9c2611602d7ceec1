"""eventbus: real-time event infrastructure for AI-agent applications."""

from . import signals
from .broadcaster import EventBroadcaster
from .bus import EventBus
from .config import Config, ConfigError
from .events import (
    Event,
    EventBusError,
    EventRegistry,
    EventType,
    EventTypeSpec,
    InvalidEventError,
)
from .hookspecs import hookimpl
from .identity import AuthError, Identity, RequestContext
from .transport import Transport

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "Config",
    "ConfigError",
    "Event",
    "EventBroadcaster",
    "EventBus",
    "EventBusError",
    "EventRegistry",
    "EventType",
    "EventTypeSpec",
    "Identity",
    "InvalidEventError",
    "RequestContext",
    "Transport",
    "__version__",
    "hookimpl",
    "signals",
]
