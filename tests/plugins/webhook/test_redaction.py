"""No webhook credential is shown: URLs with a user, password, ``?api_key=`` or fragment are
reduced to ``scheme://host[:port]/path`` in status, metrics figures, the CLI, log lines and
stored error texts (requests copies the URL into its exceptions), and secrets never appear."""

from __future__ import annotations

import json
import logging
import sqlite3

import click
import pytest
from click.testing import CliRunner

import eventbus_webhook
from eventbus.cli import CLIState
from eventbus.plugins import create_plugin_manager
from eventbus.testing import wait_until
from eventbus_webhook.redaction import REDACTED, scrub
from eventbus_webhook.settings import parse_endpoint

PASSWORD, API_KEY, TOKEN = "hunter2-password", "SEKRET-api-key-123", "fragment-token-456"
CREDENTIALS = (PASSWORD, API_KEY, TOKEN, "user:")


def secret_url(port: int) -> str:
    return f"http://user:{PASSWORD}@127.0.0.1:{port}/hook?api_key={API_KEY}&v=1#{TOKEN}"


def assert_clean(text: str, *also: str) -> None:
    for secret in (*CREDENTIALS, *also):
        assert secret not in text, f"{secret!r} leaked into: {text[:2000]}"


@pytest.fixture
def leaky_bus(webhook_bus, receiver_factory, free_port, secret, endpoint, caplog):
    """A bus with one working and one unreachable endpoint, both with credentials in the
    URL, after a delivery to each was attempted; logs captured down to DEBUG."""
    caplog.set_level(logging.DEBUG)
    receiver = receiver_factory(secret)
    bus = webhook_bus(endpoint("good", secret_url(receiver.port), secret),
                      endpoint("down", secret_url(free_port), secret, retry_schedule=[0, 3600]))
    event = bus.emit("agent_started", {"agent_name": "a"}, origin="http")
    receiver.wait_for_ids([event.id])
    # ``delivered`` and ``retries`` count after the attempt's result is logged and stored.
    wait_until(lambda: (e := bus.transport("webhook").health()["endpoints"])["down"]["retries"] == 1
               and e["good"]["delivered"] == 1, message="one delivery and one failure")
    return bus


def test_status_and_health_show_only_the_redacted_url(leaky_bus, free_port, secret):
    health = leaky_bus.transport("webhook").health()
    down = health["endpoints"]["down"]
    assert down["url"] == f"http://127.0.0.1:{free_port}/hook"
    assert "ConnectionError" in down["last_error"] and "/hook" in down["last_error"]
    assert_clean(json.dumps(health), secret)
    assert_clean(json.dumps(leaky_bus.status(), default=str), secret)


def test_log_lines_carry_no_credential_even_at_debug(leaky_bus, caplog, secret):
    records = caplog.get_records("setup") + caplog.get_records("call")
    text = "\n".join(f"{r.name} {r.getMessage()}" for r in records)
    assert "webhook down: delivery to http://127.0.0.1:" in text  # the failure is logged
    assert '"POST /hook HTTP/1.1" 204' in text  # urllib3's request line, without its query
    assert_clean(text, secret)


def test_stored_error_texts_carry_no_credential(leaky_bus):
    path = leaky_bus.transport("webhook").outbox_path
    with sqlite3.connect(path) as conn:
        stored = conn.execute("SELECT group_concat(last_error, ' | ') FROM deliveries").fetchone()[0]
        stored += conn.execute("SELECT group_concat(last_error, ' | ') FROM endpoints").fetchone()[0]
    assert "ConnectionError" in stored
    assert_clean(stored)


def test_cli_list_and_dead_letters_show_no_credential(leaky_bus, webhook_config, free_port, secret, endpoint):
    config = webhook_config(endpoint("down", secret_url(free_port), secret))
    # An outbox written by an older version may hold a raw URL in an error text.
    leaky_bus.transport("webhook").outbox.failed(
        leaky_bus.transport("webhook").outbox.due("down", float("inf"))[0], attempts=9,
        error=f"ConnectionError: {secret_url(free_port)}", status_code=None, now=1.0, next_attempt_at=None)
    pm = create_plugin_manager(config, [eventbus_webhook], load_entrypoints=False)
    group = click.Group("eventbus")
    pm.hook.eventbus_register_commands(cli=group)
    for args in (["list"], ["list", "--json"], ["dead-letters"], ["dead-letters", "--json"]):
        result = CliRunner().invoke(group, ["webhook", *args], obj=CLIState(config, pm))
        assert result.exit_code == 0, result.output
        assert f"127.0.0.1:{free_port}/hook" in result.output
        assert_clean(result.output, secret)


def test_an_endpoint_repr_and_config_errors_hide_credentials(secret):
    endpoint = parse_endpoint({"name": "crm", "url": secret_url(1), "secret": secret,
                               "headers": {"Authorization": "Bearer header-secret"}}, 0)
    assert_clean(repr(endpoint), secret, "header-secret")
    assert endpoint.describe()["url"] == "http://127.0.0.1:1/hook"
    with pytest.raises(eventbus_webhook.settings.ConfigError) as bad:
        parse_endpoint({"name": "crm", "url": f"ftp://user:{PASSWORD}@h/x?api_key={API_KEY}",
                        "secret": secret}, 0)
    assert "ftp://h/x" in str(bad.value)
    assert_clean(str(bad.value))
    with pytest.raises(eventbus_webhook.settings.ConfigError) as bad_port:
        parse_endpoint({"name": "crm", "url": f"http://user:{PASSWORD}@h:99999/x", "secret": secret}, 0)
    assert_clean(str(bad_port.value))


@pytest.mark.parametrize("text, expected", [
    ("HTTPConnectionPool(host='h', port=1): Max retries exceeded with url: /hook?api_key=SEKRET-api-key-123 "
     "(Caused by NewConnectionError('x: Failed to establish a new connection'))",
     "HTTPConnectionPool(host='h', port=1): Max retries exceeded with url: /hook "
     "(Caused by NewConnectionError('x: Failed to establish a new connection'))"),
    (f"Invalid URL 'http://user:{PASSWORD}@h:1/hook?api_key={API_KEY}#{TOKEN}': no",
     "Invalid URL 'http://h:1/hook': no"),
    ("/hook?api_key=SEKRET%2Dapi%2Dkey%2D123", "/hook"),
    (f"header says {API_KEY} and {PASSWORD}", f"header says {REDACTED} and {REDACTED}"),
    ("HTTP 500", "HTTP 500"),
])
def test_scrub(text, expected):
    assert scrub(text, f"http://user:{PASSWORD}@h:1/hook?api_key={API_KEY}&v=1#{TOKEN}") == expected
