"""Auth strategies see the whole request (cookies, headers, query, method), requests without a
token reach them, and plugins' strategies run before the built-in ones: the example app in
examples/flask_session_auth.py signs its users in with Flask's session cookie alone."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import jwt
import pytest

import eventbus_auth
from eventbus import Config, EventBus, Identity, RequestContext, hookimpl

from .conftest import SECRET, token

ROOT = Path(__file__).resolve().parents[3]


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("flask_session_auth", ROOT / "examples" / "flask_session_auth.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def session_app(tmp_path: Path) -> Any:
    import eventbus_socketio

    example = load_example()
    bus = EventBus(Config(secret_key=SECRET, data_dir=str(tmp_path / "data")),
                   plugins=[eventbus_auth, eventbus_socketio], load_entrypoints=False)
    app = example.create_app(bus)
    yield app
    bus.close()


def connect(app: Any, namespace: str, http: Any = None, auth: dict[str, Any] | None = None) -> Any:
    manager = app.extensions["eventbus"]
    return manager.socketio.test_client(app, namespace=namespace, auth=auth, flask_test_client=http)



def test_the_session_cookie_signs_a_user_in_on_socketio(session_app: Any) -> None:
    http = session_app.test_client()
    assert http.get("/login?user=alice").status_code == 200
    chat = connect(session_app, "/chat", http)
    assert chat.is_connected("/chat")
    ack = chat.emit("join_room", {"room": "session:s-1"}, namespace="/chat", callback=True)
    assert ack["ok"] is True, ack
    # Over HTTP the cookie signs alice in too: the admin-only list is forbidden, not unauthorized.
    assert http.get("/api/connections").get_json()["error"]["code"] == "forbidden"
    manager = session_app.extensions["eventbus"]
    [conn] = [c for c in manager.active_connections.values() if c.namespace == "/chat"]
    assert conn.identity.user_id == "alice" and conn.identity.strategy == "flask-session"


def test_no_cookie_and_no_token_is_refused_and_a_token_still_works(session_app: Any) -> None:
    anonymous = connect(session_app, "/chat", session_app.test_client())
    assert not anonymous.is_connected("/chat")
    with_token = connect(session_app, "/chat", auth={"token": token("bob", ())})
    assert with_token.is_connected("/chat")


def test_a_forged_cookie_is_refused(session_app: Any) -> None:
    http = session_app.test_client()
    http.get("/login?user=alice")
    cookie = http.get_cookie("session")
    assert cookie is not None
    http.set_cookie("session", cookie.value[:-2] + ("AA" if not cookie.value.endswith("AA") else "BB"))
    assert not connect(session_app, "/chat", http).is_connected("/chat")


def test_the_cookie_reads_over_http_but_does_not_publish(session_app: Any) -> None:
    http = session_app.test_client()
    http.get("/login?user=alice")
    assert http.get("/api/events?room=monitoring&after=0").status_code == 200
    posted = http.post("/api/events", json={"type": "chat_message", "session_id": "s-1",
                                            "data": {"message": "forged by another site"}})
    assert posted.status_code == 401 and posted.get_json()["error"]["code"] == "unauthorized"


class RequestRecorder:
    """Accepts nothing; records what it was shown."""

    def __init__(self) -> None:
        self.seen: list[RequestContext] = []

    @hookimpl
    def eventbus_authenticate(self, auth: dict[str, Any], environ: dict[str, Any],
                              request: RequestContext) -> Identity | None:
        self.seen.append(request)
        return None


def test_strategies_see_headers_cookies_query_and_requests_without_a_token(make_app: Any) -> None:
    recorder = RequestRecorder()
    app, manager = make_app(plugins=(recorder,))
    client = manager.socketio.test_client(app, namespace="/monitoring", query_string="tenant=acme",
                                          headers={"X-Forwarded-User": "carol", "Cookie": "sid=abc; theme=dark"})
    assert not client.is_connected("/monitoring")  # nobody accepted it, but the strategy was asked
    [request] = [r for r in recorder.seen if r.transport == "socketio"]
    assert request.header("x-forwarded-user") == "carol" and request.cookies == {"sid": "abc", "theme": "dark"}
    assert request.query["tenant"] == "acme" and request.method == "GET"
    http = app.test_client()
    assert http.get("/api/connections", headers={"X-Api-User": "dave"}).status_code == 401
    [http_request] = [r for r in recorder.seen if r.transport == "http"]
    assert http_request.header("X-API-USER") == "dave" and http_request.path == "/api/connections"


class OwnJwtStrategy:
    """A third-party strategy for JWTs signed with a key eventbus does not hold."""

    KEY = "their-own-key-" + "k" * 40

    @hookimpl
    def eventbus_authenticate(self, auth: dict[str, Any], environ: dict[str, Any],
                              request: RequestContext) -> Identity | None:
        try:
            claims = jwt.decode(str(auth.get("token", "")), self.KEY, algorithms=["HS256"])
        except jwt.InvalidTokenError:
            return None
        return Identity(claims["sub"], frozenset(claims.get("roles", ())), claims, "their-jwt")


def test_a_plugin_strategy_runs_before_the_built_in_jwt_check(make_app: Any) -> None:
    app, manager = make_app(plugins=(OwnJwtStrategy(),))
    theirs = jwt.encode({"sub": "erin", "roles": ["publisher"]}, OwnJwtStrategy.KEY, algorithm="HS256")
    client = manager.socketio.test_client(app, namespace="/monitoring", auth={"token": theirs})
    assert client.is_connected("/monitoring")  # the built-in check would have refused the signature
    ours = manager.socketio.test_client(app, namespace="/monitoring", auth={"token": token("frank", ())})
    assert ours.is_connected("/monitoring")
    forged = jwt.encode({"sub": "mallory"}, "not-a-key-anyone-holds-" + "x" * 30, algorithm="HS256")
    assert not manager.socketio.test_client(app, namespace="/monitoring", auth={"token": forged}).is_connected("/monitoring")
