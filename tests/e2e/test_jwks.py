"""Tokens from an identity provider against a real ``eventbus serve`` in every async mode.

The identity provider is this test process: a JWKS served by ``http.server`` on 127.0.0.1,
keys made with ``cryptography``. The server fetches the keys itself (green under gevent and
eventlet, a worker thread under threading).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
import requests
import socketio
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from eventbus.testing import wait_until

from ..security.probe import HealthProbe
from .server import ServerProcess

ISSUER = "http://127.0.0.1/realms/e2e"
AUDIENCE = "eventbus-e2e"


class IdentityProvider:
    """An RS256 and an ES256 key, published at ``url``; ``fetches`` counts the requests.
    With ``stall`` > 0 it waits that many seconds, then answers 503 (an outage)."""

    def __init__(self) -> None:
        self.private = {"rsa-1": (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
                        "ec-1": (ec.generate_private_key(ec.SECP256R1()), "ES256")}
        keys = []
        for kid, (key, alg) in self.private.items():
            to_jwk = RSAAlgorithm.to_jwk if alg == "RS256" else ECAlgorithm.to_jwk
            keys.append({**to_jwk(key.public_key(), as_dict=True), "kid": kid, "alg": alg, "use": "sig"})
        body = json.dumps({"keys": keys}).encode()
        self.fetches = 0
        self.stall = 0.0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's name
                owner.fetches += 1
                if owner.stall:
                    time.sleep(owner.stall)
                    self.send_error(503)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/protocol/openid-connect/certs"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def token(self, kid: str, user: str, roles: list[str], iss: str = ISSUER) -> str:
        key, alg = self.private[kid]
        now = int(time.time())
        claims = {"iss": iss, "aud": AUDIENCE, "sub": user, "iat": now, "exp": now + 300,
                  "realm_access": {"roles": roles}}
        return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def idp() -> Iterator[IdentityProvider]:
    provider = IdentityProvider()
    yield provider
    provider.stop()


def connect(url: str, token: str) -> tuple[socketio.Client, list[Any], list[Any]]:
    """A /monitoring client; returns it with the ``agent_started`` events and the
    ``connect_error`` data it receives."""
    client = socketio.Client(reconnection=False)
    events: list[Any] = []
    errors: list[Any] = []
    client.on("agent_started", events.append, namespace="/monitoring")
    client.on("connect_error", errors.append, namespace="/monitoring")
    try:
        client.connect(url, namespaces=["/monitoring"], auth={"token": token}, wait_timeout=10)
    except socketio.exceptions.ConnectionError:
        pass
    return client, events, errors


def test_identity_provider_tokens_connect_and_publish_and_a_foreign_issuer_is_refused(
        start_server: Callable[..., ServerProcess], async_mode: str, idp: IdentityProvider) -> None:
    server = start_server(async_mode, env={
        "EVENTBUS_JWKS_URL": idp.url, "EVENTBUS_JWT_ISSUER": ISSUER, "EVENTBUS_JWT_AUDIENCE": AUDIENCE,
        "EVENTBUS_JWT_ROLES_CLAIM": "realm_access.roles", "EVENTBUS_JWT_ROLE_MAP": "eventbus-writer=publisher",
    })
    fetches = idp.fetches
    reader_token = idp.token("ec-1", "reader", ["offline_access"])
    reader, events, errors = connect(server.url, reader_token)
    try:
        assert reader.connected, errors
        assert idp.fetches == fetches + 1  # the server fetched the keys itself
        writer_token = idp.token("rsa-1", "writer", ["eventbus-writer"])  # mapped to publisher
        published = server.publish("agent_started", {"agent_name": "jwks", "details": {}}, token=writer_token)
        wait_until(lambda: events, 10, message="agent_started at the IdP-token client")
        assert events[0]["id"] == published["id"]
        # Without the mapped role, the same identity provider's token may not publish.
        refused = requests.post(f"{server.url}/api/events", json={"type": "agent_started", "data": {}},
                                headers={"Authorization": f"Bearer {reader_token}"}, timeout=10)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    finally:
        reader.disconnect()

    foreign = idp.token("rsa-1", "mallory", ["eventbus-writer"], iss="https://evil.example.com/")
    stranger, _, errors = connect(server.url, foreign)
    wait_until(lambda: [e for e in errors if isinstance(e, dict)], 10, message="connect_error")
    assert not stranger.connected
    assert errors[0]["code"] == "unauthorized", errors
    assert server.status()["refusals"] == {"forbidden": 1, "unauthorized": 1}  # the 403, then this
    log = server.log()
    assert "Traceback" not in log
    assert not any(token in log for token in (reader_token, writer_token, foreign))


def test_an_identity_provider_outage_is_refused_counted_and_stalls_nobody_else(
        start_server: Callable[..., ServerProcess], async_mode: str, idp: IdentityProvider) -> None:
    server = start_server(async_mode, env={
        "EVENTBUS_JWKS_URL": idp.url, "EVENTBUS_JWT_ISSUER": ISSUER, "EVENTBUS_JWT_AUDIENCE": AUDIENCE})
    fetches = idp.fetches
    idp.stall = 1.5  # the keys request hangs for 1.5 s, then fails
    try:
        outcome: dict[str, Any] = {}

        def sign_in() -> None:
            outcome["client"], _, outcome["errors"] = connect(server.url, idp.token("rsa-1", "alice", []))

        with HealthProbe(server.url) as probe:
            signing_in = threading.Thread(target=sign_in)
            signing_in.start()
            signing_in.join(15)
        print(f"{async_mode}: /api/health while the JWKS request hangs: {probe.summary()}")
        # A blocked loop shows as one sample as long as the stall (the probe waits for each).
        assert max(probe.samples) < 500 and not probe.errors, probe.summary()
        errors = [e for e in outcome["errors"] if isinstance(e, dict)]
        assert errors and errors[0]["code"] == "unauthorized" and "unavailable" in errors[0]["message"], errors
        assert idp.fetches == fetches + 1
        started = time.monotonic()  # within the retry delay: refused at once, the IdP not asked
        again, _, errors = connect(server.url, idp.token("ec-1", "bob", []))
        wait_until(lambda: [e for e in errors if isinstance(e, dict)], 10, message="connect_error")
        assert time.monotonic() - started < 1.0 and idp.fetches == fetches + 1
        assert not outcome["client"].connected and not again.connected
    finally:
        idp.stall = 0.0
    assert server.status()["refusals"] == {"unauthorized": 2}
    log = server.log()
    assert log.count("unavailable: ") == 1, log  # logged once per outage
    assert "Traceback" not in log
