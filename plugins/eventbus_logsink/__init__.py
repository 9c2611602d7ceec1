"""eventbus_logsink: a JSONL log sink transport with size-based rotation."""

from .sink import BatchLogSinkTransport, LogSinkTransport, eventbus_register_transports

__all__ = ["BatchLogSinkTransport", "LogSinkTransport", "eventbus_register_transports"]
