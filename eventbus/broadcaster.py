"""``EventBroadcaster``: the original brief's method names as thin calls into the bus."""

from __future__ import annotations

from typing import Any

from .bus import EventBus
from .events import Event, EventType


class EventBroadcaster:
    def __init__(self, bus: EventBus):
        self.bus = bus

    def broadcast_chat_message(self, message: str, user_id: str, session_id: str) -> Event | None:
        """Broadcast a chat message to every client in ``session:<session_id>``."""
        return self.bus.emit(EventType.CHAT_MESSAGE, {"message": message, "user_id": user_id},
                             user_id=user_id, session_id=session_id)

    def broadcast_agent_activity(self, agent_name: str, activity: str,
                                 details: dict[str, Any] | None = None) -> Event | None:
        """Broadcast agent activity to /monitoring: ``started`` becomes ``agent_started``,
        ``completed`` (or anything else) ``agent_completed``."""
        event_type = EventType.AGENT_STARTED if activity == "started" else EventType.AGENT_COMPLETED
        return self.bus.emit(event_type,
                             {"agent_name": agent_name, "activity": activity, "details": details or {}},
                             source=agent_name)
