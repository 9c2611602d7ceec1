"""A client transport in one file: newline-delimited JSON over HTTP long-polling.

    GET /api/poll?room=monitoring&after=41          Authorization: Bearer <token>

answers with the room's events after seq 41, one JSON envelope per line, replayed from the
bus's history; when there are none yet it waits (up to ``wait`` seconds, default 25) for
the next one. The client sends the last seq it saw as ``after`` on its next request, so a
dropped connection loses nothing. ``X-Latest-Seq`` and ``X-Epoch`` tell where the room
stands; ``X-Complete: false`` means the history no longer holds everything after ``after``.

What it reuses: sign-in (``bus.identify``: tokens, API keys, and every strategy plugins
add), authorization (``bus.authorize``), room names (``validate_room``) and replay
(``bus.history``); a transport on the bus wakes the waiting requests.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from flask import Response, jsonify, request

from eventbus import AuthError, Event, RequestContext, Transport, hookimpl
from eventbus.events import EventBusError, namespace_for_room, validate_room

MAX_WAIT = 25.0
MAX_EVENTS = 500


class Wakeups(Transport):
    """Sees every event and wakes the requests waiting for its room."""

    name = "longpoll"
    fanout = True  # with Redis: every server's events, as the shared history has them

    def __init__(self) -> None:
        super().__init__()
        self.changed = threading.Condition()
        self.latest: dict[str, int] = {}

    def send(self, event: Event) -> None:
        if event.seq is None:
            return  # not kept in history (typing indicators): nothing to replay
        with self.changed:
            self.latest[event.room] = max(event.seq, self.latest.get(event.room, 0))
            self.changed.notify_all()


wakeups = Wakeups()


@hookimpl
def eventbus_register_transports(register: Any, config: Any) -> None:
    register(wakeups)


@hookimpl
def eventbus_register_routes(app: Any, bus: Any) -> None:
    def error(code: str, message: str, status: int) -> Response:
        response = jsonify({"ok": False, "error": {"code": code, "message": message}})
        response.status_code = status
        return response

    @app.get("/api/poll")
    def poll() -> Response:
        try:
            identity = bus.identify(RequestContext.from_environ(request.environ, "http"))
            room = validate_room(request.args.get("room", "monitoring"))
            after = max(0, int(request.args.get("after", "0")))
            wait = min(MAX_WAIT, max(0.0, float(request.args.get("wait", MAX_WAIT))))
        except AuthError as exc:
            return error(exc.code, str(exc), 401)
        except EventBusError as exc:
            return error(exc.code, str(exc), 400)
        except ValueError:
            return error("invalid_query", "after and wait are numbers", 400)
        if not bus.authorize(identity, namespace_for_room(room, "/monitoring"), room, "history"):
            return error("forbidden", f"{identity.user_id} may not read {room}", 403)
        found = bus.history.since(room, after, MAX_EVENTS)
        if not found.events and found.complete and wait > 0:
            deadline = time.monotonic() + wait
            with wakeups.changed:
                wakeups.changed.wait_for(lambda: wakeups.latest.get(room, 0) > after,
                                         timeout=max(0.0, deadline - time.monotonic()))
            found = bus.history.since(room, after, MAX_EVENTS)
        body = "".join(event.to_json() + "\n" for event in found.events)
        return Response(body, mimetype="application/x-ndjson", headers={
            "X-Latest-Seq": str(found.latest_seq), "X-Epoch": found.epoch,
            "X-Complete": "true" if found.complete else "false", "Cache-Control": "no-store"})
