"""Plugin loading: entry points, EVENTBUS_LOAD_PLUGINS / EVENTBUS_DISABLE_PLUGINS, broken
plugins, ``eventbus plugins``, and a real installed third-party distribution."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint

from click.testing import CliRunner

import eventbus.plugins
from eventbus import Config, EventBus, hookimpl
from eventbus.cli import build_cli

MINE = ("eventbus_auth", "eventbus_logsink")


def loaded(bus: EventBus) -> set[str]:
    return {row["name"] for row in bus.pm.describe()}


def test_empty_load_list_loads_nothing(isolated_env):
    with EventBus.from_env({**isolated_env, "EVENTBUS_LOAD_PLUGINS": ""}, connect_signals=False) as bus:
        assert loaded(bus) == set()
        assert [w.name for w in bus.workers] == ["signals"]


def test_load_list_narrows(isolated_env):
    env = {**isolated_env, "EVENTBUS_LOAD_PLUGINS": " eventbus_logsink , eventbus_auth "}
    with EventBus.from_env(env, connect_signals=False) as bus:
        assert loaded(bus) == set(MINE)
        assert {row["source"] for row in bus.pm.describe()} == {"eventbus 0.1.0"}


def test_disable_list_removes(isolated_env):
    env = {**isolated_env, "EVENTBUS_LOAD_PLUGINS": ",".join(MINE),
           "EVENTBUS_DISABLE_PLUGINS": "eventbus_auth"}
    with EventBus.from_env(env, connect_signals=False) as bus:
        assert loaded(bus) == {"eventbus_logsink"}


def test_a_missing_name_in_the_load_list_is_reported(isolated_env, caplog):
    env = {**isolated_env, "EVENTBUS_LOAD_PLUGINS": "eventbus_logsink,not_installed"}
    with caplog.at_level(logging.WARNING, "eventbus.plugins"), EventBus.from_env(env, connect_signals=False) as bus:
        assert loaded(bus) == {"eventbus_logsink"}
    assert "not_installed" in caplog.text


def test_a_plugin_that_fails_to_import_is_skipped_and_recorded(isolated_env, monkeypatch, caplog):
    points = [EntryPoint("broken", "no_such_module_for_eventbus", "eventbus"),
              EntryPoint("eventbus_logsink", "eventbus_logsink", "eventbus")]
    monkeypatch.setattr(eventbus.plugins.importlib.metadata, "entry_points",
                        lambda group: points if group == "eventbus" else [])
    with caplog.at_level(logging.WARNING, "eventbus.plugins"), \
            EventBus.from_env(isolated_env, connect_signals=False) as bus:
        assert loaded(bus) == {"eventbus_logsink"}
        (failure,) = bus.pm.failures
        assert failure.name == "broken"
        assert "ModuleNotFoundError" in failure.error
        assert bus.status()["plugin_failures"][0]["name"] == "broken"
    assert "plugin broken (entry point) skipped" in caplog.text


def test_a_plugin_that_fails_to_register_is_skipped_and_recorded(bus_factory, caplog):
    class WrongArguments:
        @hookimpl
        def eventbus_event(self, evt):  # the hook's argument is called "event"
            return None

    class Fine:
        @hookimpl
        def eventbus_configure(self, config):
            pass

    with caplog.at_level(logging.WARNING, "eventbus.plugins"):
        bus = bus_factory([WrongArguments(), Fine()])
    assert [f.error.split(":")[0] for f in bus.pm.failures] == ["PluginValidationError"]
    assert len(bus.pm.describe()) == 1
    assert "skipped" in caplog.text
    bus.emit("tool_executed", {})  # the bus works without it


def test_plugins_command_lists_hooks_and_transports_without_opening_them(isolated_env, tmp_path):
    sink = tmp_path / "never-created.jsonl"
    config = Config(load_plugins=list(MINE), log_sink_path=str(sink))
    group, state = build_cli(config)
    result = CliRunner().invoke(group, ["plugins", "--json"], obj=state, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rows = {row["name"]: row for row in report["plugins"]}
    assert set(rows) == set(MINE)
    assert rows["eventbus_logsink"]["transports"] == ["logsink"]
    assert "eventbus_authenticate" in rows["eventbus_auth"]["hooks"]
    assert report["failed"] == []
    assert "agent_started" in report["event_types"]
    assert not sink.exists()
    table = CliRunner().invoke(group, ["plugins"], obj=state).output
    assert "eventbus_logsink  (eventbus 0.1.0)" in table and "transports: logsink" in table


TINY_PLUGIN = '''
"""A third-party plugin shipped in its own distribution."""
import json
from eventbus import Transport, hookimpl

class PrintTransport(Transport):
    name = "tiny"

    def start(self, bus):
        self.stream = open(bus.config.env["TINY_OUT"], "a")

    def send(self, event):
        self.stream.write(event.to_json() + "\\n")
        self.stream.flush()

    def close(self):
        if hasattr(self, "stream"):
            self.stream.close()

@hookimpl
def eventbus_register_transports(register, config):
    register(PrintTransport())
'''

RUN_BUS = '''
import json, os, sys
from eventbus import EventBus, signals
from eventbus.testing import wait_until
bus = EventBus.from_env()
bus.start()
signals.agent_started.send("researcher", session_id="s-1", details={"via": "entry point"})
out = os.environ["TINY_OUT"]
wait_until(lambda: os.path.exists(out) and open(out).read().endswith("\\n"), timeout=10)
print(json.dumps({"plugins": bus.pm.describe(), "failures": [f.__dict__ for f in bus.pm.failures],
                  "transports": [w.name for w in bus.workers]}))
bus.close()
'''


def test_a_real_installed_distribution_is_loaded_through_its_entry_point(isolated_env, tmp_path):
    project = tmp_path / "tiny-dist"
    (project / "eventbus_tiny").mkdir(parents=True)
    (project / "eventbus_tiny" / "__init__.py").write_text(TINY_PLUGIN)
    (project / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"

        [project]
        name = "eventbus-tiny"
        version = "0.3.0"

        [project.entry-points.eventbus]
        tiny = "eventbus_tiny"
        tiny_broken = "eventbus_tiny_missing_module"
    '''))
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(project)],
        capture_output=True, text=True, timeout=120)
    assert install.returncode == 0, install.stderr

    out = tmp_path / "tiny.jsonl"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("EVENTBUS_", "WEBSOCKET_"))}
    # EVENTBUS_FORWARD=false: this bus serves no one and delivers to its own transports.
    env.update(isolated_env, PYTHONPATH=str(target), TINY_OUT=str(out),
               EVENTBUS_LOAD_PLUGINS="tiny,tiny_broken", EVENTBUS_FORWARD="false")
    run = subprocess.run([sys.executable, "-c", RUN_BUS], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert [(p["name"], p["source"]) for p in report["plugins"]] == [("tiny", "eventbus-tiny 0.3.0")]
    assert report["transports"] == ["tiny", "signals"]
    assert [f["name"] for f in report["failures"]] == ["tiny_broken"]
    assert "plugin tiny_broken (eventbus-tiny 0.3.0) skipped" in run.stderr
    (line,) = out.read_text().splitlines()
    envelope = json.loads(line)
    assert (envelope["type"], envelope["source"], envelope["room"]) == ("agent_started", "researcher", "monitoring")
    assert envelope["data"] == {"details": {"via": "entry point"}}
