"""Plugins add HTTP endpoints through ``eventbus_register_routes`` and sign callers in with
``bus.identify``, the same strategies as every other route."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from eventbus import AuthError, EventBus, RequestContext, hookimpl

from .conftest import token


class WhoAmI:
    """A plugin with one route: who is asking, and how many events its bus has emitted."""

    def __init__(self) -> None:
        self.apps: list[Any] = []

    @hookimpl
    def eventbus_register_routes(self, app: Any, bus: EventBus) -> None:
        self.apps.append(app)
        bp = Blueprint("whoami", __name__)

        @bp.get("/api/whoami")
        def whoami() -> Any:
            try:
                identity = bus.identify(RequestContext.from_environ(request.environ, "http"))
            except AuthError as exc:
                return jsonify({"error": {"code": exc.code, "message": str(exc)}}), 401
            return jsonify({"user": identity.user_id, "roles": sorted(identity.roles),
                            "emitted": bus.status()["counters"]["emitted"]})

        app.register_blueprint(bp)


def test_a_plugin_route_is_served_with_the_built_in_ones(make_app: Any) -> None:
    plugin = WhoAmI()
    app, _manager = make_app(plugins=(plugin,))
    assert plugin.apps == [app]
    http = app.test_client()
    answer = http.get("/api/whoami", headers={"Authorization": f"Bearer {token('alice', ('publisher',))}"})
    assert answer.status_code == 200 and answer.get_json()["user"] == "alice"
    assert answer.get_json()["roles"] == ["publisher"]
    missing = http.get("/api/whoami")
    assert missing.status_code == 401 and "a token is required" in missing.get_json()["error"]["message"]
    bad = http.get("/api/whoami", headers={"Authorization": "Bearer not-a-token"})
    assert bad.status_code == 401 and bad.get_json()["error"]["message"] == "the token was not accepted"
    assert http.get("/api/health").status_code == 200  # the built-in routes are still there
