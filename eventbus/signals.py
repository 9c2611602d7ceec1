"""One blinker signal per event type, in one namespace.

Agents send them (``signals.agent_started.send("researcher", session_id="s-1", details={...})``);
the bus listens to every one, and sends them itself for events that arrive from clients or
HTTP, with the :class:`~eventbus.events.Event` as the ``event`` keyword.

Zero setup: in a process that never made an :class:`~eventbus.bus.EventBus` (an agent script,
a worker, a notebook), the first signal sent creates a *default bus*,
``EventBus.from_env()``, which forwards the events to the running server (see
:mod:`eventbus.forwarder`) and is closed at interpreter exit, waiting a few seconds for the
server to take what it buffered. A process that makes a bus of its own (the server, an app
with ``init_app``, tests) never gets the default bus; one made after it takes over, and the
default bus stops listening. Receivers that agents connect are not affected.
"""

import atexit
import inspect
import logging
import threading
import weakref
from typing import Any

from blinker import NamedSignal, Namespace

log = logging.getLogger("eventbus.signals")

_state = threading.RLock()
#: Buses whose receivers are connected to the signals now.
_listening: "weakref.WeakSet[Any]" = weakref.WeakSet()
#: True until the process makes a bus of its own: until then a signal creates the default bus.
_default_allowed = True
_making_default = False
_default: Any = None


class IsolatingSignal(NamedSignal):
    """A signal whose receivers cannot break each other or the sender: plain blinker lets
    the first receiver that raises stop the rest (the bus among them). A failing receiver
    is logged, counted in ``receiver_failures``, and its exception is its result."""

    receiver_failures = 0

    def send(self, sender: Any = None, /, *, _async_wrapper: Any = None, **kwargs: Any) -> list[tuple[Any, Any]]:
        if self.is_muted:
            return []
        if _default_allowed and not _listening and "event" not in kwargs:
            _ensure_default_bus()  # its receivers are connected before they are looked up below
        results = []
        for receiver in self.receivers_for(sender):
            call = receiver
            if inspect.iscoroutinefunction(receiver):
                if _async_wrapper is None:
                    raise RuntimeError("Cannot send to a coroutine function.")
                call = _async_wrapper(receiver)
            try:
                results.append((receiver, call(sender, **kwargs)))
            except Exception as exc:  # one agent's bug must not stop the others
                self.receiver_failures += 1
                log.exception("receiver %r of signal %s failed (sender %r)", receiver, self.name, sender)
                results.append((receiver, exc))
        return results


class IsolatingNamespace(Namespace):
    def signal(self, name: str, doc: str | None = None) -> NamedSignal:
        if name not in self:
            self[name] = IsolatingSignal(name, doc)
        return self[name]


namespace = IsolatingNamespace()

chat_message = namespace.signal("chat_message")
chat_response = namespace.signal("chat_response")
typing_indicator = namespace.signal("typing_indicator")
agent_started = namespace.signal("agent_started")
agent_completed = namespace.signal("agent_completed")
tool_executed = namespace.signal("tool_executed")
agent_handoff = namespace.signal("agent_handoff")
health_update = namespace.signal("health_update")
performance_update = namespace.signal("performance_update")
alert_created = namespace.signal("alert_created")
user_joined = namespace.signal("user_joined")
user_left = namespace.signal("user_left")


def signal(name: str) -> NamedSignal:
    """The signal of any event type, including ones registered by plugins."""
    return namespace.signal(str(name))


def default_bus() -> Any:
    """The default bus of this process (an :class:`~eventbus.bus.EventBus`), or ``None``
    when no signal created one."""
    return _default


def bus_created(bus: Any) -> None:
    """Called by every new bus: a bus of the process's own ends the default bus's turn."""
    global _default_allowed
    with _state:
        if _making_default:
            return
        _default_allowed = False
        default = _default
    if default is not None and not default.closed:
        default._disconnect_signals()
        log.info("a bus of this process listens to the signals now; the default bus stopped listening")


def bus_connected(bus: Any) -> None:
    _listening.add(bus)


def bus_disconnected(bus: Any) -> None:
    _listening.discard(bus)


def _ensure_default_bus() -> None:
    """Create the default bus once, unless the process has a bus of its own. Never raises
    into the agent: a configuration error is logged once and no default bus is made."""
    global _default_allowed, _making_default, _default
    with _state:
        if not _default_allowed or _listening or _default is not None:
            return
        from .bus import EventBus
        from .config import ConfigError

        _making_default = True
        try:
            _default = EventBus.from_env()
        except (ConfigError, OSError) as exc:
            _default_allowed = False
            log.error("eventbus: signals cannot reach a server: the default bus failed to start: %s", exc)
            return
        finally:
            _making_default = False
        atexit.register(_close_default)
    log.debug("default bus created (role decided on its first event)")


def _close_default() -> None:
    """At interpreter exit: deliver what the default bus holds, waiting at most
    ``EXIT_TIMEOUT`` seconds; what is left is counted and reported."""
    from .bus import EXIT_TIMEOUT

    bus = _default
    if bus is not None and not bus.closed:
        try:
            bus.close(EXIT_TIMEOUT)
        except Exception:  # exiting anyway
            log.exception("closing the default bus at exit failed")


def receiver_failures() -> dict[str, int]:
    """Failed receiver calls per signal, for the status page."""
    return {name: sig.receiver_failures for name, sig in namespace.items()
            if isinstance(sig, IsolatingSignal) and sig.receiver_failures}
