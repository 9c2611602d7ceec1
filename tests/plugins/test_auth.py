"""Authentication strategies, the default authorization rules and ``eventbus token create``."""

from __future__ import annotations

import os
import stat
import sys
import time
import uuid

import jwt
import pytest
from click.testing import CliRunner

import eventbus_auth
from eventbus import AuthError, Config, ConfigError, Identity, hookimpl
from eventbus.cli import build_cli
from eventbus.testing import started_config
from eventbus_auth import AuthPlugin, MemoryOwners, RedisOwners, create_token

SECRET = "s" * 40
API_KEY = "k" * 24


@pytest.fixture
def auth_bus(bus_factory):
    def build(**settings):
        settings.setdefault("secret_key", SECRET)
        return bus_factory([AuthPlugin()], Config(**settings))
    return build


def refusal(bus, auth) -> AuthError:
    with pytest.raises(AuthError) as info:
        bus.authenticate(auth)
    return info.value


def test_a_valid_token_gives_user_and_roles(auth_bus):
    bus = auth_bus()
    identity = bus.authenticate({"token": create_token(SECRET, "alice", ["admin", "publisher"])})
    assert identity.user_id == "alice"
    assert identity.roles == {"admin", "publisher"}
    assert identity.strategy == "jwt"
    assert bus.authenticate({"token": "Bearer " + create_token(SECRET, "bob")}).user_id == "bob"


def test_expired_token(auth_bus):
    bus = auth_bus()
    token = jwt.encode({"sub": "alice", "exp": int(time.time()) - 60}, SECRET, algorithm="HS256")
    error = refusal(bus, {"token": token})
    assert error.code == "token_expired"


def test_expiry_has_ten_seconds_of_leeway(auth_bus):
    bus = auth_bus()
    token = jwt.encode({"sub": "alice", "exp": int(time.time()) - 3}, SECRET, algorithm="HS256")
    assert bus.authenticate({"token": token}).user_id == "alice"


@pytest.mark.parametrize("claims,message", [
    ({"exp": 2**40}, "sub"),
    ({"sub": "alice"}, "exp"),
    ({"sub": "", "exp": 2**40}, "sub"),
    ({"sub": "alice", "roles": "admin,other", "exp": 2**40}, None),
    ({"sub": "alice", "roles": [1, 2], "exp": 2**40}, "roles"),
])
def test_missing_or_bad_claims(auth_bus, claims, message):
    bus = auth_bus()
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    if message is None:  # a single string is one role, not a list to split
        assert bus.authenticate({"token": token}).roles == {"admin,other"}
        return
    error = refusal(bus, {"token": token})
    assert error.code == "unauthorized" and message in str(error)


def test_wrong_signature_and_wrong_algorithm(auth_bus):
    bus = auth_bus()
    assert refusal(bus, {"token": create_token("another-secret-of-at-least-32-bytes!", "alice")}).code == "unauthorized"
    unsigned = jwt.encode({"sub": "alice", "exp": 2**40}, None, algorithm="none")
    assert refusal(bus, {"token": unsigned}).code == "unauthorized"


def test_malformed_jwt_is_refused_but_other_tokens_are_left_to_others(auth_bus):
    bus = auth_bus()
    header = create_token(SECRET, "alice").split(".")[0]
    assert refusal(bus, {"token": header + ".garbage.garbage"}).code == "unauthorized"
    assert bus.authenticate({"token": "not-a-jwt"}) is None
    assert bus.authenticate({"token": "a.b.c"}) is None  # three parts but no JWT header
    assert bus.authenticate({}) is None
    assert bus.authenticate({"token": 42}) is None


def test_api_keys(auth_bus):
    bus = auth_bus(api_keys={API_KEY: ("ingest", ("publisher",)), "o" * 20: ("ops", ("admin",))})
    identity = bus.authenticate({"api_key": API_KEY})
    assert (identity.user_id, identity.roles, identity.strategy) == ("ingest", {"publisher"}, "api_key")
    assert API_KEY not in repr(identity.claims)
    assert bus.authenticate({"token": "o" * 20}).user_id == "ops"  # e.g. a Bearer header


def test_unknown_api_key(auth_bus):
    bus = auth_bus(api_keys={API_KEY: ("ingest", ("publisher",))})
    assert refusal(bus, {"api_key": "x" * 24}).code == "unauthorized"
    assert refusal(bus, {"api_key": API_KEY[:-1]}).code == "unauthorized"
    assert bus.authenticate({"token": "x" * 24}) is None


