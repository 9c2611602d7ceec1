"""eventbus_logsink plugin."""
