"""One blinker signal per event type, in one namespace.

Agents send them (``signals.agent_started.send("researcher", session_id="s-1", details={...})``);
the bus listens to every one, and sends them itself for events that arrive from clients or
HTTP, with the :class:`~eventbus.events.Event` as the ``event`` keyword.
"""

import inspect
import logging
from typing import Any

from blinker import Namespace, NamedSignal

log = logging.getLogger("eventbus.signals")


class IsolatingSignal(NamedSignal):
    """A signal whose receivers cannot break each other or the sender: plain blinker lets
    the first receiver that raises stop the rest (the bus among them). A failing receiver
    is logged, counted in ``receiver_failures``, and its exception is its result."""

    receiver_failures = 0

    def send(self, sender: Any = None, /, *, _async_wrapper: Any = None, **kwargs: Any) -> list[tuple[Any, Any]]:
        if self.is_muted:
            return []
        results = []
        for receiver in self.receivers_for(sender):
            call = receiver
            if inspect.iscoroutinefunction(receiver):
                if _async_wrapper is None:
                    raise RuntimeError("Cannot send to a coroutine function.")
                call = _async_wrapper(receiver)
            try:
                results.append((receiver, call(sender, **kwargs)))
            except Exception as exc:  # noqa: BLE001 - one agent's bug must not stop the others
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


def receiver_failures() -> dict[str, int]:
    """Failed receiver calls per signal, for the status page."""
    return {name: sig.receiver_failures for name, sig in namespace.items()
            if getattr(sig, "receiver_failures", 0)}
