"""Endpoint configuration: both sources, defaults, and clear start-up errors."""

from __future__ import annotations

import base64
import json

import pytest

import eventbus_webhook
from eventbus import Config, ConfigError, EventBus
from eventbus_webhook.settings import DEFAULT_SCHEDULE, decode_secret, load_settings


def start_up(environ):
    return EventBus(Config.from_env(environ), plugins=[eventbus_webhook], load_entrypoints=False,
                    connect_signals=False)


def test_endpoints_from_environment_with_defaults(isolated_env, secret):
    environ = {**isolated_env, "EVENTBUS_WEBHOOKS": json.dumps([
        {"name": "crm", "url": "https://crm.example.com/hooks", "secret": secret,
         "event_types": "agent_*"}])}
    settings = load_settings(Config.from_env(environ))
    (crm,) = settings.endpoints
    assert crm.event_types == ("agent_*",) and crm.rooms is None and crm.enabled
    assert crm.timeout == 15.0 and crm.retry_schedule == DEFAULT_SCHEDULE
    assert crm.keys == (decode_secret(secret),)
    assert "secret" not in json.dumps(crm.describe()).replace('"secrets"', "")


def test_endpoints_from_toml_and_plugin_table(isolated_env, tmp_path, secret):
    (tmp_path / "eventbus.toml").write_text(f'''
[[webhooks]]
name = "ops"
url = "http://127.0.0.1:9/hook"
secrets = ["{secret}"]
rooms = ["monitoring"]
concurrency = 4
retry_schedule = [0, 1, 2]

[plugins.webhook]
schedule_scale = 0.01
max_pending = 50
''')
    settings = load_settings(Config.from_env(isolated_env))
    (ops,) = settings.endpoints
    assert ops.rooms == ("monitoring",) and ops.concurrency == 4 and ops.retry_schedule == (0, 1, 2)
    assert settings.schedule_scale == 0.01 and settings.max_pending == 50


@pytest.mark.parametrize("fields, expected", [
    ({"url": "ftp://example.com/x"}, "'url' must be an http:// or https:// URL"),
    ({"url": "not a url"}, "'url' must be"),
    ({"secret": "whsec_" + base64.b64encode(b"x" * 16).decode()}, "at least 24 random bytes"),
    ({"secret": "plain-password-123456789012345"}, "must be a string starting with 'whsec_'"),
    ({"secret": "whsec_@@@not-base64@@@"}, "not valid base64"),
    ({"colour": "blue"}, "unknown field(s) colour"),
    ({"timeout": 0}, "'timeout' must be a number"),
    ({"concurrency": "many"}, "'concurrency' must be an integer"),
    ({"event_types": []}, "'event_types' must be a non-empty list"),
    ({"enabled": "yes"}, "'enabled' must be true or false"),
    ({"headers": {"webhook-id": "x"}}, "may not set webhook-id"),
])
def test_bad_endpoint_stops_start_up_naming_it(isolated_env, secret, fields, expected):
    endpoint = {"name": "crm", "url": "https://crm.example.com/hooks", "secret": secret, **fields}
    environ = {**isolated_env, "EVENTBUS_WEBHOOKS": json.dumps([endpoint])}
    with pytest.raises(ConfigError) as info:
        start_up(environ)
    message = str(info.value)
    assert "EVENTBUS_WEBHOOKS endpoint 'crm'" in message and expected in message


def test_missing_name_and_duplicates_are_refused(isolated_env, secret):
    nameless = {"url": "https://a.example.com", "secret": secret}
    with pytest.raises(ConfigError, match=r"EVENTBUS_WEBHOOKS\[0\]: 'name'"):
        start_up({**isolated_env, "EVENTBUS_WEBHOOKS": json.dumps([nameless])})
    twice = [{"name": "a", **nameless}, {"name": "a", **nameless}]
    with pytest.raises(ConfigError, match="'a': the name is used twice"):
        start_up({**isolated_env, "EVENTBUS_WEBHOOKS": json.dumps(twice)})


def test_unknown_plugin_setting_is_refused(isolated_env, secret):
    config = Config(webhooks=[{"name": "a", "url": "https://a.example.com", "secret": secret}],
                    plugins={"webhook": {"retries": 3}})
    with pytest.raises(ConfigError, match=r"\[plugins.webhook\]: unknown field\(s\) retries"):
        load_settings(config)


def test_no_endpoints_registers_no_transport(isolated_env):
    bus = start_up(isolated_env)
    try:
        assert "webhook" not in [w.name for w in bus.workers]
    finally:
        bus.close()


def test_constructing_and_closing_acquires_nothing(tmp_path, secret):
    """`eventbus plugins` builds transports only to list them, then closes them."""
    found = []
    config = Config(data_dir=str(tmp_path / "data"),
                    webhooks=[{"name": "a", "url": "https://a.example.com", "secret": secret}])
    eventbus_webhook.eventbus_register_transports(register=found.append, config=config)
    (transport,) = found
    transport.close()
    assert not (tmp_path / "data").exists()
