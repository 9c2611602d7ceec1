"""eventbus_logsink: a JSONL log sink transport with size-based rotation."""

from .sink import (
    SETTINGS,
    BatchLogSinkTransport,
    LogSinkTransport,
    eventbus_declare_settings,
    eventbus_register_transports,
)

__all__ = ["SETTINGS", "BatchLogSinkTransport", "LogSinkTransport", "eventbus_declare_settings",
           "eventbus_register_transports"]