def test_api_keys_compare_against_every_key_in_constant_time(auth_bus, monkeypatch):
    bus = auth_bus(api_keys={API_KEY: ("a", ()), "b" * 20: ("b", ()), "c" * 20: ("c", ())})
    calls = []
    real = eventbus_auth.strategies.hmac.compare_digest
    monkeypatch.setattr(eventbus_auth.strategies.hmac, "compare_digest",
                        lambda a, b: calls.append(b) or real(a, b))
    bus.authenticate({"api_key": API_KEY})
    assert len(calls) == 3  # no early exit on the first (matching) key


@pytest.fixture
def validator_module(tmp_path, monkeypatch):
    (tmp_path / "company_auth.py").write_text(
        "from eventbus import AuthError\n"
        "def validate(token):\n"
        "    if token == 'session-alice':\n"
        "        return {'user_id': 'alice', 'roles': ['admin'], 'team': 'red'}\n"
        "    if token == 'session-bob':\n"
        "        return {'sub': 'bob'}\n"
        "    if token == 'session-nameless':\n"
        "        return {'roles': ['admin']}\n"
        "    if token == 'session-banned':\n"
        "        raise AuthError('banned', code='forbidden')\n"
        "    if token == 'session-crash':\n"
        "        raise RuntimeError('database down')\n"
        "    return None\n"
        "NOT_CALLABLE = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "company_auth"
    sys.modules.pop("company_auth", None)


def test_validator_adapter(auth_bus, validator_module):
    bus = auth_bus(auth_validator=f"{validator_module}:validate")
    alice = bus.authenticate({"token": "session-alice"})
    assert (alice.user_id, alice.roles, alice.strategy) == ("alice", {"admin"}, "validator")
    assert alice.claims["team"] == "red"
    assert bus.authenticate({"token": "session-bob"}).roles == frozenset()
    assert refusal(bus, {"token": "session-nameless"}).code == "unauthorized"
    assert refusal(bus, {"token": "session-banned"}).code == "forbidden"
    crash = refusal(bus, {"token": "session-crash"})
    assert crash.code == "unauthorized" and "database" not in str(crash)
    assert bus.authenticate({"token": "unknown"}) is None


def test_validator_goes_first_and_declining_falls_through_to_jwt_and_keys(auth_bus, validator_module):
    bus = auth_bus(auth_validator=f"{validator_module}:validate", api_keys={API_KEY: ("k", ())})
    assert bus.authenticate({"token": create_token(SECRET, "carol")}).strategy == "jwt"
    assert bus.authenticate({"token": API_KEY}).strategy == "api_key"


@pytest.mark.parametrize("spec", ["no_such_module_here:validate", "company_auth:missing",
                                  "company_auth", "company_auth:NOT_CALLABLE"])
def test_validator_import_errors_stop_configuration(bus_factory, validator_module, spec):
    with pytest.raises(ConfigError, match="EVENTBUS_AUTH_VALIDATOR"):
        bus_factory([AuthPlugin()], Config(auth_validator=spec))


def admin() -> Identity:
    return Identity("root", frozenset({"admin"}))


@pytest.mark.parametrize("identity,namespace,action,allowed", [
    (Identity("u"), "/chat", "connect", True),
    (Identity("u"), "/monitoring", "join", True),
    (Identity("u"), "/chat", "publish", True),
    (Identity("u"), "/admin", "connect", False),
    (Identity("u", frozenset({"publisher"})), "/admin", "connect", False),
    (admin(), "/admin", "connect", True),
    (Identity("u"), "/monitoring", "admin", False),
    (admin(), "/monitoring", "admin", True),
    (Identity("u"), "http", "publish", False),
    (Identity("u", frozenset({"publisher"})), "http", "publish", True),
    (admin(), "http", "publish", True),
    (Identity("u"), "http", "history", True),
])
def test_default_authorization(auth_bus, identity, namespace, action, allowed):
    assert auth_bus().authorize(identity, namespace, None, action) is allowed


def test_another_plugin_overrides_the_default_rules(bus_factory):
    class OpenAdmin:
        @hookimpl
        def eventbus_authorize(self, identity, namespace, room, action):
            return True if namespace == "/admin" else None

    bus = bus_factory([AuthPlugin(), OpenAdmin()], Config(secret_key=SECRET))
    assert bus.authorize(Identity("u"), "/admin", None, "connect") is True
    assert bus.authorize(Identity("u"), "http", None, "publish") is False  # the default still decides


def test_the_module_plugin_uses_the_configured_bus(bus_factory):
    bus = bus_factory([eventbus_auth], Config(secret_key=SECRET))
    assert bus.authenticate({"token": create_token(SECRET, "dora", ["admin"])}).user_id == "dora"
    assert bus.authorize(admin(), "/admin", "admin", "join") is True
    assert "eventbus_authenticate" in bus.pm.describe()[0]["hooks"]


@pytest.fixture
def token_cli(isolated_env, tmp_path):
    def run(*args, config=None):
        config = config or Config(data_dir=str(tmp_path / "data"), load_plugins=["eventbus_auth"])
        group, state = build_cli(config)
        return CliRunner().invoke(group, list(args), obj=state, catch_exceptions=False), config
    return run


def test_token_create_prints_only_the_token_and_keeps_the_secret_private(token_cli, tmp_path):
    result, _config = token_cli("token", "create", "--user", "alice", "--role", "admin", "--role", "publisher")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert result.stdout == token + "\n"
    secret_file = tmp_path / "data" / "secret_key"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    claims = jwt.decode(token, secret_file.read_text().strip(), algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["roles"] == ["admin", "publisher"]
    assert 24 * 3600 - 5 <= claims["exp"] - time.time() <= 24 * 3600

    again, _ = token_cli("token", "create", "--user", "bob", "--ttl", "60")
    claims = jwt.decode(again.stdout.strip(), secret_file.read_text().strip(), algorithms=["HS256"])
    assert claims["roles"] == [] and claims["exp"] - time.time() <= 60


def test_token_create_uses_the_configured_secret_and_validates_input(token_cli, tmp_path):
    config = Config(secret_key=SECRET, data_dir=str(tmp_path / "unused"), load_plugins=["eventbus_auth"])
    result, _ = token_cli("token", "create", "--user", "eve", config=config)
    assert jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])["sub"] == "eve"
    assert not (tmp_path / "unused").exists()
    missing, _ = token_cli("token", "create")
    assert missing.exit_code == 2 and "--user" in missing.output
    bad_ttl, _ = token_cli("token", "create", "--user", "eve", "--ttl", "0")
    assert bad_ttl.exit_code == 2


