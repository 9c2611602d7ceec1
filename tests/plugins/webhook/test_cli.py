"""``eventbus webhook ...`` against the outbox file, with no server running."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

import eventbus_webhook
from eventbus import Config
from eventbus.cli import CLIState
from eventbus.plugins import create_plugin_manager
from eventbus.testing import wait_until
from eventbus_webhook.outbox import Outbox
from eventbus_webhook.settings import decode_secret


@pytest.fixture
def run(webhook_config):
    """``run(config, *args)``: invoke ``eventbus webhook`` as the real CLI wires it."""
    def invoke(config: Config, *args: str):
        pm = create_plugin_manager(config, [eventbus_webhook], load_entrypoints=False)
        group = click.Group("eventbus")
        pm.hook.eventbus_register_commands(cli=group)
        return CliRunner().invoke(group, ["webhook", *args], obj=CLIState(config, pm))
    return invoke


def test_secret_prints_one_usable_secret(run, webhook_config):
    result = run(webhook_config(), "secret")
    assert result.exit_code == 0
    assert len(decode_secret(result.output.strip())) == 32


def test_list_without_outbox_creates_nothing(run, webhook_config, secret, endpoint, tmp_path):
    config = webhook_config(endpoint("crm", "https://crm.example.com/h", secret, event_types=["agent_*"]))
    result = run(config, "list")
    assert result.exit_code == 0, result.output
    assert "crm  https://crm.example.com/h  enabled" in result.output and "pending 0" in result.output
    assert not (tmp_path / "data").exists()


def test_dead_letters_redeliver_and_enable(run, webhook_bus, webhook_config, receiver_factory, secret, endpoint):
    receiver = receiver_factory(secret, respond=lambda req: 410)
    config = webhook_config(endpoint("crm", receiver.url, secret))
    bus = webhook_bus(endpoint("crm", receiver.url, secret))
    event = bus.emit("agent_started", {"agent_name": "a"})
    wait_until(lambda: bus.transport("webhook").health()["dead_letters"] == 1, message="dead letter")
    bus.close()

    listing = json.loads(run(config, "list", "--json").output)
    (row,) = listing["endpoints"]
    assert row["dead_letters"] == 1 and "410" in row["disabled"] and row["last_error"].startswith("HTTP 410")

    dead = run(config, "dead-letters")
    assert dead.exit_code == 0 and event.id in dead.output and "HTTP 410" in dead.output
    rows = json.loads(run(config, "dead-letters", "--json").output)
    assert rows[0]["event_id"] == event.id and rows[0]["body"]["data"]["id"] == event.id

    assert run(config, "redeliver").exit_code == 2  # neither IDENT nor --all
    missing = run(config, "redeliver", "evt_nope")
    assert missing.exit_code == 1 and "no delivery matches evt_nope" in missing.output
    done = run(config, "redeliver", str(rows[0]["id"]))
    assert done.exit_code == 0 and "rescheduled 1 delivery" in done.output

    enabled = run(config, "enable", "crm")
    assert enabled.exit_code == 0 and "crm: enabled" in enabled.output
    assert "was not disabled" in run(config, "enable", "crm").output
    assert run(config, "enable", "nope").exit_code == 1

    with Outbox(config.data_path / "webhooks.sqlite3") as outbox:
        assert outbox.counts() == {"crm": {"pending": 1, "dead": 0}}
        assert not outbox.is_disabled("crm")


def test_bad_configuration_is_a_clear_cli_error(run, webhook_config):
    result = run(webhook_config({"name": "x", "url": "mailto:a@b", "secret": "whsec_"}), "list")
    assert result.exit_code == 1
    assert "configuration error: EVENTBUS_WEBHOOKS endpoint 'x'" in result.output
