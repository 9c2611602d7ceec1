"""The HTTP API on the Socket.IO port: status, health, publish, history and metrics.

Errors are JSON: ``{"ok": false, "error": {"code", "message"}}`` with a 4xx status.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, jsonify, request

from eventbus.events import EventBusError, EventTooLargeError, namespace_for_room, validate_room
from eventbus.identity import AuthError, Identity

from .metrics import render_metrics

if TYPE_CHECKING:
    from .manager import SocketManager

PUBLISH_FIELDS = {"type", "data", "room", "session_id", "user_id"}
_STATUS = {"unauthorized": 401, "token_expired": 401, "forbidden": 403, "payload_too_large": 413,
           "not_found": 404}


def _error(code: str, message: str, status: int | None = None) -> tuple[Response, int]:
    return jsonify({"ok": False, "error": {"code": code, "message": message}}), status or _STATUS.get(code, 400)


def register_http(app: Flask, manager: SocketManager) -> None:
    bp = Blueprint("eventbus", __name__)
    bus = manager.bus
    config = bus.config

    def identity_from_request() -> Identity:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("send Authorization: Bearer <token>", code="unauthorized")
        identity = bus.authenticate({"token": token.strip()}, request.environ)
        if identity is None:
            raise AuthError("the token was not accepted", code="unauthorized")
        return identity

    @bp.errorhandler(AuthError)
    def _auth_error(exc: AuthError) -> Any:
        manager.counters["http_auth_failures"] += 1
        manager.refusals[exc.code] += 1
        return _error(exc.code, str(exc))

    @bp.get("/api/websocket/status")
    def websocket_status() -> Any:
        return jsonify(manager.status())

    @bp.get("/api/health")
    def health() -> Any:
        transports = {w.name: w.snapshot()["health"].get("status", "ok") for w in bus.workers}
        down = [name for name, state in transports.items() if state == "down"]
        degraded = [name for name, state in transports.items() if state == "degraded"]
        state = "down" if down else "degraded" if degraded else "ok"
        body = {"status": state, "transports": transports, "websocket_enabled": manager.enabled}
        return jsonify(body), 503 if down else 200

    @bp.post("/api/events")
    def publish() -> Any:
        if request.content_length is not None and request.content_length > config.max_event_bytes * 2:
            manager.refusals["payload_too_large"] += 1
            return _error("payload_too_large", f"request body over {config.max_event_bytes * 2} bytes")
        identity = identity_from_request()
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            manager.refusals["invalid_payload"] += 1
            return _error("invalid_payload", "the body must be a JSON object with 'type' and 'data'")
        unknown = set(body) - PUBLISH_FIELDS
        if unknown:
            manager.refusals["invalid_payload"] += 1
            return _error("invalid_payload", f"unknown fields: {', '.join(sorted(unknown))}")
        if not isinstance(body.get("type"), str):
            manager.refusals["invalid_payload"] += 1
            return _error("invalid_payload", "'type' must be a string")
        for name in ("room", "session_id", "user_id"):
            if body.get(name) is not None and not isinstance(body[name], str):
                manager.refusals["invalid_payload"] += 1
                return _error("invalid_payload", f"{name!r} must be a string")
        try:
            spec = bus.registry.get(body["type"])
            room = bus.registry.resolve_room(spec, body.get("room"), body.get("session_id"))
            namespace = namespace_for_room(room, spec.namespace)
            if not bus.authorize(identity, "http", room, "publish"):
                raise AuthError(f"{identity.user_id} may not publish (needs role publisher or admin)",
                                code="forbidden")
            event = bus.emit(spec.name, body.get("data", {}), room=body.get("room"),
                             session_id=body.get("session_id"),
                             user_id=body.get("user_id") or identity.user_id,
                             source=f"http:{identity.user_id}", origin="http")
        except AuthError:
            raise
        except EventTooLargeError as exc:
            manager.refusals[exc.code] += 1
            return _error(exc.code, str(exc), 413)
        except EventBusError as exc:
            manager.refusals[exc.code] += 1
            return _error(exc.code, str(exc))
        if event is None:
            return jsonify({"ok": True, "dropped": True}), 202
        return jsonify({"ok": True, "id": event.id, "seq": event.seq, "room": event.room,
                        "namespace": namespace, "type": event.type}), 202

    @bp.get("/api/events")
    def history() -> Any:
        identity = identity_from_request()
        try:
            room = validate_room(request.args.get("room"))
            after = int(request.args.get("after", "0"))
            limit = min(int(request.args.get("limit", "1000")), 10000)
            if after < 0 or limit < 1:
                raise ValueError
        except ValueError:
            return _error("invalid_query", "'after' must be >= 0 and 'limit' >= 1")
        except EventBusError as exc:
            return _error(exc.code, str(exc))
        namespace = namespace_for_room(room, "/monitoring")
        if not bus.authorize(identity, namespace, room, "history"):
            raise AuthError(f"{identity.user_id} may not read {room}", code="forbidden")
        found = bus.history.since(room, after, limit)
        return jsonify({
            "ok": True,
            "room": room,
            "epoch": found.epoch,
            "latest_seq": found.latest_seq,
            "complete": found.complete,
            "events": [event.to_dict() for event in found.events],
        })

    def require_admin() -> Identity:
        identity = identity_from_request()
        if not bus.authorize(identity, "http", None, "admin"):
            raise AuthError(f"{identity.user_id} is not an admin", code="forbidden")
        return identity

    @bp.get("/api/connections")
    def connections() -> Any:
        require_admin()
        return jsonify({"ok": True, "connections": [c.describe() for c in list(manager.connections.values())]})

    @bp.post("/api/connections/disconnect")
    def disconnect() -> Any:
        """Close connections by ``sid`` or every connection of ``user_id``. ``mode`` is
        ``kick`` (a Socket.IO disconnect: clients stay away) or ``drop`` (the transport is
        closed as by a network failure: clients reconnect and resume)."""
        identity = require_admin()
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not (isinstance(body.get("sid"), str) or isinstance(body.get("user_id"), str)):
            return _error("invalid_payload", "send {\"sid\": ...} or {\"user_id\": ...}")
        targets = [c for c in list(manager.connections.values())
                   if c.sid == body.get("sid") or c.identity.user_id == body.get("user_id")]
        if manager.socketio is None:
            return _error("disabled", "Socket.IO is disabled", 409)
        mode = body.get("mode", "kick")
        if mode not in ("kick", "drop"):
            return _error("invalid_payload", "mode is 'kick' (final) or 'drop' (clients reconnect)")
        server = manager.socketio.server
        for conn in targets:
            if mode == "kick":
                server.disconnect(conn.sid, namespace=conn.namespace)
            else:
                # Cut the connection without a goodbye, as a network failure would: clients
                # see "transport close" and reconnect by themselves.
                eio_sid = server.manager.eio_sid_from_sid(conn.sid, conn.namespace)
                socket = server.eio.sockets.pop(eio_sid, None) if eio_sid is not None else None
                if socket is not None:
                    socket.close(wait=False, abort=True)
        manager.counters["admin_disconnects"] += len(targets)
        return jsonify({"ok": True, "disconnected": [c.sid for c in targets], "by": identity.user_id})

    @bp.get("/metrics")
    def metrics() -> Any:
        body, content_type = render_metrics(manager)
        return Response(body, content_type=content_type)

    @bp.after_app_request
    def cors(response: Response) -> Response:
        # The HTTP API follows the same origin list as Socket.IO.
        origin = request.headers.get("Origin")
        if origin and request.path.startswith("/api/") and (
                origin in config.cors_origins or "*" in config.cors_origins):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        return response

    app.register_blueprint(bp)
