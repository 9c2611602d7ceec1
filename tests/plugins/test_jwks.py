"""Tokens from an identity provider, verified against a JWKS served by a local HTTP server.

Keys are made with ``cryptography``; the JWKS is served by ``http.server`` on 127.0.0.1, and
every request to it is counted, so the number of fetches is asserted exactly.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from eventbus import AuthError, Config, ConfigError
from eventbus.testing import started_config
from eventbus_auth import AuthPlugin, create_token
from eventbus_auth.jwks import JwksKeys, claim_at, roles_from
from eventbus_auth.sessions import listed_sessions

SECRET = "s" * 40
ISSUER = "https://idp.example.com/realms/acme"
AUDIENCE = "eventbus"


class KeyPair:
    """A private key, its algorithm and the public JWK the identity provider publishes."""

    def __init__(self, kid: str, alg: str) -> None:
        self.kid, self.alg = kid, alg
        if alg.startswith("ES"):
            self.private = ec.generate_private_key(ec.SECP256R1())
            jwk = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        else:
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            jwk = RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        self.jwk = {**jwk, "kid": kid, "alg": alg, "use": "sig"}
        self.public_pem = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def token(self, kid: str | None = "", **claims: Any) -> str:
        """A token signed with this key; ``claims`` override the defaults (``None`` removes)."""
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300,
                "roles": ["publisher"]}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        headers = {} if kid is None else {"kid": kid or self.kid}
        return jwt.encode(body, self.private, algorithm=self.alg, headers=headers)


class JwksServer:
    """``GET /jwks`` answers the published keys; ``fetches`` counts every request.
    ``mode``: ``ok``, ``error`` (HTTP 503), ``garbage`` (not JSON), ``hang`` (answers
    once ``release`` is set) or ``redirect`` (302 to ``redirect_to``)."""

    def __init__(self, keys: list[KeyPair]) -> None:
        self.keys = list(keys)
        self.fetches = 0
        self.mode = "ok"
        self.redirect_to = ""
        self.release = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's name
                owner.fetches += 1
                if owner.mode == "hang":
                    owner.release.wait(10)
                    return  # the client has given up
                if owner.mode == "error":
                    self.send_error(503)
                    return
                if owner.mode == "redirect":
                    self.send_response(302)
                    self.send_header("Location", owner.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = (b"<html>oops</html>" if owner.mode == "garbage"
                        else json.dumps({"keys": [k.jwk for k in owner.keys]}).encode())
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def rsa_key() -> KeyPair:
    return KeyPair("rsa-1", "RS256")


@pytest.fixture(scope="module")
def ec_key() -> KeyPair:
    return KeyPair("ec-1", "ES256")


@pytest.fixture(scope="module")
def new_rsa_key() -> KeyPair:
    return KeyPair("rsa-2", "RS256")


@pytest.fixture
def idp(rsa_key: KeyPair, ec_key: KeyPair) -> Iterator[JwksServer]:
    server = JwksServer([rsa_key, ec_key])
    yield server
    server.stop()


@pytest.fixture
def jwks_bus(bus_factory, idp):
    """``jwks_bus(**settings)`` -> (bus, plugin); the plugin's keys use a test clock
    (``plugin.clock``) and a 1 s timeout."""
    def build(**settings: Any):
        settings = {"secret_key": SECRET, "jwks_url": idp.url, "jwt_issuer": ISSUER,
                    "jwt_audience": [AUDIENCE], **settings}
        plugin = AuthPlugin()
        bus = bus_factory([plugin], Config(**settings))
        plugin.clock = Clock()
        plugin.jwks.keys = JwksKeys(idp.url, settings.get("jwks_cache_seconds", 300.0), timeout=1.0,
                                    clock=plugin.clock)
        return bus, plugin
    return build


def refusal(bus, token: str) -> AuthError:
    with pytest.raises(AuthError) as info:
        bus.authenticate({"token": token})
    return info.value


# -- tokens that pass ---------------------------------------------------------------

def test_rs256_and_es256_tokens_sign_in(jwks_bus, idp, rsa_key, ec_key):
    bus, _ = jwks_bus()
    for key in (rsa_key, ec_key):
        identity = bus.authenticate({"token": key.token(sub=f"user-{key.alg}")})
        assert identity.user_id == f"user-{key.alg}"
        assert identity.roles == {"publisher"} and identity.strategy == "jwks"
        assert identity.claims["iss"] == ISSUER
    assert idp.fetches == 1  # one fetch, then the cache


def test_the_builtin_strategies_keep_working_next_to_it(jwks_bus, idp, rsa_key):
    bus, _ = jwks_bus(api_keys={"k" * 24: ("svc", ("publisher",))})
    assert bus.authenticate({"token": create_token(SECRET, "bob", ["admin"])}).strategy == "jwt"
    assert bus.authenticate({"token": "k" * 24}).strategy == "api_key"
    assert idp.fetches == 0  # not a token from the identity provider: its keys are not asked
    assert bus.authenticate({"token": rsa_key.token()}).strategy == "jwks"


def test_an_identity_provider_token_is_decided_by_the_jwks_strategy_alone(jwks_bus, rsa_key):
    bus, _ = jwks_bus(auth_validator=f"{__name__}:_accept_everything")
    assert bus.authenticate({"token": "opaque-session-token"}).user_id == "anyone"  # the validator is asked
    forged = KeyPair(rsa_key.kid, "RS256").token(roles=["admin"])  # same kid, other key
    error = refusal(bus, forged)
    assert error.code == "unauthorized" and "Signature verification failed" in str(error)


def _accept_everything(token: str) -> dict[str, Any]:
    return {"sub": "anyone", "roles": ["admin"]}


# -- tokens that are refused -------------------------------------------------------

def test_wrong_issuer_is_refused_and_the_identity_provider_is_not_asked(jwks_bus, idp, rsa_key):
    bus, _ = jwks_bus()
    error = refusal(bus, rsa_key.token(iss="https://evil.example.com/"))
    assert error.code == "unauthorized"
    assert idp.fetches == 0
    assert refusal(bus, rsa_key.token(iss=ISSUER + "/")).code == "unauthorized"  # exact match only
    assert bus.authenticate({"token": rsa_key.token()}).user_id == "alice"


def test_wrong_or_missing_audience_is_refused(jwks_bus, rsa_key):
    bus, _ = jwks_bus()
    assert "audience" in str(refusal(bus, rsa_key.token(aud="another-api")))
    assert "aud" in str(refusal(bus, rsa_key.token(aud=None)))
    assert bus.authenticate({"token": rsa_key.token(aud=["another-api", AUDIENCE])}).user_id == "alice"


def test_any_audience_only_when_asked_for(jwks_bus, rsa_key):
    bus, _ = jwks_bus(jwt_audience=["*"])
    assert bus.authenticate({"token": rsa_key.token(aud="whatever")}).user_id == "alice"
    assert bus.authenticate({"token": rsa_key.token(aud=None)}).user_id == "alice"


def test_a_cognito_access_token_names_its_client_in_client_id(jwks_bus, rsa_key):
    bus, _ = jwks_bus(jwt_audience=["app-client-1"], jwt_roles_claim=["cognito:groups"])
    token = rsa_key.token(aud=None, client_id="app-client-1", token_use="access",
                          **{"cognito:groups": ["publisher"]})
    assert bus.authenticate({"token": token}).roles == {"publisher"}
    assert "client_id" in str(refusal(bus, rsa_key.token(aud=None, client_id="another-client")))


def test_expiry_not_before_and_issued_at_with_leeway(jwks_bus, rsa_key):
    bus, _ = jwks_bus(jwt_leeway=10)
    now = int(time.time())
    assert refusal(bus, rsa_key.token(exp=now - 60)).code == "token_expired"
    assert bus.authenticate({"token": rsa_key.token(exp=now - 3)}).user_id == "alice"  # leeway
    assert "not yet valid" in str(refusal(bus, rsa_key.token(nbf=now + 60)))
    assert "not yet valid" in str(refusal(bus, rsa_key.token(iat=now + 60)))
    assert bus.authenticate({"token": rsa_key.token(nbf=now + 3, iat=now + 3)}).user_id == "alice"
    assert "'exp'" in str(refusal(bus, rsa_key.token(exp=None)))


def test_alg_none_is_refused(jwks_bus, rsa_key):
    bus, _ = jwks_bus()
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": int(time.time()) + 300,
              "roles": ["admin"]}
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": rsa_key.kid})
    assert refusal(bus, unsigned).code == "unauthorized"
    signed = jwt.encode(claims, rsa_key.private, algorithm="RS256", headers={"kid": rsa_key.kid})
    assert bus.authenticate({"token": signed}).user_id == "mallory"  # the same claims, signed
    header, _, signature = signed.split(".")
    none_header = base64.urlsafe_b64encode(b'{"alg":"none","kid":"rsa-1"}').rstrip(b"=").decode()
    assert refusal(bus, signed.replace(header, none_header, 1)).code == "unauthorized"
    assert refusal(bus, signed.removesuffix(signature)).code == "unauthorized"  # signature stripped


def _hmac_token(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    def part(value: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    signing_input = f"{part(header)}.{part(claims)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


@pytest.mark.parametrize("alg", ["HS256", "RS256"])
def test_hs256_signed_with_the_public_key_is_refused(jwks_bus, idp, rsa_key, alg):
    """Algorithm confusion: an HMAC over the token keyed with the published public key (PEM
    or the JWK's JSON), whether the header admits HS256 or claims RS256."""
    bus, _ = jwks_bus()
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": int(time.time()) + 300,
              "roles": ["admin"]}
    for secret in (rsa_key.public_pem, json.dumps(rsa_key.jwk).encode()):
        token = _hmac_token({"alg": alg, "typ": "JWT", "kid": rsa_key.kid}, claims, secret)
        assert refusal(bus, token).code == "unauthorized"
    assert bus.authenticate({"token": rsa_key.token()}).user_id == "alice"


