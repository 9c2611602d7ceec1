"""eventbus_webhook plugin."""
