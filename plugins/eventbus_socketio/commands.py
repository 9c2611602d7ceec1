"""``eventbus serve``, ``eventbus emit`` and ``eventbus tail``."""

from __future__ import annotations

import fnmatch
import json
import os
import sys
import threading
from datetime import datetime
from typing import Any

import click

from eventbus.config import ASYNC_MODES, Config

#: Set in a re-executed server process once gevent/eventlet has patched the standard library.
PATCHED_ENV = "EVENTBUS_PATCHED_MODE"

_BOOT = (
    "import sys\n"
    "mode = sys.argv[1]\n"
    "if mode == 'gevent':\n"
    "    from gevent import monkey; monkey.patch_all()\n"
    "elif mode == 'eventlet':\n"
    "    import eventlet; eventlet.monkey_patch()\n"
    "sys.argv = ['eventbus'] + sys.argv[2:]\n"
    "from eventbus.cli import main\n"
    "main()\n"
)


def _state() -> Any:
    return click.get_current_context().obj


def _local_token(config: Config, user: str, roles: list[str], ttl: int) -> str | None:
    """A token signed with this machine's secret, when the JWT strategy is installed."""
    try:
        from eventbus_auth import create_token
    except ImportError:
        return None
    return create_token(config.ensure_secret_key(), user, roles, ttl)


def _ensure_patched(mode: str) -> None:
    """gevent and eventlet must patch the standard library before anything else is
    imported, so the server re-executes itself with the patch applied first."""
    if mode == "threading" or os.environ.get(PATCHED_ENV) == mode:
        return
    try:
        __import__(mode)
    except ImportError:
        raise click.ClickException(
            f"--async-mode {mode} needs {mode}: pip install 'eventbus[{mode}]'") from None
    env = dict(os.environ, **{PATCHED_ENV: mode, "WEBSOCKET_ASYNC_MODE": mode})
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-c", _BOOT, mode, *sys.argv[1:]], env)


@click.command("serve")
@click.option("--host", default=None, help="Interface to bind (EVENTBUS_HOST, default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port for HTTP and Socket.IO (EVENTBUS_PORT, default 5050).")
@click.option("--async-mode", type=click.Choice(ASYNC_MODES), default=None,
              help="threading (default), gevent or eventlet (WEBSOCKET_ASYNC_MODE).")
@click.option("--demo", is_flag=True, help="Run simulated agents in-process so the live page fills.")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]),
              help="Log level of the server.")