def test_a_deeply_nested_token_header_is_refused_not_raised(jwks_bus):
    bus, _ = jwks_bus()
    header = base64.urlsafe_b64encode(b'{"alg":' + b"[" * 5000 + b"]" * 5000 + b"}").rstrip(b"=").decode()
    assert bus.authenticate({"token": header + ".e30.c2ln"}) is None  # not a token: no RecursionError


def test_a_token_without_kid_is_refused_with_a_clear_message(jwks_bus, rsa_key):
    bus, _ = jwks_bus()
    assert "'kid'" in str(refusal(bus, rsa_key.token(kid=None)))


def test_a_missing_or_empty_user_claim_is_refused(jwks_bus, rsa_key):
    bus, _ = jwks_bus()
    assert "'sub'" in str(refusal(bus, rsa_key.token(sub=None)))
    assert "'sub'" in str(refusal(bus, rsa_key.token(sub="")))
    bus, _ = jwks_bus(jwt_user_claim="email")
    assert bus.authenticate({"token": rsa_key.token(email="alice@example.com")}).user_id == "alice@example.com"


# -- keys: unknown kid, rotation, cache, outage ------------------------------------

def test_unknown_kid_refetches_once_then_is_refused_and_refetches_are_rate_limited(jwks_bus, idp, rsa_key):
    bus, plugin = jwks_bus()
    bus.authenticate({"token": rsa_key.token()})
    assert idp.fetches == 1
    stranger = KeyPair("who-knows", "RS256")
    assert "kid" in str(refusal(bus, stranger.token()))
    assert idp.fetches == 2  # one early refetch
    for n in range(20):  # made-up kids inside the interval: no more requests
        refusal(bus, stranger.token(kid=f"forged-{n}"))
    assert idp.fetches == 2
    counters = plugin.jwks.keys.counters
    assert counters["refetches"] == 1 and counters["refetches_limited"] == 20 and counters["unknown_kid"] == 21
    plugin.clock.now += 30  # the interval has passed: one more refetch
    refusal(bus, stranger.token())
    assert idp.fetches == 3


