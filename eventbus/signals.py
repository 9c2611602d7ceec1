"""One blinker signal per event type, in one namespace.

Agents send them (``signals.agent_started.send("researcher", session_id="s-1", details={...})``);
the bus listens to every one, and sends them itself for events that arrive from clients or
HTTP, with the :class:`~eventbus.events.Event` as the ``event`` keyword.
"""

from blinker import Namespace, NamedSignal

namespace = Namespace()

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
