"""The hooks as the bus calls them: event transforms and drops, configuration, transports,
auth answers and CLI commands."""

from __future__ import annotations

import click
from click.testing import CliRunner

from eventbus import Config, Identity, hookimpl
from eventbus.plugins import create_plugin_manager
from eventbus.testing import RecordingTransport


class Redact:
    @hookimpl
    def eventbus_event(self, event):
        if "password" in event.data:
            event.data["password"] = "***"


class DropDebug:
    @hookimpl
    def eventbus_event(self, event):
        if event.data.get("debug"):
            return False
        return None


class Stamp:
    """A wrapper: runs around the other implementations and sees their results."""

    seen: list = []

    @hookimpl(wrapper=True)
    def eventbus_event(self, event):
        event.data["stamped"] = True
        results = yield
        Stamp.seen.append(list(results))
        if event.data.get("veto"):
            return [False]
        return results


def test_eventbus_event_transforms_in_place(bus_factory, recorder):
    bus = bus_factory([Redact()], transports=[recorder])
    bus.emit("tool_executed", {"tool": "login", "password": "hunter2"})
    assert recorder.wait_for(1)[0].data == {"tool": "login", "password": "***"}
    assert bus.history.since("monitoring", 0).events[0].data["password"] == "***"


def test_eventbus_event_drops_with_false_without_using_a_seq(bus_factory, recorder):
    bus = bus_factory([DropDebug()], transports=[recorder])
    assert bus.emit("tool_executed", {"debug": True}) is None
    kept = bus.emit("tool_executed", {"debug": False})
    assert kept.seq == 1
    assert recorder.wait_for(1) == [kept]
    assert bus.counters["dropped_by_hook"] == 1 and bus.counters["emitted"] == 1


def test_eventbus_event_wrapper(bus_factory, recorder):
    Stamp.seen = []
    bus = bus_factory([DropDebug(), Stamp()], transports=[recorder])
    bus.emit("tool_executed", {"n": 1})
    assert bus.emit("tool_executed", {"veto": True}) is None
    assert bus.emit("tool_executed", {"debug": True}) is None
    assert recorder.wait_for(1)[0].data == {"n": 1, "stamped": True}
    assert Stamp.seen == [[], [], [False]]  # the inner plugin's answers, as the wrapper saw them
    assert bus.counters["dropped_by_hook"] == 2


def test_eventbus_configure_is_historic(bus_factory):
    seen = []

    class Late:
        @hookimpl
        def eventbus_configure(self, config):
            seen.append(config)

    config = Config(port=6000)
    bus = bus_factory(config=config)
    bus.pm.register(Late())
    assert seen == [config]


def test_eventbus_register_transports_gets_the_config(bus_factory):
    class Transports:
        @hookimpl
        def eventbus_register_transports(self, register, config):
            register(RecordingTransport(f"rec-{config.port}"))

    bus = bus_factory([Transports()], Config(port=5999))
    recorder = bus.transport("rec-5999")
    bus.emit("health_update", {"status": "ok"})
    assert recorder.wait_for(1)[0].type == "health_update"


def test_eventbus_authenticate_first_answer_wins(bus_factory):
    calls = []

    class Abstains:
        @hookimpl(tryfirst=True)
        def eventbus_authenticate(self, auth, environ):
            calls.append("abstains")

    class Knows:
        @hookimpl
        def eventbus_authenticate(self, auth, environ):
            calls.append("knows")
            if auth.get("token") == "t":
                return Identity("u", frozenset({"admin"}), strategy="test")
            return None

    class NeverAsked:
        @hookimpl(trylast=True)
        def eventbus_authenticate(self, auth, environ):
            calls.append("never")
            return Identity("wrong")

    bus = bus_factory([NeverAsked(), Knows(), Abstains()])
    assert bus.authenticate({"token": "t"}, {"REMOTE_ADDR": "127.0.0.1"}).user_id == "u"
    assert calls == ["abstains", "knows"]
    assert bus_factory().authenticate({"token": "t"}) is None


def test_eventbus_authorize_without_an_answer_denies(bus_factory):
    class OnlyChat:
        @hookimpl
        def eventbus_authorize(self, identity, namespace, room, action):
            return True if namespace == "/chat" else None

    bus = bus_factory([OnlyChat()])
    assert bus.authorize(Identity("u"), "/chat", "session:s", "join") is True
    assert bus.authorize(Identity("u"), "/monitoring", "monitoring", "join") is False


def test_eventbus_register_commands(isolated_env):
    class Hello:
        @hookimpl
        def eventbus_register_commands(self, cli):
            @cli.command("hello")
            @click.option("--name", default="world")
            def hello(name):
                click.echo(f"hello {name} on port {click.get_current_context().obj.config.port}")

    group = click.Group("eventbus")
    pm = create_plugin_manager(Config(load_plugins=[]), [Hello()])
    pm.hook.eventbus_register_commands(cli=group)

    class State:
        config = Config(port=5123)

    result = CliRunner().invoke(group, ["hello", "--name", "agents"], obj=State())
    assert result.exit_code == 0, result.output
    assert result.output == "hello agents on port 5123\n"


def test_eventbus_register_event_types_reaches_the_signals(bus_factory, recorder):
    from eventbus import signals

    class Types:
        @hookimpl
        def eventbus_register_event_types(self, register):
            register("deploy_finished", category="ops")

    bus_factory([Types()], transports=[recorder])
    signals.signal("deploy_finished").send("ci", version="2.0")
    event = recorder.wait_for(1)[0]
    assert (event.type, event.data, event.source) == ("deploy_finished", {"version": "2.0"}, "ci")