def test_rotation_new_key_accepted_after_one_refetch_old_one_refused(jwks_bus, idp, rsa_key, new_rsa_key):
    bus, _ = jwks_bus()
    old_token = rsa_key.token()
    assert bus.authenticate({"token": old_token}).user_id == "alice"
    idp.keys = [new_rsa_key]  # the provider rotates: new key published, old one removed
    assert bus.authenticate({"token": new_rsa_key.token(sub="bob")}).user_id == "bob"
    assert idp.fetches == 2
    assert bus.authenticate({"token": new_rsa_key.token(sub="carol")}).user_id == "carol"
    assert idp.fetches == 2  # the new set is cached
    assert "kid" in str(refusal(bus, old_token))  # its key is gone from the fetched set


def test_keys_are_fetched_again_when_the_cache_expires(jwks_bus, idp, rsa_key):
    bus, plugin = jwks_bus(jwks_cache_seconds=60)
    bus.authenticate({"token": rsa_key.token()})
    plugin.clock.now += 59
    bus.authenticate({"token": rsa_key.token()})
    assert idp.fetches == 1
    plugin.clock.now += 2
    bus.authenticate({"token": rsa_key.token()})
    assert idp.fetches == 2


@pytest.mark.parametrize("mode", ["stopped", "error", "garbage"])
def test_jwks_down_is_refused_counted_logged_once_and_recovers(jwks_bus, idp, rsa_key, caplog, mode):
    bus, plugin = jwks_bus()
    if mode == "stopped":
        idp.stop()
    else:
        idp.mode = mode
    caplog.set_level(logging.INFO, logger="eventbus.auth")
    tokens = [rsa_key.token(sub=f"user-{n}") for n in range(5)]
    for token in tokens:
        error = refusal(bus, token)
        assert error.code == "unauthorized" and "unavailable" in str(error)
    counters = plugin.jwks.keys.counters
    assert counters["fetch_failures"] == 1 and counters["unavailable"] == 5  # retried after 5 s only
    plugin.clock.now += 5
    refusal(bus, tokens[0])
    assert counters["fetch_failures"] == 2
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "unavailable" in warnings[0].getMessage()  # once per outage
    assert all(r.exc_info is None for r in caplog.records)  # no traceback
    assert not any(token in caplog.text for token in tokens)
    if mode == "stopped":
        return
    idp.mode = "ok"
    plugin.clock.now += 5
    assert bus.authenticate({"token": tokens[0]}).user_id == "user-0"
    assert "answers again" in caplog.text


