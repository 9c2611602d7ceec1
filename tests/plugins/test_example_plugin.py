"""The tutorial's complete example (examples/eventbus_deploys): its event type, transport,
auth strategy and command work on a real bus and server, and its packaging registers it."""

from __future__ import annotations

import logging
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from werkzeug.serving import make_server

import eventbus_auth
import eventbus_socketio
from eventbus import Config, ConfigError, EventBus
from eventbus.testing import RecordingTransport, wait_until

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "eventbus_deploys"
KEY = "ci-key-0123456789abcdef"


@pytest.fixture
def deploys(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import eventbus_deploys

    return eventbus_deploys


@pytest.fixture
def app_bus(deploys: Any, tmp_path: Path) -> Iterator[tuple[Any, EventBus, RecordingTransport]]:
    recorder = RecordingTransport()
    config = Config(secret_key="s" * 40, data_dir=str(tmp_path / "data"), env={"EVENTBUS_DEPLOY_KEY": KEY})
    bus = EventBus(config, plugins=[eventbus_auth, eventbus_socketio, deploys], load_entrypoints=False)
    bus.add_transport(recorder)
    app = eventbus_socketio.create_app(bus=bus)
    yield app, bus, recorder
    bus.close()


def test_event_type_and_transport(app_bus: Any, caplog: pytest.LogCaptureFixture) -> None:
    _app, bus, recorder = app_bus
    assert bus.registry.get("deploy_finished").category == "ops"
    caplog.set_level(logging.INFO, logger="eventbus.deploys")
    bus.emit("deploy_finished", {"service": "checkout", "version": "2.4.1", "ok": False})
    bus.emit("chat_message", {"message": "not for the log"}, session_id="s-1")
    bus.emit("alert_created", {"severity": "critical", "message": "disk full"})
    recorder.wait_for(3)
    transport = bus.transport("deploy-log")
    wait_until(lambda: transport.logged == 2, 5, message="two events logged")
    records = [r for r in caplog.records if r.name == "eventbus.deploys"]
    assert [r.levelno for r in records] == [logging.ERROR, logging.ERROR]
    assert '"service":"checkout"' in records[0].getMessage()
    assert bus.status()["transports"][[w.name for w in bus.workers].index("deploy-log")]["health"]["logged"] == 2


def test_auth_strategy(app_bus: Any) -> None:
    _app, bus, _recorder = app_bus
    identity = bus.authenticate({"token": KEY})
    assert identity.user_id == "ci" and identity.roles == {"publisher"}
    assert bus.authenticate({"token": "ci-key-wrong-wrong-wrong"}) is None


def test_short_key_stops_start_up(deploys: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="EVENTBUS_DEPLOY_KEY"):
        EventBus(Config(data_dir=str(tmp_path), env={"EVENTBUS_DEPLOY_KEY": "short"}),
                 plugins=[deploys], load_entrypoints=False)


def test_deploy_command_publishes_with_the_ci_key(app_bus: Any, deploys: Any) -> None:
    app, _bus, recorder = app_bus
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        group = click.Group("eventbus")
        deploys.eventbus_register_commands(cli=group)
        url = f"http://127.0.0.1:{server.server_port}"
        result = CliRunner().invoke(group, ["deploy", "checkout", "2.4.1", "--url", url, "--token", KEY])
        assert result.exit_code == 0, result.output
        refused = CliRunner().invoke(group, ["deploy", "checkout", "2.4.2", "--url", url, "--token", "nope"])
        assert refused.exit_code == 1 and "401" in refused.output
    finally:
        server.shutdown()
        thread.join(10)
    events = recorder.wait_for(lambda evs: any(e.type == "deploy_finished" for e in evs))
    deploy = next(e for e in events if e.type == "deploy_finished")
    assert deploy.data == {"service": "checkout", "version": "2.4.1", "ok": True}
    assert deploy.source == "http:ci" and deploy.room == "monitoring"


def test_packaging_registers_the_entry_point(deploys: Any) -> None:
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["eventbus"] == {"deploys": "eventbus_deploys"}
    assert (EXAMPLE / "eventbus_deploys" / "__init__.py").is_file()
    hooks = {name for name in dir(deploys) if name.startswith("eventbus_")}
    assert hooks == {"eventbus_declare_settings", "eventbus_configure", "eventbus_register_event_types",
                     "eventbus_register_transports",
                     "eventbus_authenticate", "eventbus_register_commands"}
