"""``eventbus serve``, ``eventbus emit`` and ``eventbus tail``."""

from __future__ import annotations

import errno
import fnmatch
import importlib.util
import json
import os
import socket
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from eventbus.config import ASYNC_MODES, Config
from eventbus.redact import redact_url
from eventbus_client import _failure_reason as _reason  # one wording for connection failures

from .settings import SETTINGS

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
    """A token this installation's servers accept, from the ``eventbus_issue_token`` hook
    (the auth plugin signs one with this machine's secret); ``None`` when no plugin issues
    tokens."""
    config.ensure_secret_key()  # a key error stops the command here, in one line
    token: str | None = _state().pm.hook.eventbus_issue_token(user=user, roles=roles, ttl=ttl)
    return token


def serve_mode(config: Config, requested: str | None = None) -> str:
    """The async mode of ``eventbus serve``: ``--async-mode``, else ``WEBSOCKET_ASYNC_MODE``
    (or ``async_mode`` in ``eventbus.toml``), else gevent when it is installed, else
    threading. (An app that embeds :class:`SocketManager` keeps ``config.async_mode``, which
    defaults to threading.)"""
    if requested:
        return requested
    config.declare(SETTINGS)
    if "async_mode" in config.configured:
        return config.async_mode
    return "gevent" if importlib.util.find_spec("gevent") is not None else "threading"


def _ensure_patched(mode: str) -> None:
    """gevent and eventlet must patch the standard library before anything else is
    imported, so the server re-executes itself with the patch applied first. This process
    only checks that the library is installed, without importing it (importing eventlet
    prints its deprecation warning, which the re-executed process prints again)."""
    if mode == "threading" or os.environ.get(PATCHED_ENV) == mode:
        return
    if importlib.util.find_spec(mode) is None:
        raise click.ClickException(
            f"--async-mode {mode} needs {mode}: pip install 'eventbus[{mode}]'")
    env = dict(os.environ, **{PATCHED_ENV: mode, "WEBSOCKET_ASYNC_MODE": mode})
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-c", _BOOT, mode, *sys.argv[1:]], env)


#: Connections the kernel queues before the server accepts them.
LISTEN_BACKLOG = 1024


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``SO_REUSEADDR``, never ``SO_REUSEPORT``, so
    a second server on a port in use is refused rather than sharing it). Raises
    :class:`click.ClickException` with one line when the port is taken or the address
    cannot be used. Call it after the gevent/eventlet patch, so the socket is green."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        listener = socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)
        # Accepted sockets inherit it: a response written in pieces (headers, then body)
        # goes out at once instead of waiting for the client's delayed ACK (~40 ms on
        # keep-alive connections).
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return listener
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise click.ClickException(
                f"port {port} is in use: another program listens on {host}:{port}; "
                "pass --port or stop the other server") from None
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                                   "(--host/EVENTBUS_HOST, --port/EVENTBUS_PORT)") from None


def _werkzeug_handler() -> type:
    from werkzeug.serving import WSGIRequestHandler

    class RequestHandler(WSGIRequestHandler):
        """Werkzeug's request handler, except that a connection the application took over
        ends with it. A WebSocket ends by raising :class:`ConnectionError` (simple-websocket's
        signal to Werkzeug); Werkzeug would then read the connection again as the next
        HTTP request, and whatever the client sent after the WebSocket session (its close
        frame, the rest of a refused message) would be logged as a ``400 Bad request``."""

        def connection_dropped(self, error: BaseException, environ: Any = None) -> None:
            self.close_connection = True
            super().connection_dropped(error, environ)

    return RequestHandler


def _gevent_handler() -> type:
    from gevent import pywsgi

    class WSGIHandler(pywsgi.WSGIHandler):
        """gevent's request handler, except that a connection upgraded to a WebSocket ends
        with it, for the same reason as in :func:`_werkzeug_handler`: gevent would read the
        client's last WebSocket bytes as a next request, log ``Invalid HTTP method`` and
        print a traceback when its error response meets the closed connection."""

        def handle_one_response(self) -> None:
            try:
                super().handle_one_response()
            finally:
                if self._connection_upgrade_requested():
                    self.close_connection = True

    return WSGIHandler