def test_a_jwks_that_does_not_answer_is_given_up_after_the_timeout(jwks_bus, idp, rsa_key):
    bus, _ = jwks_bus()  # timeout 1 s
    idp.mode = "hang"
    started = time.monotonic()
    assert "unavailable" in str(refusal(bus, rsa_key.token()))
    assert time.monotonic() - started < 3


def test_a_redirect_to_other_keys_is_not_followed(jwks_bus, idp, rsa_key):
    attacker = KeyPair(rsa_key.kid, "RS256")
    elsewhere = JwksServer([attacker])
    try:
        bus, _ = jwks_bus()
        idp.mode, idp.redirect_to = "redirect", elsewhere.url
        assert "unavailable" in str(refusal(bus, attacker.token(roles=["admin"])))
        assert elsewhere.fetches == 0
    finally:
        elsewhere.stop()


def test_a_pyjwt_that_follows_redirects_stops_start_up(bus_factory, idp, monkeypatch):
    monkeypatch.setattr(jwt, "__version__", "2.13.0")
    config = Config(secret_key=SECRET, jwks_url=idp.url, jwt_issuer=ISSUER, jwt_audience=[AUDIENCE])
    with pytest.raises(ConfigError, match=r"EVENTBUS_JWKS_URL: needs PyJWT >= 2.14"):
        bus_factory([AuthPlugin()], config)


