"""Who is in which room, counting a user once however many tabs (sids) they have open."""

from __future__ import annotations

import threading
from collections import defaultdict


class Presence:
    """``(namespace, room) -> user_id -> {sid}``. A user joins on their first sid in a room
    and leaves with their last."""

    def __init__(self) -> None:
        self._rooms: dict[tuple[str, str], dict[str, set[str]]] = defaultdict(dict)
        self._lock = threading.Lock()

    def add(self, namespace: str, room: str, user_id: str, sid: str) -> bool:
        """Record ``sid``; True when this is the user's first connection in the room."""
        with self._lock:
            users = self._rooms[(namespace, room)]
            sids = users.setdefault(user_id, set())
            first = not sids
            sids.add(sid)
            return first

    def remove(self, namespace: str, room: str, user_id: str, sid: str) -> bool:
        """Forget ``sid``; True when it was the user's last connection in the room."""
        with self._lock:
            key = (namespace, room)
            users = self._rooms.get(key)
            if not users or sid not in users.get(user_id, ()):
                return False
            users[user_id].discard(sid)
            if users[user_id]:
                return False
            del users[user_id]
            if not users:
                del self._rooms[key]
            return True

    def members(self, namespace: str, room: str) -> list[str]:
        with self._lock:
            return sorted(self._rooms.get((namespace, room), {}))

    def rooms(self) -> dict[str, dict[str, int]]:
        """``{namespace: {room: users}}`` for the status page."""
        with self._lock:
            out: dict[str, dict[str, int]] = defaultdict(dict)
            for (namespace, room), users in self._rooms.items():
                out[namespace][room] = len(users)
            return dict(out)