def _run(app: Any, manager: Any, listener: socket.socket, mode: str, debug: bool) -> None:
    """Serve ``app`` on ``listener`` with ``mode``'s WSGI server until stopped."""
    if mode == "gevent":
        # gevent's plain WSGI server, never gevent-websocket's handler (even when that is
        # installed): WebSocket frames are read by the bounded reader of engine.py.
        from gevent import pywsgi

        server = pywsgi.WSGIServer(listener, app, handler_class=_gevent_handler(),
                                   log="default" if debug else None)
        if manager.socketio is not None:
            manager.socketio.wsgi_server = server  # what SocketIO.stop() stops
        server.serve_forever()
    elif mode == "eventlet":
        import eventlet.wsgi

        # max_size: concurrent connections (eventlet.wsgi's own default is 1024).
        eventlet.wsgi.server(listener, app, log_output=debug, max_size=100_000)
    else:
        # Werkzeug's threaded server, made directly: Flask's and Flask-SocketIO's run() add
        # start-up banners and a development-server warning to every start.
        from werkzeug.serving import make_server

        server = make_server(listener.getsockname()[0], listener.getsockname()[1], app, threaded=True,
                             request_handler=_werkzeug_handler(), fd=listener.fileno())
        listener.close()  # the server works on its own duplicate of the descriptor
        try:
            server.serve_forever()
        finally:
            server.server_close()


def _former_data_dir_note(config: Config) -> str | None:
    """A warning when ``./.eventbus`` (the data dir of earlier versions) exists but the
    per-user default is used, so its secret key and webhook outbox are not silently ignored."""
    former = Path(".eventbus")
    if "data_dir" in config.configured or not former.is_dir():
        return None
    if former.resolve() == Path(config.data_dir).resolve():
        return None
    return (f"./.eventbus holds a data dir of an earlier version (secret key, webhook outbox) that "
            f"this server does not use: it uses {config.data_dir}. Set EVENTBUS_DATA_DIR=./.eventbus "
            "to keep using it, or move its files there")


@click.command("serve")
@click.option("--host", default=None, help="Interface to bind (EVENTBUS_HOST, default 127.0.0.1).")
@click.option("--port", type=int, default=None,
              help="Port for HTTP and Socket.IO (EVENTBUS_PORT, default 5050; 0: any free port).")
@click.option("--async-mode", type=click.Choice(ASYNC_MODES), default=None,
              help="gevent (the default when installed), threading or eventlet (WEBSOCKET_ASYNC_MODE).")
@click.option("--demo", is_flag=True, help="Run simulated agents in-process so the live page fills.")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]),
              help="Log level of the server.")
