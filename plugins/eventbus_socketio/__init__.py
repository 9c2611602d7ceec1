"""eventbus_socketio plugin."""
