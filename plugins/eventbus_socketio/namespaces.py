"""The Socket.IO namespaces ``/chat``, ``/monitoring`` and ``/admin`` as namespace classes.

Every client event answers with an ack ``{"ok": true, ...}`` or
``{"ok": false, "error": {"code", "message"}}``; a bad message never drops the connection.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from flask import request
from flask_socketio import ConnectionRefusedError, Namespace

from eventbus.events import (
    ADMIN_NAMESPACE,
    ADMIN_ROOM,
    CHAT_NAMESPACE,
    MONITORING_NAMESPACE,
    MONITORING_ROOM,
    EventBusError,
    InvalidEventError,
    session_room,
    validate_room,
)
from eventbus.identity import AuthError
from eventbus.redact import clean

from .packets import InvalidPacket

if TYPE_CHECKING:
    from .manager import Connection, SocketManager

log = logging.getLogger("eventbus.socketio")


class Refused(ConnectionRefusedError):
    """A connect refusal. The browser client sees ``err.message`` and ``err.data.code``;
    the Python client's ``connect_error`` handler gets ``{"message", "code", "data"}``."""

    def __init__(self, exc: EventBusError):
        super().__init__(str(exc))
        self.error_args = {"message": str(exc), "code": exc.code, "data": exc.to_dict()}


class ClientError(EventBusError):
    """A refusal sent back in an ack."""


