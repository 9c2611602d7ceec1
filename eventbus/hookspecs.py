"""Every hook eventbus calls, with its contract in the docstring.

Plugins implement them with :data:`hookimpl`; all arguments are passed by keyword.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from .bus import EventBus
    from .config import Config
    from .events import Event, EventTypeSpec
    from .identity import Identity, RequestContext
    from .settings import Setting
    from .transport import Transport

PROJECT = "eventbus"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec(historic=True)
def eventbus_configure(config: Config) -> None:
    """Called once with the validated settings, also for plugins registered later.

    :param config: the bus's :class:`~eventbus.config.Config`; read plugin settings with
        ``config.plugin_settings("name")`` or ``config.env``. Raise
        :class:`~eventbus.config.ConfigError` to stop start-up with a clear message.
    """


@hookspec
def eventbus_declare_settings() -> Iterable[Setting]:
    """Declare the settings this plugin reads: each a :class:`~eventbus.settings.Setting`
    (name, environment variable, default, parser, help). Called once when the plugins are
    loaded, before ``eventbus_configure``: the core reads every declared setting from the
    environment and ``eventbus.toml`` and validates it, so a bad value stops start-up with
    one line naming its variable. Read the values as ``config.<name>``.

    :return: the plugin's settings.
    """
    return ()


@hookspec
def eventbus_register_event_types(register: Callable[..., EventTypeSpec]) -> None:
    """Add event types to the registry.

    :param register: ``register(EventTypeSpec(...))`` or
        ``register("deploy_finished", category="ops", namespace="/monitoring", room="monitoring")``.
    """


@hookspec
def eventbus_register_transports(register: Callable[[Transport], None], config: Config) -> None:
    """Add delivery transports; each gets its own worker and bounded queue.

    :param register: call ``register(transport)`` with a
        :class:`~eventbus.transport.Transport` instance.
    :param config: the bus settings.
    """


@hookspec(firstresult=True)
def eventbus_authenticate(auth: Mapping[str, Any], environ: Mapping[str, Any],
                          request: RequestContext) -> Identity | None:
    """Turn a request into an identity. The first non-``None`` answer wins.

    Every request reaches the strategies, with or without a token, so a strategy may
    authenticate by a session cookie, a header set by a trusted proxy or a client
    certificate. Order: plugins' strategies first (pluggy calls the last registered
    first; ``tryfirst=True`` moves one ahead), the built-in strategies of ``eventbus_auth``
    (API keys, identity-provider JWTs, ``EVENTBUS_AUTH_VALIDATOR``, eventbus's own JWTs)
    last, so a built-in check never refuses a token that a plugin would have accepted.
    When no strategy answers, the request is refused ``unauthorized``.

    :param auth: the client's credentials: the Socket.IO ``auth`` payload, or
        ``{"token": ...}`` from an ``Authorization: Bearer`` header; empty when the client
        sent none.
    :param environ: the WSGI environ of the request, when there is one.
    :param request: the request as any client transport gives it: ``transport``,
        ``headers`` (lower-case names), ``cookies``, ``query``, ``remote_addr``, ``path``
        (:class:`~eventbus.identity.RequestContext`).
    :return: an :class:`~eventbus.identity.Identity`, or ``None`` when this strategy does
        not recognise the request. Raise :class:`~eventbus.identity.AuthError` to refuse
        outright (``token_expired``, ``unauthorized``).
    """


@hookspec(firstresult=True)
def eventbus_authorize(identity: Identity, namespace: str, room: str | None, action: str) -> bool | None:
    """Decide whether ``identity`` may do ``action``. The first non-``None`` answer wins;
    no answer at all means deny.

    :param identity: who is asking.
    :param namespace: the Socket.IO namespace (``/chat``, ``/monitoring``, ``/admin``), or
        ``"http"`` for the HTTP API.
    :param room: the room concerned, or ``None``.
    :param action: ``connect``, ``join``, ``publish`` (client or HTTP events),
        ``history`` (reading past events), ``admin``, or ``act_as`` (publishing over HTTP
        with a ``user_id`` other than the caller's own; ``room`` is the event's room).
    :return: ``True`` to allow, ``False`` to deny, ``None`` to let the next plugin decide.
    """


@hookspec(firstresult=True)
def eventbus_issue_token(user: str, roles: Sequence[str], ttl: float) -> str | None:
    """Mint a bearer token that this installation's servers accept. The first non-``None``
    answer wins. eventbus's own clients use it: a bus in an agent process forwards its
    events to the server with a token for ``user`` with roles ``publisher`` and ``agent``.

    :param user: the token's user id.
    :param roles: the roles it grants.
    :param ttl: its lifetime in seconds.
    :return: the token, or ``None`` when this plugin does not issue tokens (then the
        client sends none, unless ``EVENTBUS_TOKEN`` gives one).
    """


@hookspec
def eventbus_event(event: Event) -> bool | None:
    """See every event before delivery; change ``event`` in place to transform or redact it.

    Called in the emitter's thread, after the envelope is built and before ``seq`` is
    assigned. Keep it fast.

    :param event: the :class:`~eventbus.events.Event` about to be delivered.
    :return: ``False`` to drop the event (counted as ``dropped_by_hook``); anything else
        keeps it. Wrappers (``@hookimpl(wrapper=True)``) get the list of results from
        ``yield`` and may return ``[False]`` to drop.
    """


@hookspec
def eventbus_register_routes(app: Any, bus: EventBus) -> None:
    """Add HTTP endpoints to the server's web app, on the same port as everything else.

    Called once per app by the server (``eventbus serve``, or ``SocketManager.init_app`` in
    your own Flask app), after the built-in routes. Register routes or a blueprint on
    ``app``; sign callers in with ``bus.identify(RequestContext.from_environ(
    flask.request.environ, "http"))``, which asks the ``eventbus_authenticate`` strategies
    and raises :class:`~eventbus.identity.AuthError` when none accepts the request.

    :param app: the Flask application.
    :param bus: the :class:`~eventbus.bus.EventBus` the app serves.
    """


@hookspec
def eventbus_register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``eventbus`` command line.

    :param cli: the root :class:`click.Group`; call ``cli.add_command(command)``.
    """
