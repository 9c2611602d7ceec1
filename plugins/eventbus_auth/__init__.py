"""eventbus_auth plugin."""