def serve_command(host: str | None, port: int | None, async_mode: str | None, demo: bool, log_level: str) -> None:
    """Run the Socket.IO server and HTTP API on one port."""
    import logging

    config: Config = _state().config
    mode = async_mode or config.async_mode
    _ensure_patched(mode)
    config.async_mode = mode
    config.host = host or config.host
    config.port = config.port if port is None else port
    logging.basicConfig(level=getattr(logging, log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    from .app import create_app

    app = create_app(config)
    manager = app.extensions["eventbus"]
    url = f"http://{config.host if config.host not in ('0.0.0.0', '::') else '127.0.0.1'}:{config.port}"
    token = _local_token(config, "admin", ["admin", "publisher"], 24 * 3600)
    click.echo(f"eventbus {mode} server on {url}  (Socket.IO namespaces /chat /monitoring /admin)")
    if token:
        click.echo(f"  admin token (24 h): {token}")
        click.echo(f"  live page:          {url}/#token={token}")
    click.echo(f"  status:             {url}/api/websocket/status")
    sys.stdout.flush()
    if demo:
        from .demo import start_demo

        start_demo(manager)
    try:
        if manager.socketio is None:
            from werkzeug.serving import run_simple

            run_simple(config.host, config.port, app, threaded=True)
        elif mode == "gevent":
            # gevent's plain WSGI server, never gevent-websocket's handler (even when that is
            # installed): WebSocket frames are read by the bounded reader of engine.py.
            from gevent import pywsgi

            server = pywsgi.WSGIServer((config.host, config.port), app,
                                       log="default" if log_level == "debug" else None)
            manager.socketio.wsgi_server = server  # what SocketIO.stop() stops
            server.serve_forever()
        else:
            extra = {"max_size": 100_000} if mode == "eventlet" else {}  # eventlet.wsgi caps at 1024
            manager.socketio.run(app, host=config.host, port=config.port, allow_unsafe_werkzeug=True,
                                 log_output=log_level == "debug", **extra)
    finally:
        manager.bus.close()


def _default_token(config: Config, token: str | None, roles: list[str]) -> str:
    token = token or os.environ.get("EVENTBUS_TOKEN")
    if token:
        return token
    minted = _local_token(config, "cli", roles, 300)
    if not minted:
        raise click.ClickException("no token: pass --token or set EVENTBUS_TOKEN")
    return minted


@click.command("emit")
@click.argument("event_type")
@click.option("--data", default="{}", help="Event data as a JSON object.")
@click.option("--room", default=None, help="Room (default: from the routing table).")
@click.option("--session-id", default=None, help="Chat session (room session:<id>).")
@click.option("--user-id", default=None)
@click.option("--url", default=None, help="Server URL (default http://127.0.0.1:EVENTBUS_PORT).")
@click.option("--token", default=None,
              help="Bearer token (EVENTBUS_TOKEN; default: a local token with roles publisher and agent).")
def emit_command(event_type: str, data: str, room: str | None, session_id: str | None,
                 user_id: str | None, url: str | None, token: str | None) -> None:
    """Publish one event through POST /api/events; prints the id and seq."""
    import requests

    config: Config = _state().config
    try:
        payload = json.loads(data)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--data") from None
    if not isinstance(payload, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--data")
    body = {"type": event_type, "data": payload}
    body.update({k: v for k, v in (("room", room), ("session_id", session_id), ("user_id", user_id)) if v})
    base = (url or f"http://127.0.0.1:{config.port}").rstrip("/")
    try:
        response = requests.post(f"{base}/api/events", json=body, timeout=10,
                                 headers={"Authorization": f"Bearer {_default_token(config, token, ['publisher', 'agent'])}"})
    except requests.RequestException as exc:
        raise click.ClickException(f"cannot reach {base}: {exc}") from None
    try:
        answer = response.json()
    except ValueError:
        raise click.ClickException(f"{base} answered {response.status_code} without JSON") from None
    if response.status_code != 202:
        error = answer.get("error", {})
        raise click.ClickException(f"{response.status_code} {error.get('code')}: {error.get('message')}")
    click.echo(json.dumps(answer))


_COLOURS = {"chat": "cyan", "agent": "green", "system": "yellow", "connection": "magenta"}


def format_event(envelope: dict[str, Any], category: str | None = None, colour: bool = False,
                 width: int = 160) -> str:
    """One readable line: time, type, room#seq, source/user, data."""
    stamp = str(envelope.get("timestamp", ""))[11:23] or datetime.now().strftime("%H:%M:%S.%f")[:12]
    event_type = str(envelope.get("type", "?"))
    where = f"{envelope.get('room')}#{envelope.get('seq') if envelope.get('seq') is not None else '-'}"
    who = envelope.get("source") or envelope.get("user_id") or "-"
    data = json.dumps(envelope.get("data", {}), separators=(",", ":"), ensure_ascii=False)
    line = f"{stamp}  {event_type:<18} {where:<24} {who:<14} {data}"
    if len(line) > width:
        line = line[: width - 1] + "…"
    if colour:
        name = click.style(f"{event_type:<18}", fg=_COLOURS.get(category or "", "white"), bold=True)
        line = line.replace(f"{event_type:<18}", name, 1)
    return line


@click.command("tail")
@click.option("--url", default=None, help="Server URL (default http://127.0.0.1:EVENTBUS_PORT).")
@click.option("--namespace", default="/monitoring", show_default=True, help="Namespace to connect to.")
@click.option("--room", "rooms", multiple=True, help="Room to join (repeatable).")
@click.option("--type", "types", multiple=True, help="Only these event types; globs allowed (repeatable).")
@click.option("--token", default=None, help="Bearer token (EVENTBUS_TOKEN; default: a local admin token).")
@click.option("--json", "as_json", is_flag=True, help="Print raw envelopes, one JSON per line.")
@click.option("--count", type=int, default=None, help="Exit after this many events.")
def tail_command(url: str | None, namespace: str, rooms: tuple[str, ...], types: tuple[str, ...],
                 token: str | None, as_json: bool, count: int | None) -> None:
    """Print events live as a client sees them: in seq order, resuming after a reconnect."""
    from eventbus.client import EventBusClient, EventBusClientError
    from eventbus.events import EventRegistry

    config: Config = _state().config
    base = (url or f"http://127.0.0.1:{config.port}").rstrip("/")
    registry = EventRegistry()
    colour = sys.stdout.isatty() and not as_json
    seen = 0
    done = threading.Event()

    def wanted(event_type: str) -> bool:
        return not types or any(fnmatch.fnmatchcase(event_type, pattern) for pattern in types)

    def on_any(event_type: str, envelope: dict[str, Any]) -> None:
        nonlocal seen
        if not wanted(event_type):
            return
        category = registry.get(event_type).category if event_type in registry else None
        click.echo(json.dumps(envelope) if as_json else format_event(envelope, category, colour))
        seen += 1
        if count is not None and seen >= count:
            done.set()

    client = EventBusClient(base, namespace, token=_default_token(config, token, ["admin"]), rooms=rooms,
                            on_resync=lambda info: click.echo(f"# resync: {json.dumps(info)}", err=True),
                            on_error=lambda error: click.echo(f"# error: {error}", err=True))
    client.on("*", on_any)
    try:
        client.connect(timeout=10)
    except EventBusClientError as exc:
        client.close()
        raise click.ClickException(f"cannot connect to {base}{namespace}: {exc}") from None
    click.echo(f"# connected to {base}{namespace}", err=True)
    try:
        while not done.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