def error_ack(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


def _sid() -> str:
    """The Socket.IO session id of the client being handled (Flask-SocketIO sets it on
    the request of every event)."""
    return request.sid  # type: ignore[attr-defined]  # set by Flask-SocketIO; Flask does not declare it


def _require_dict(data: Any, event: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ClientError(f"{event} expects a JSON object", code="invalid_payload")
    return data


def _opt_seq(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ClientError(f"{field} must be a non-negative integer", code="invalid_payload")
    return value


class EventBusNamespace(Namespace):
    """Shared connect, rooms and resume logic. ``default_room`` is joined on connect."""

    default_room: str | None = None
    #: client events this namespace answers; anything else gets ``unknown_event``.
    client_events: tuple[str, ...] = ("join_room", "leave_room", "resume")

    def __init__(self, namespace: str, manager: SocketManager):
        super().__init__(namespace)
        self.manager = manager

    # -- dispatch -------------------------------------------------------------------
    def trigger_event(self, event: str, *args: Any) -> Any:
        """Run a handler. ``connect`` and ``disconnect`` arrive here only from the server
        itself: a client event of that name is refused before dispatch (``engine.py``);
        every client event must be in :attr:`client_events`."""
        if event in ("connect", "disconnect"):
            return super().trigger_event(event, *args)
        sid = args[0] if args else None
        manager = self.manager
        conn = manager.connections.get(sid) if sid is not None else None
        if conn is None:
            return error_ack("unauthorized", "not connected")
        if isinstance(event, InvalidPacket):  # refused while decoding (packets.py)
            manager.refuse(conn, "packet", event.code)
            return error_ack(event.code, event.message)
        if event not in self.client_events:
            manager.refuse(conn, event, "unknown_event")
            return error_ack("unknown_event", f"{self.namespace} does not handle {event!r}")
        if not conn.bucket.take():
            manager.refuse(conn, event, "rate_limited")
            return error_ack("rate_limited", "too many events; slow down")
        if len(args) != 2:
            manager.refuse(conn, event, "invalid_payload")
            return error_ack("invalid_payload", f"{event} takes exactly one argument")
        try:
            return super().trigger_event(event, *args)
        except (ClientError, InvalidEventError, AuthError) as exc:
            manager.refuse(conn, event, exc.code)
            return error_ack(exc.code, str(exc))
        except EventBusError as exc:  # the server could not take it now (e.g. the outbox)
            manager.refuse(conn, event, exc.code)
            return error_ack(exc.code, str(exc))
        except Exception:  # a handler bug must not reach the client
            manager.counters["handler_errors"] += 1
            log.exception("handler error sid=%s user=%s namespace=%s event=%s",
                          clean(sid), clean(conn.identity.user_id), self.namespace, clean(event))
            self.socketio.server.emit(
                "error", {"code": "internal_error", "message": f"{event} failed on the server"},
                to=sid, namespace=self.namespace, ignore_queue=True)
            return error_ack("internal_error", f"{event} failed on the server")

    # -- lifecycle ------------------------------------------------------------------
    def on_connect(self, auth: Any = None) -> None:
        manager = self.manager
        environ = request.environ
        auth = auth if isinstance(auth, dict) else {}
        try:
            identity = manager.authenticate(auth, environ)
            if not manager._bus.authorize(identity, self.namespace, None, "connect"):
                raise AuthError(f"{identity.user_id} may not connect to {self.namespace}", code="forbidden")
        except AuthError as exc:
            manager.auth_failed(self.namespace, exc, environ)
            raise Refused(exc) from None
        try:
            conn = manager.connected(_sid(), self.namespace, identity, environ,
                                     batched=auth.get("batch") is True)
        except ClientError as exc:  # a limit (too_many_connections): refused, counted
            manager.connect_refused(self.namespace, identity, exc.code, environ)
            raise Refused(exc) from None
        try:
            self._enter_rooms(conn, auth.get("resume"))
        except Exception:
            manager.disconnected(_sid(), "connect failed")  # give back the user's slot
            raise

    def _enter_rooms(self, conn: Connection, resume: Any) -> None:
        """The default room, then the rooms of ``auth.resume``. A refused resume leaves the
        connection standing: it is counted and told to the client as an ``error`` event
        ``{code, message}`` (a connect has no ack)."""
        manager = self.manager
        resumed_rooms = resume.get("rooms") if isinstance(resume, dict) else None
        if self.default_room and not (isinstance(resumed_rooms, dict) and self.default_room in resumed_rooms):
            manager.join(conn, self.default_room)
        if isinstance(resume, dict):
            try:
                # Each room costs a rate-limit token here too (the connect itself is free).
                manager.resume(conn, resume, paid=0)
            except (ClientError, InvalidEventError) as exc:
                manager.refuse(conn, "resume", exc.code)
                self.socketio.server.emit(
                    "error", {"code": exc.code, "message": f"resume in connect refused: {exc}"},
                    to=_sid(), namespace=self.namespace, ignore_queue=True)
                if self.default_room and self.default_room not in conn.rooms:
                    manager.join(conn, self.default_room)

    def on_disconnect(self, reason: Any = None) -> None:
        self.manager.disconnected(_sid(), reason)

    # -- rooms ----------------------------------------------------------------------
    def on_join_room(self, data: Any) -> dict[str, Any]:
        data = _require_dict(data, "join_room")
        room = validate_room(data.get("room"))
        conn = self.manager.connections[_sid()]
        return self.manager.join(conn, room, after=_opt_seq(data.get("after"), "after"),
                                 epoch=data.get("epoch"))

    def on_leave_room(self, data: Any) -> dict[str, Any]:
        data = _require_dict(data, "leave_room")
        room = validate_room(data.get("room"))
        return self.manager.leave(self.manager.connections[_sid()], room)

    def on_resume(self, data: Any) -> dict[str, Any]:
        return self.manager.resume(self.manager.connections[_sid()], _require_dict(data, "resume"))


class ChatNamespace(EventBusNamespace):
    client_events = (*EventBusNamespace.client_events, "chat_message", "typing_indicator")

    def _session(self, data: dict[str, Any]) -> tuple[str, str]:
        session_id = data.get("session_id")
        if not isinstance(session_id, str) or not session_id:
            raise ClientError("session_id must be a non-empty string", code="invalid_payload")
        return session_id, validate_room(session_room(session_id))

    def on_chat_message(self, data: Any) -> dict[str, Any]:
        data = _require_dict(data, "chat_message")
        session_id, room = self._session(data)
        message = data.get("message")
        limit = self.manager.config.chat_max_length
        if not isinstance(message, str) or not message.strip():
            raise ClientError("message must be a non-empty string", code="invalid_payload")
        if len(message) > limit:
            raise ClientError(f"message is {len(message)} characters; the limit is {limit}",
                              code="payload_too_large")
        conn = self.manager.connections[_sid()]
        self.manager.require(conn, room, "publish")
        extra = data.get("metadata")
        payload: dict[str, Any] = {"message": message}
        if extra is not None:
            payload["metadata"] = _require_dict(extra, "metadata")
        event = self.manager._bus.emit("chat_message", payload, session_id=session_id,
                                       user_id=conn.identity.user_id, source="client", origin="client")
        if event is None:
            return {"ok": True, "dropped": True}
        return {"ok": True, "id": event.id, "seq": event.seq, "room": room}

    def on_typing_indicator(self, data: Any) -> dict[str, Any]:
        data = _require_dict(data, "typing_indicator")
        session_id, room = self._session(data)
        typing = data.get("typing", True)
        if not isinstance(typing, bool):
            raise ClientError("typing must be true or false", code="invalid_payload")
        conn = self.manager.connections[_sid()]
        self.manager.require(conn, room, "publish")
        if not self.manager.typing_allowed(conn.identity.user_id, room, typing):
            return {"ok": True, "throttled": True}
        self.manager._bus.emit("typing_indicator", {"typing": typing, "user": conn.identity.user_id},
                               session_id=session_id, user_id=conn.identity.user_id,
                               source="client", origin="client")
        return {"ok": True}


class MonitoringNamespace(EventBusNamespace):
    default_room = MONITORING_ROOM


class AdminNamespace(EventBusNamespace):
    default_room = ADMIN_ROOM


NAMESPACE_CLASSES = {
    CHAT_NAMESPACE: ChatNamespace,
    MONITORING_NAMESPACE: MonitoringNamespace,
    ADMIN_NAMESPACE: AdminNamespace,
}