def test_token_create_through_main_with_the_environment(isolated_env, tmp_path, monkeypatch, capsys):
    from eventbus.cli import main
    monkeypatch.setenv("EVENTBUS_LOAD_PLUGINS", "eventbus_auth")
    monkeypatch.setenv("EVENTBUS_SECRET_KEY", SECRET)
    with pytest.raises(SystemExit) as info:
        main(["token", "create", "--user", "frank", "--role", "publisher"])
    assert info.value.code == 0
    token = capsys.readouterr().out.strip()
    assert jwt.decode(token, SECRET, algorithms=["HS256"])["roles"] == ["publisher"]


# -- private chat sessions --------------------------------------------------------------------

def user(name: str, *roles: str, **claims) -> Identity:
    return Identity(name, frozenset(roles), {"sub": name, **claims})


def test_a_session_belongs_to_its_first_user(auth_bus):
    bus = auth_bus()
    assert bus.authorize(user("alice"), "/chat", "session:s-1", "join") is True
    assert bus.authorize(user("bob"), "/chat", "session:s-1", "join") is False
    assert bus.authorize(user("bob"), "/chat", "session:s-1", "publish") is False
    assert bus.authorize(user("bob"), "/chat", "session:s-1", "history") is False
    assert bus.authorize(user("alice"), "/chat", "session:s-1", "history") is True
    assert bus.authorize(user("alice"), "/chat", "session:s-1", "publish") is True
    # Publishing claims a free session too; reading history never does.
    assert bus.authorize(user("bob"), "/chat", "session:s-2", "publish") is True
    assert bus.authorize(user("alice"), "/chat", "session:s-2", "join") is False
    assert bus.authorize(user("bob"), "/chat", "session:s-3", "history") is False
    assert bus.authorize(user("carol"), "/chat", "session:s-3", "join") is True
    # Other rooms and actions are not session business.
    assert bus.authorize(user("bob"), "/monitoring", "monitoring", "join") is True
    assert bus.authorize(user("bob"), "/chat", None, "connect") is True


def test_admins_and_agents_use_any_session_without_claiming_it(auth_bus):
    bus = auth_bus()
    for identity in (user("root", "admin"), user("bot", "agent")):
        for action in ("join", "publish", "history"):
            assert bus.authorize(identity, "/chat", "session:free", action) is True
    assert bus.authorize(user("alice"), "/chat", "session:free", "join") is True  # still free
    assert bus.authorize(user("bob", "publisher"), "/chat", "session:free", "join") is False