# -- claims: roles, role map, sessions ---------------------------------------------

def test_claim_paths_literal_key_first_then_dotted():
    claims = {"realm_access": {"roles": ["a"]}, "https://example.com/roles": ["b"],
              "https://example.com/claims": {"roles": ["c"]}, "resource_access": {"my.app": {"roles": ["d"]}},
              "cognito:groups": ["e"], "scope": "read write"}
    assert claim_at(claims, "realm_access.roles") == ["a"]
    assert claim_at(claims, "https://example.com/roles") == ["b"]
    assert claim_at(claims, "https://example.com/claims.roles") == ["c"]
    assert claim_at(claims, "resource_access.my.app.roles") == ["d"]
    assert claim_at(claims, "cognito:groups") == ["e"]
    assert claim_at(claims, "realm_access.missing") is None and claim_at(claims, "scope.x") is None
    assert roles_from("read write,admin", "scope") == ["read", "write", "admin"]
    with pytest.raises(AuthError):
        roles_from({"admin": True}, "roles")


def test_nested_roles_claim_and_role_map(jwks_bus, rsa_key):
    bus, _ = jwks_bus(jwt_roles_claim=["realm_access.roles", "https://example.com/roles"],
                      jwt_role_map={"eventbus-admin": ["admin"], "writer": ["publisher", "agent"]})
    token = rsa_key.token(roles=None, realm_access={"roles": ["eventbus-admin", "offline_access"]},
                          **{"https://example.com/roles": ["writer"]})
    assert bus.authenticate({"token": token}).roles == {"admin", "publisher", "agent"}
    # With a map only mapped roles count: an IdP role named "admin" is not eventbus admin.
    token = rsa_key.token(roles=None, realm_access={"roles": ["admin"]})
    assert bus.authenticate({"token": token}).roles == frozenset()


def test_roles_from_a_scope_string_and_malformed_roles(jwks_bus, rsa_key):
    bus, _ = jwks_bus(jwt_roles_claim=["scope"])
    assert bus.authenticate({"token": rsa_key.token(scope="openid publisher")}).roles == {"openid", "publisher"}
    bus, _ = jwks_bus()
    assert "roles" in str(refusal(bus, rsa_key.token(roles=[1, 2])))


def test_the_sessions_claim_keeps_working(jwks_bus, rsa_key):
    bus, _ = jwks_bus()
    identity = bus.authenticate({"token": rsa_key.token(sessions=["s-1", "s-2"])})
    assert listed_sessions(identity) == {"s-1", "s-2"}
    assert "sessions" in str(refusal(bus, rsa_key.token(sessions={"s-1": True})))


# -- settings ----------------------------------------------------------------------

def _env(isolated_env: dict[str, str], **values: str) -> dict[str, str]:
    base = {"EVENTBUS_JWKS_URL": "https://idp.example.com/jwks", "EVENTBUS_JWT_ISSUER": ISSUER,
            "EVENTBUS_JWT_AUDIENCE": AUDIENCE}
    base.update(values)
    return {**isolated_env, **{k: v for k, v in base.items() if v is not None}}


