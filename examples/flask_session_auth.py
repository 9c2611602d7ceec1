"""An existing Flask app whose users sign in with Flask's own session cookie: eventbus accepts
that cookie, with no token, through an auth strategy of ten lines.

    pip install 'eventbus[all]'
    python examples/flask_session_auth.py
    # open http://127.0.0.1:5050/login?user=alice, then the app's pages connect with
    # io("/chat") and no auth payload: the browser sends the session cookie itself.

The cookie is accepted on Socket.IO connections (same-origin only, the default, so another
site cannot open one with your users' cookies) and on reading HTTP calls (GET). Publishing
over HTTP still needs a token: a cookie would let another site post forms in your users'
names (cross-site request forgery).
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from flask import Flask, request, session
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import BadSignature

from eventbus import EventBus, Identity, RequestContext, hookimpl
from eventbus_socketio import SocketManager


class FlaskSessionAuth:
    """The user id the app keeps in its signed session cookie becomes the identity."""

    def __init__(self, app: Flask, key: str = "user_id"):
        self.app = app
        self.key = key

    @hookimpl
    def eventbus_authenticate(self, auth: dict[str, Any], environ: dict[str, Any],
                              request: RequestContext) -> Identity | None:
        if request.transport != "socketio" and request.method != "GET":
            return None  # see the module's docstring: no cookie for writes over HTTP
        cookie = request.cookies.get(self.app.config["SESSION_COOKIE_NAME"])
        interface = self.app.session_interface
        if not cookie or not isinstance(interface, SecureCookieSessionInterface):
            return None
        serializer = interface.get_signing_serializer(self.app)
        if serializer is None:
            return None
        try:
            data = serializer.loads(cookie, max_age=int(self.app.permanent_session_lifetime.total_seconds()))
        except BadSignature:
            return None  # forged or expired: the next strategy may still accept a token
        user = data.get(self.key)
        if not isinstance(user, str) or not user:
            return None
        return Identity(user, frozenset(data.get("roles", ())), {"sub": user}, "flask-session")


def create_app(bus: EventBus | None = None) -> Flask:
    app = Flask(__name__)
    app.secret_key = os.environ.get("APP_SECRET_KEY") or secrets.token_hex(32)

    @app.get("/login")
    def login() -> str:  # your real sign-in form goes here
        session["user_id"] = request.args.get("user", "alice")
        return f"signed in as {session['user_id']}"

    bus = bus or EventBus.from_env()
    bus.pm.register(FlaskSessionAuth(app), name="flask-session-auth")
    SocketManager(bus=bus).init_app(app)
    return app


if __name__ == "__main__":
    application = create_app()
    application.extensions["eventbus"].socketio.run(application, port=5050, allow_unsafe_werkzeug=True)