def test_a_token_that_lists_sessions_is_limited_to_them(auth_bus):
    bus = auth_bus()
    assert bus.authorize(user("alice"), "/chat", "session:s-1", "join") is True
    member = user("bob", sessions=["s-1", "s-2"])
    assert bus.authorize(member, "/chat", "session:s-1", "join") is True  # alice's, but listed
    assert bus.authorize(member, "/chat", "session:s-1", "history") is True
    assert bus.authorize(member, "/chat", "session:s-9", "join") is False  # free, but not listed
    assert bus.authorize(member, "/chat", "session:s-2", "join") is True  # listed and claimed for bob
    assert bus.authorize(user("carol"), "/chat", "session:s-2", "join") is False
    assert bus.authorize(user("dave", sessions="s-3"), "/chat", "session:s-3", "join") is True
    assert bus.authorize(user("erin", sessions=[1, 2]), "/chat", "session:s-4", "join") is False


def test_a_malformed_sessions_claim_is_refused_when_signing_in(auth_bus):
    bus = auth_bus()
    bad = jwt.encode({"sub": "alice", "sessions": {"s-1": True}, "exp": 2**40}, SECRET, algorithm="HS256")
    error = refusal(bus, {"token": bad})
    assert error.code == "unauthorized" and "sessions" in str(error)
    good = bus.authenticate({"token": create_token(SECRET, "alice", sessions=["s-1"])})
    assert good.claims["sessions"] == ["s-1"]


def test_open_mode_and_act_as(auth_bus):
    bus = auth_bus(chat_sessions="open")
    assert bus.authorize(user("alice"), "/chat", "session:s-1", "join") is True
    assert bus.authorize(user("bob"), "/chat", "session:s-1", "join") is True
    assert bus.authorize(user("bob", "publisher"), "http", "session:s-1", "act_as") is False
    assert bus.authorize(user("bot", "agent"), "http", "session:s-1", "act_as") is True
    assert bus.authorize(user("root", "admin"), "http", None, "act_as") is True
    assert eventbus_auth.default_authorize(user("bob"), "/chat", "session:x", "join") is True  # no rules given


def test_the_module_plugin_keeps_owners_per_configured_bus(bus_factory):
    first = bus_factory([eventbus_auth], Config(secret_key=SECRET))
    assert first.authorize(user("alice"), "/chat", "session:s-1", "join") is True
    assert first.authorize(user("bob"), "/chat", "session:s-1", "join") is False
    second = bus_factory([eventbus_auth], Config(secret_key=SECRET))  # a new server: owners start empty
    assert second.authorize(user("bob"), "/chat", "session:s-1", "join") is True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_memory_owners_lapse_after_the_ttl_since_last_use():
    clock = Clock()
    owners = MemoryOwners(ttl=60, clock=clock)
    assert owners.use("s", "alice", claim=True) == "alice"
    clock.now += 50
    assert owners.use("s", "alice", claim=False) == "alice"  # a use renews
    clock.now += 50
    assert owners.use("s", "bob", claim=True) == "alice"  # 100 s after the claim, 50 after the use
    clock.now += 61
    assert owners.use("s", "bob", claim=True) == "bob"
    assert owners.counters["lapsed"] == 1


def test_memory_owners_are_bounded_and_never_drop_a_live_claim():
    clock = Clock()
    owners = MemoryOwners(ttl=60, max_sessions=3, max_per_user=2, clock=clock)
    assert owners.use("a1", "alice", claim=True) == "alice"
    assert owners.use("a2", "alice", claim=True) == "alice"
    assert owners.use("a3", "alice", claim=True) is None  # alice holds her share
    assert owners.counters["user_full"] == 1
    assert owners.use("b1", "bob", claim=True) == "bob"
    assert owners.use("c1", "carol", claim=True) is None  # full of live claims: refused
    assert owners.counters["full"] == 1 and len(owners) == 3
    assert owners.use("a1", "alice", claim=False) == "alice"  # nothing live was dropped
    clock.now += 61  # every claim lapses: room again, and alice's share is free
    assert owners.use("c1", "carol", claim=True) == "carol"
    assert owners.use("a3", "alice", claim=True) == "alice"
    assert len(owners) == 2