def test_settings_are_parsed(isolated_env):
    config = started_config(_env(isolated_env, EVENTBUS_JWT_AUDIENCE="a, b",
                                  EVENTBUS_JWT_ALGORITHMS="RS256,PS256,ES384",
                                  EVENTBUS_JWT_ROLES_CLAIM="realm_access.roles,https://example.com/roles",
                                  EVENTBUS_JWT_ROLE_MAP="eventbus-admin=admin,writer=publisher+agent,writer=admin",
                                  EVENTBUS_JWKS_CACHE_SECONDS="60", EVENTBUS_JWT_LEEWAY="0"))
    assert config.jwt_audience == ["a", "b"] and config.jwt_algorithms == ["RS256", "PS256", "ES384"]
    assert config.jwt_roles_claim == ["realm_access.roles", "https://example.com/roles"]
    assert config.jwt_role_map == {"eventbus-admin": ["admin"], "writer": ["publisher", "agent", "admin"]}
    assert config.jwks_cache_seconds == 60 and config.jwt_leeway == 0 and config.jwt_user_claim == "sub"
    assert started_config(isolated_env).jwks_url is None
    for local in ("http://localhost:8080/jwks", "http://127.0.0.1/jwks", "http://[::1]:9/jwks"):
        assert started_config(_env(isolated_env, EVENTBUS_JWKS_URL=local)).jwks_url == local


@pytest.mark.parametrize("values,message", [
    ({"EVENTBUS_JWT_ISSUER": None}, "EVENTBUS_JWT_ISSUER: required with EVENTBUS_JWKS_URL"),
    ({"EVENTBUS_JWT_AUDIENCE": None}, "EVENTBUS_JWT_AUDIENCE: required with EVENTBUS_JWKS_URL"),
    ({"EVENTBUS_JWT_AUDIENCE": "*,eventbus"}, "EVENTBUS_JWT_AUDIENCE: '*'"),
    ({"EVENTBUS_JWT_ALGORITHMS": "RS256,HS256"}, "EVENTBUS_JWT_ALGORITHMS: 'HS256' is refused"),
    ({"EVENTBUS_JWT_ALGORITHMS": "none"}, "EVENTBUS_JWT_ALGORITHMS: 'none' is refused"),
    ({"EVENTBUS_JWT_ALGORITHMS": "RS257"}, "EVENTBUS_JWT_ALGORITHMS: unknown algorithm"),
    ({"EVENTBUS_JWKS_URL": "http://idp.example.com/jwks"}, "EVENTBUS_JWKS_URL: expected an https:// URL"),
    ({"EVENTBUS_JWKS_URL": "file:///etc/passwd"}, "EVENTBUS_JWKS_URL: expected an https:// URL"),
    ({"EVENTBUS_JWT_ROLE_MAP": "admin"}, "EVENTBUS_JWT_ROLE_MAP: expected IDP_ROLE=ROLE"),
    ({"EVENTBUS_JWT_ROLE_MAP": "x=bad role"}, "EVENTBUS_JWT_ROLE_MAP: expected eventbus role names"),
    ({"EVENTBUS_JWKS_URL": None}, "EVENTBUS_JWT_ISSUER: set EVENTBUS_JWKS_URL too"),
])
def test_bad_settings_stop_start_up_naming_the_variable(isolated_env, values, message):
    with pytest.raises(ConfigError) as info:
        started_config(_env(isolated_env, **values))
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_a_role_map_to_an_unknown_role_stops_start_up(bus_factory, idp):
    config = Config(secret_key=SECRET, jwks_url=idp.url, jwt_issuer=ISSUER, jwt_audience=[AUDIENCE],
                    jwt_role_map={"writer": ["publishr"]})
    with pytest.raises(ConfigError, match="EVENTBUS_JWT_ROLE_MAP: writer=publishr: unknown role"):
        bus_factory([AuthPlugin()], config)
    config.roles = ["publishr"]  # declared with EVENTBUS_ROLES: accepted
    bus_factory([AuthPlugin()], config)


def test_a_directly_built_config_is_checked_too(bus_factory, idp):
    with pytest.raises(ConfigError, match="EVENTBUS_JWT_ALGORITHMS: 'HS256' is refused"):
        bus_factory([AuthPlugin()], Config(secret_key=SECRET, jwks_url=idp.url, jwt_issuer=ISSUER,
                                           jwt_audience=[AUDIENCE], jwt_algorithms=["HS256"]))