def serve_command(host: str | None, port: int | None, async_mode: str | None, demo: bool, log_level: str) -> None:
    """Run the Socket.IO server and HTTP API on one port."""
    import logging

    config: Config = _state().config
    mode = serve_mode(config, async_mode)
    _ensure_patched(mode)
    config.async_mode = mode
    config.host = host or config.host
    config.port = config.port if port is None else port
    logging.basicConfig(level=getattr(logging, log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    listener = listen(config.host, config.port)  # before anything is started or printed
    try:
        config.port = listener.getsockname()[1]  # the port chosen for --port 0
        note = _former_data_dir_note(config)
        if note:
            logging.getLogger("eventbus.config").warning(note)

        from .app import create_app

        app = create_app(config)
    except BaseException:
        listener.close()
        raise
    manager = app.extensions["eventbus"]
    url = f"http://{config.host if config.host not in ('0.0.0.0', '::') else '127.0.0.1'}:{config.port}"
    token = _local_token(config, "admin", ["admin", "publisher"], 24 * 3600)
    click.echo(f"eventbus {mode} server on {url}  (Socket.IO namespaces /chat /monitoring /admin)")
    if token:
        click.echo(f"  admin token (24 h): {token}")
        click.echo(f"  live page:          {url}/#token={token}")
    click.echo(f"  status:             {url}/api/websocket/status")
    click.echo(f"  data dir:           {config.data_dir}")
    sys.stdout.flush()
    if demo:
        from .demo import start_demo

        start_demo(manager)
    from eventbus.forwarder import announce, remove_server_file

    announced = announce(config, config.host, config.port)  # agents in other processes find it
    try:
        _run(app, manager, listener, mode, debug=log_level == "debug")
    finally:
        remove_server_file(announced)
        listener.close()
        manager.bus.close()


def no_server(base: str) -> str:
    """The one-line error of a command that found no server at ``base``."""
    return f"no eventbus server at {redact_url(base)}: is `eventbus serve` running? (EVENTBUS_URL/--url)"


def server_base(config: Config, url: str | None) -> str:
    """The server a command talks to: ``--url``/``EVENTBUS_URL``, else the one the local
    server announced in the data dir (``server.json``), else ``http://127.0.0.1:EVENTBUS_PORT``."""
    from eventbus.forwarder import read_server_file

    if not url:
        info = read_server_file(config)
        url = info["url"] if info is not None else f"http://127.0.0.1:{config.port}"
    return url.rstrip("/")


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
@click.option("--url", default=None, envvar="EVENTBUS_URL",
              help="Server URL (EVENTBUS_URL; default: the local server, else http://127.0.0.1:EVENTBUS_PORT).")
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
    base = server_base(config, url)
    headers = {"Authorization": f"Bearer {_default_token(config, token, ['publisher', 'agent'])}"}
    try:
        response = requests.post(f"{base}/api/events", json=body, timeout=10, headers=headers)
    except requests.exceptions.SSLError as exc:
        raise click.ClickException(f"TLS with {redact_url(base)} failed: {_reason(exc)}") from None
    except requests.Timeout:
        raise click.ClickException(f"{redact_url(base)} did not answer within 10 s") from None
    except requests.ConnectionError:
        raise click.ClickException(no_server(base)) from None
    except requests.RequestException as exc:
        raise click.ClickException(f"cannot reach {redact_url(base)}: {_reason(exc)}") from None
    try:
        answer = response.json()
    except ValueError:
        raise click.ClickException(f"{redact_url(base)} answered {response.status_code} without JSON: "
                                   "is it an eventbus server? (EVENTBUS_URL/--url)") from None
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
@click.option("--url", default=None, envvar="EVENTBUS_URL",
              help="Server URL (EVENTBUS_URL; default: the local server, else http://127.0.0.1:EVENTBUS_PORT).")
@click.option("--namespace", default="/monitoring", show_default=True, help="Namespace to connect to.")
@click.option("--room", "rooms", multiple=True, help="Room to join (repeatable).")
@click.option("--type", "types", multiple=True, help="Only these event types; globs allowed (repeatable).")
@click.option("--token", default=None, help="Bearer token (EVENTBUS_TOKEN; default: a local admin token).")
@click.option("--json", "as_json", is_flag=True, help="Print raw envelopes, one JSON per line.")
@click.option("--count", type=int, default=None, help="Exit after this many events.")
def tail_command(url: str | None, namespace: str, rooms: tuple[str, ...], types: tuple[str, ...],
                 token: str | None, as_json: bool, count: int | None) -> None:
    """Print events live as a client sees them: in seq order, resuming after a reconnect."""
    from eventbus.events import EventRegistry
    from eventbus_client import EventBusClient, EventBusClientError

    config: Config = _state().config
    base = server_base(config, url)
    registry = EventRegistry()
    colour = sys.stdout.isatty() and not as_json
    seen = 0
    done = threading.Event()

    def wanted(event_type: str) -> bool:
        return not types or any(fnmatch.fnmatchcase(event_type, pattern) for pattern in types)

    def on_any(event_type: str, envelope: dict[str, Any]) -> None:
        nonlocal seen
        if not wanted(event_type) or (count is not None and seen >= count):
            return
        category = registry.get(event_type).category if event_type in registry else None
        click.echo(json.dumps(envelope) if as_json else format_event(envelope, category, colour))
        seen += 1
        if count is not None and seen >= count:
            done.set()

    def on_error(error: BaseException) -> None:
        if connected.is_set():  # before, connect() raises it and it is reported once, below
            click.echo(f"# error: {error}", err=True)

    connected = threading.Event()
    client = EventBusClient(base, namespace, token=_default_token(config, token, ["admin"]), rooms=rooms,
                            on_resync=lambda info: click.echo(f"# resync: {json.dumps(info)}", err=True),
                            on_error=on_error)
    client.on("*", on_any)
    try:
        client.connect(timeout=10)
        connected.set()
    except EventBusClientError as exc:
        client.close()
        if exc.code == "connection_failed":
            raise click.ClickException(no_server(base)) from None
        raise click.ClickException(f"cannot connect to {redact_url(base)}{namespace}: {exc}") from None
    click.echo(f"# connected to {redact_url(base)}{namespace}", err=True)
    try:
        while not done.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