def test_the_cache_of_redis_owners_forgets_the_least_recently_used():
    owners = MemoryOwners(ttl=60, max_sessions=2)
    for session in ("s1", "s2", "s3"):
        owners.remember(session, "alice", 60)
    assert len(owners) == 2 and owners.counters["evicted"] == 1
    assert owners.use("s1", "alice", claim=False) is None
    assert owners.use("s3", "alice", claim=False) == "alice"


class FakeScript:
    """Stands for a registered Lua script over a dict, or fails like a lost connection."""

    def __init__(self, store: dict, claim: bool, down: list[bool]):
        self.store, self.claim, self.down = store, claim, down

    def __call__(self, keys, args):
        import redis

        if self.down[0]:
            raise redis.exceptions.ConnectionError("connection refused")
        key, user_id = keys[0], args[0]
        if self.claim:
            self.store.setdefault(key, user_id)
        return self.store.get(key)


class FakeRedis:
    def __init__(self) -> None:
        self.store: dict = {}
        self.down = [False]
        self.scripts = iter((True, False))

    def register_script(self, source):
        return FakeScript(self.store, next(self.scripts), self.down)


def test_redis_owners_while_redis_is_away_let_known_owners_in_and_claim_nothing():
    pytest.importorskip("redis")
    fake = FakeRedis()
    owners = RedisOwners("redis://unused", "{p}", ttl=60, client=fake)
    assert owners.use("s-1", "alice", claim=True) == "alice"
    assert fake.store == {"{p}:session-owner:s-1": "alice"}
    fake.down[0] = True
    assert owners.use("s-1", "alice", claim=True) == "alice"  # known from before
    assert owners.use("s-1", "bob", claim=True) == "alice"
    assert owners.use("s-2", "bob", claim=True) is None  # no claim while other servers cannot see it
    assert owners.counters["errors"] == 3
    fake.down[0] = False
    assert owners.use("s-2", "bob", claim=True) == "bob"


@pytest.mark.redis
def test_redis_owners_claim_once_and_renew_in_a_real_redis():
    redis = pytest.importorskip("redis")
    url = os.environ.get("EVENTBUS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    client = redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"EVENTBUS_TEST_REDIS_URL={url} does not answer: {exc}")
    prefix = "{ebtest-" + uuid.uuid4().hex[:10] + "}"
    try:
        first, second = RedisOwners(url, prefix, ttl=600), RedisOwners(url, prefix, ttl=600)
        assert first.use("s", "alice", claim=True) == "alice"
        assert second.use("s", "bob", claim=True) == "alice"
        assert second.use("free", "bob", claim=False) is None
        assert client.exists(f"{prefix}:session-owner:free") == 0
        client.expire(f"{prefix}:session-owner:s", 5)
        assert second.use("s", "alice", claim=False) == "alice"
        assert client.ttl(f"{prefix}:session-owner:s") > 500  # the owner's use renewed it
    finally:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()


# -- known roles ------------------------------------------------------------------------------

def test_token_create_refuses_a_role_the_server_does_not_know(token_cli, tmp_path):
    result, _ = token_cli("token", "create", "--user", "alice", "--role", "publisher", "--role", "admni")
    assert result.exit_code == 2 and result.stdout == ""
    assert "unknown role 'admni'" in result.output
    assert "known roles: admin, agent, publisher" in result.output and "EVENTBUS_ROLES" in result.output


def test_token_create_accepts_declared_roles_and_lists_sessions(token_cli, tmp_path):
    config = Config(secret_key=SECRET, data_dir=str(tmp_path / "d"), load_plugins=["eventbus_auth"],
                    roles=["support"])
    result, _ = token_cli("token", "create", "--user", "sam", "--role", "support", "--role", "agent",
                          "--session", "s-1", "--session", "s-2", config=config)
    assert result.exit_code == 0, result.output
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["roles"] == ["support", "agent"] and claims["sessions"] == ["s-1", "s-2"]
    plain, _ = token_cli("token", "create", "--user", "sam", config=config)
    assert "sessions" not in jwt.decode(plain.stdout.strip(), SECRET, algorithms=["HS256"])


def test_declared_roles_come_from_the_environment():
    assert started_config({"EVENTBUS_ROLES": "support, viewer"}).roles == ["support", "viewer"]
    assert eventbus_auth.known_roles(Config(roles=["viewer"])) == ["admin", "agent", "publisher", "viewer"]
    with pytest.raises(ConfigError, match="EVENTBUS_ROLES"):
        started_config({"EVENTBUS_ROLES": "ok,not ok"})
