"""The HTTP API on the Socket.IO port: status, health, publish, history and metrics.

Errors are JSON: ``{"ok": false, "error": {"code", "message"}}`` with a 4xx status.
"""

from __future__ import annotations

import hashlib
import json
import re
import selectors
import socket
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.wsgi import ClosingIterator

from eventbus.events import (
    EventBusError,
    EventTooLargeError,
    InvalidRoomError,
    namespace_for_room,
    parse_json,
    validate_room,
)
from eventbus.identity import AuthError, Identity, RequestContext

from .metrics import render_metrics

if TYPE_CHECKING:
    from .manager import SocketManager

PUBLISH_FIELDS = {"type", "data", "room", "session_id", "user_id", "id", "source"}
#: A publisher's event id: what ``evt_<hex>`` ids and most UUID-like ids look like.
EVENT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
#: Longest ``source`` (the agent's name) a publisher may give.
SOURCE_MAX_LENGTH = 200
#: An ``Idempotency-Key`` header: 1 to 255 visible ASCII characters.
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
_STATUS = {"unauthorized": 401, "token_expired": 401, "forbidden": 403, "payload_too_large": 413,
           "not_found": 404, "unavailable": 503}


#: Largest body of ``POST /api/connections/disconnect``: a sid or a user id and a mode.
SMALL_BODY_BYTES = 16 * 1024
#: Error codes of the HTTP errors Flask and Werkzeug raise themselves, on API paths.
_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
               413: "payload_too_large", 500: "internal_error"}


def _error(code: str, message: str, status: int | None = None) -> tuple[Response, int]:
    return jsonify({"ok": False, "error": {"code": code, "message": message}}), status or _STATUS.get(code, 400)


def read_json(limit: int, max_depth: int) -> Any:
    """Read the request body (at most ``limit`` bytes, whatever the encoding: see
    :func:`read_publish_json`) and parse it with :func:`eventbus.events.parse_json`. Raises
    :class:`~eventbus.events.EventTooLargeError`, :class:`~eventbus.events.InvalidJSONError`
    or :class:`~eventbus.events.TooDeepError`."""
    return read_publish_json(limit, limit, max_depth)


def read_publish_json(limit: int, batch_limit: int, max_depth: int) -> Any:
    """The request body for ``POST /api/events``, parsed: a body whose first non-blank byte
    is ``[`` (a batch) may have up to ``batch_limit`` bytes, any other body ``limit`` bytes.
    A chunked body is bounded too: Werkzeug ends such a stream only when the server says it
    does (``wsgi.input_terminated``, which gevent's and eventlet's servers do not set), so
    it is said here.

    A ``Content-Length`` over the larger limit is refused before reading, one over the
    smaller limit as soon as the body's first byte shows it is not a batch; a chunked body
    is read 64 KiB at a time and refused one byte past its limit, so at most that limit
    (plus 64 KiB) is kept. Raises like :func:`read_json`."""
    declared = request.content_length
    if declared is not None and declared > max(limit, batch_limit):
        raise EventTooLargeError(f"the request body is over {max(limit, batch_limit)} bytes")
    environ = request.environ
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        environ.setdefault("wsgi.input_terminated", True)
    request.max_content_length = max(limit, batch_limit) + 1
    stream = request.stream
    body = bytearray()
    chosen: int | None = None
    while True:
        if chosen is None:
            first = body.lstrip()[:1]
            if first:
                chosen = batch_limit if first == b"[" else limit
                if declared is not None and declared > chosen:
                    raise EventTooLargeError(f"the request body is over {chosen} bytes")
        if chosen is not None and len(body) > chosen:
            raise EventTooLargeError(f"the request body is over {chosen} bytes")
        chunk = stream.read(64 * 1024)
        if not chunk:
            break
        body += chunk
    if chosen is None:
        chosen = limit
    if len(body) > chosen:
        raise EventTooLargeError(f"the request body is over {chosen} bytes")
    return parse_json(bytes(body), max_depth)


class DrainUnreadBody:
    """WSGI middleware for Werkzeug's own server (async mode ``threading``): once a
    response is sent, what the client still sends of a body nobody read (a refused
    upload) is read and dropped 64 KiB at a time, until the client pauses for 10 ms.

    Werkzeug's server does the same after every response so that clients see the answer
    rather than a reset, but 10 MB at a time: about 20 MB of memory for each refused upload.
    With this in front it finds nothing left. gevent's and eventlet's servers already drop
    unread bodies 16 KiB at a time; their requests pass through untouched.

    Engine.IO reads a long-polling POST by its ``Content-Length``; one without it (a chunked
    upload, which no Socket.IO client sends) is answered ``411 length_required`` here, in
    every async mode, rather than passed on with its body unread.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]], engineio_path: str | None = None):
        self.app = app
        self.engineio_path = None if engineio_path is None else "/" + engineio_path.strip("/") + "/"

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if (self.engineio_path is not None and environ.get("REQUEST_METHOD") == "POST"
                and environ.get("CONTENT_LENGTH") in (None, "")
                and str(environ.get("PATH_INFO", "")).startswith(self.engineio_path)):
            return self._length_required(environ, start_response)
        sock = environ.get("werkzeug.socket")
        if sock is None or not (environ.get("CONTENT_LENGTH") not in (None, "", "0")
                                or "HTTP_TRANSFER_ENCODING" in environ):
            return self.app(environ, start_response)
        refused = []

        def respond(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            # Only a refusal leaves a body unread; its connection closes after the answer,
            # so what is dropped can never be the client's next request.
            if status[:1] in ("4", "5"):
                refused.append(True)
                headers = [h for h in headers if h[0].lower() != "connection"] + [("Connection", "close")]
            return start_response(status, headers, exc_info)

        body = self.app(environ, respond)
        if not refused:
            return body
        return ClosingIterator(_then_drain(body, sock), getattr(body, "close", None))


    @staticmethod
    def _length_required(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        body = json.dumps({"code": "length_required",
                           "message": "an Engine.IO POST needs a Content-Length"}).encode()
        start_response("411 Length Required", [("Content-Type", "application/json"),
                                               ("Content-Length", str(len(body))), ("Connection", "close")])
        sock = environ.get("werkzeug.socket")
        return [body] if sock is None else _then_drain([body], sock)


def _then_drain(body: Iterable[bytes], sock: socket.socket) -> Iterator[bytes]:
    yield from body
    selector = selectors.DefaultSelector()
    try:
        selector.register(sock, selectors.EVENT_READ)
        if not selector.select(timeout=0):
            return  # nothing waiting: the body was read (a client mid-upload fills the buffer)
        while selector.select(timeout=0.01):
            if not sock.recv(64 * 1024):
                break
    except (OSError, ValueError):
        pass  # the client went away: nothing left to drop
    finally:
        selector.close()


def _is_api_path() -> bool:
    return request.path.startswith("/api/") or request.path == "/metrics"


def _query_int(name: str, default: int, minimum: int) -> int:
    """Query parameter ``name`` as an integer >= ``minimum``; ``invalid_query`` names it."""
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise EventBusError(f"'{name}' must be an integer >= {minimum}, got {raw[:40]!r}",
                            code="invalid_query")
    return value


def register_http(app: Flask, manager: SocketManager) -> None:
    bp = Blueprint("eventbus", __name__)
    bus = manager._bus
    config = bus.config

    def identity_from_request() -> Identity:
        """The caller, from an ``Authorization: Bearer`` token or whatever else a strategy
        accepts in the request (a session cookie, a proxy's header)."""
        return bus.identify(RequestContext.from_environ(request.environ, "http"))

    @bp.errorhandler(AuthError)
    def _auth_error(exc: AuthError) -> Any:
        manager.counters["http_auth_failures"] += 1
        manager.refusals[exc.code] += 1
        return _error(exc.code, str(exc))

    def refuse(exc: EventBusError) -> tuple[Response, int]:
        manager.refusals[exc.code] += 1
        return _error(exc.code, str(exc))

    def http_error(exc: HTTPException) -> Any:
        """Errors Flask and Werkzeug raise (no route, wrong method, body too large, a
        failed handler) answer JSON on the API paths; other paths keep the app's pages."""
        if not _is_api_path():
            return exc
        status = exc.code or 500
        code = _HTTP_CODES.get(status) or (exc.name or "error").lower().replace(" ", "_")
        if status == 413 and request.max_content_length is not None:
            message = f"the request body is over {request.max_content_length} bytes"
        elif status >= 500:
            manager.counters["http_errors"] += 1
            message = "the server failed while handling the request (logged on the server)"
        else:
            message = exc.description or exc.name
        if status in (400, 413):
            manager.refusals[code] += 1
        response, status = _error(code, message, status)
        for name, value in exc.get_headers():
            if name.lower() == "allow":
                response.headers[name] = value
        return response, status

    if HTTPException not in app.error_handler_spec[None][None]:
        app.register_error_handler(HTTPException, http_error)

    @bp.get("/api/websocket/status")
    def websocket_status() -> Any:
        """Public: counts and totals, small whatever the number of rooms. A request with an
        admin Bearer token also gets ``detail`` (rooms, presence and history per room);
        ``?detail=1`` insists on it and is refused (401/403) without an admin token."""
        asked = request.args.get("detail", "0").lower() not in ("", "0", "false", "no")
        detail = False
        if asked or request.headers.get("Authorization"):
            try:
                require_admin()
                detail = True
            except AuthError:
                if asked:
                    raise
        return jsonify(manager.status(detail=detail))

    @bp.get("/api/event-types")
    def event_types() -> Any:
        """Every event type this server knows, built-in and registered by plugins, as the
        registry declares it: the live page and other clients learn names, categories,
        namespaces and rooms here instead of keeping a list of their own."""
        identity_from_request()
        return jsonify({"types": [
            {"name": spec.name, "category": spec.category, "namespace": spec.namespace, "room": spec.room,
             "also": [list(pair) for pair in spec.also], "history": spec.history,
             "description": spec.description, "schema": dict(spec.schema)}
            for spec in bus.registry]})

    @bp.get("/api/health")
    def health() -> Any:
        """``ok`` 200; ``down`` 503 (a transport is down); ``degraded`` with
        ``health_degraded_status`` (503 by default) while the backend (Redis) is away or
        events wait in its buffer, so a load balancer sends new clients elsewhere; a
        degraded transport alone (a failing webhook receiver) stays 200."""
        transports = {w.name: w.snapshot()["health"].get("status", "ok") for w in bus.workers}
        down = [name for name, state in transports.items() if state == "down"]
        degraded = [name for name, state in transports.items() if state == "degraded"]
        state = "down" if down else "degraded" if degraded else "ok"
        body: dict[str, Any] = {"status": state, "transports": transports, "websocket_enabled": manager.enabled}
        code = 503 if down else 200
        redis = bus.redis
        if redis is not None:
            backend_ok = redis.state == "ok" and not redis.pending
            body["backend"] = {"redis": "ok" if backend_ok else "degraded", "pending": len(redis.pending)}
            if not backend_ok and not down:
                state, code = "degraded", config.health_degraded_status
                body["status"] = state
        return jsonify(body), code

    def invalid(message: str) -> EventBusError:
        return EventBusError(message, code="invalid_payload")

    def publish_item(identity: Identity, body: Any, event_id: str | None = None) -> dict[str, Any]:
        """Publish one event of a request; the answer's item. Raises :class:`AuthError` or
        :class:`EventBusError` (counted by the caller) for an event that is refused."""
        if not isinstance(body, dict):
            raise invalid("an event must be a JSON object with 'type' and 'data'")
        unknown = set(body) - PUBLISH_FIELDS
        if unknown:
            raise invalid(f"unknown fields: {', '.join(sorted(unknown))}")
        if not isinstance(body.get("type"), str):
            raise invalid("'type' must be a string")
        for name in ("room", "session_id", "user_id", "source", "id"):
            if body.get(name) is not None and not isinstance(body[name], str):
                raise invalid(f"{name!r} must be a string")
        if body.get("source") is not None and len(body["source"]) > SOURCE_MAX_LENGTH:
            raise invalid(f"'source' must be at most {SOURCE_MAX_LENGTH} characters")
        if body.get("id") is not None:
            if not EVENT_ID.fullmatch(body["id"]):
                raise invalid("'id' must be 1 to 128 letters, digits or _.:-")
            if event_id is not None and event_id != body["id"]:
                raise invalid("send either an Idempotency-Key header or an 'id', not both")
            event_id = body["id"]
        spec = bus.registry.get(body["type"])
        room = bus.registry.resolve_room(spec, body.get("room"), body.get("session_id"))
        namespace = namespace_for_room(room, spec.namespace)
        if not bus.authorize(identity, "http", room, "publish"):
            raise AuthError(f"{identity.user_id} may not publish (needs role publisher or admin)",
                            code="forbidden")
        # An event speaks for its publisher unless the publisher may act for others (roles
        # admin, agent), who may also give the event's source, and no user (an explicit
        # null; for other publishers null means themselves).
        user_id = body.get("user_id") or identity.user_id
        if (user_id != identity.user_id or "source" in body) and not bus.authorize(
                identity, "http", room, "act_as"):
            raise AuthError(f"{identity.user_id} may not publish as another user or source "
                            "(needs role admin or agent)", code="forbidden")
        if "user_id" in body and body["user_id"] is None and bus.authorize(identity, "http", room, "act_as"):
            user_id = None
        source = body.get("source", f"http:{identity.user_id}")
        # What a /chat client may send, it may send here only where a /chat client could.
        if spec.name in ("chat_message", "typing_indicator") and not bus.authorize(
                identity, namespace, room, "publish"):
            raise AuthError(f"{identity.user_id} may not publish in {room}", code="forbidden")
        fields = {"room": body.get("room"), "session_id": body.get("session_id"), "user_id": user_id,
                      "source": source, "origin": "http"}
        if event_id is None:
            event = bus.emit(spec.name, body.get("data", {}), **fields)
            if event is None:
                return {"ok": True, "dropped": True}
            return {"ok": True, "id": event.id, "seq": event.seq, "room": event.room,
                    "namespace": namespace, "type": event.type}
        done = bus.emit_once(event_id, spec.name, body.get("data", {}), **fields)
        if done.dropped:
            return {"ok": True, "id": done.id, "dropped": True}
        answer: dict[str, Any] = {"ok": True, "id": done.id, "seq": done.seq, "room": done.room,
                                  "namespace": namespace, "type": done.type}
        if done.duplicate:
            manager.counters["http_duplicates"] += 1
            answer["duplicate"] = True
        return answer

    def idempotency_id(identity: Identity) -> str | None:
        """The event id an ``Idempotency-Key`` header stands for: the same key from the same
        user names the same event."""
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return None
        if not IDEMPOTENCY_KEY.fullmatch(key):
            raise invalid("Idempotency-Key must be 1 to 255 visible ASCII characters")
        digest = hashlib.sha256(f"{identity.user_id}\0{key}".encode()).hexdigest()
        return f"idem_{digest[:32]}"

    @bp.post("/api/events")
    def publish() -> Any:
        """Publish one event (a JSON object; 202 with its id and seq), or a batch (a JSON
        array of at most ``publish_max_batch`` events: 202 with one result per event, in
        order; a refused event leaves the others published). The token and its publish
        right are checked before a byte of the body is read; the body is at most twice
        ``max_event_bytes``, a batch at most ``publish_max_batch_bytes``. An event ``id``
        (or, for one event, an ``Idempotency-Key`` header) is published once: a repeat
        answers ``duplicate: true`` with the original seq when known."""
        identity = identity_from_request()
        if not bus.authorize(identity, "http", None, "publish"):
            raise AuthError(f"{identity.user_id} may not publish (needs role publisher or admin)",
                            code="forbidden")
        try:
            body = read_publish_json(config.max_event_bytes * 2, config.publish_max_batch_bytes,
                                     config.max_json_depth)
            if isinstance(body, list):
                return publish_batch(identity, body)
            if not isinstance(body, dict):
                raise invalid("the body must be a JSON object with 'type' and 'data', or an array of them")
            return jsonify(publish_item(identity, body, idempotency_id(identity))), 202
        except AuthError:
            raise
        except EventTooLargeError as exc:
            manager.refusals[exc.code] += 1
            return _error(exc.code, str(exc), 413)
        except EventBusError as exc:
            return refuse(exc)

    def publish_batch(identity: Identity, items: list[Any]) -> Any:
        if "Idempotency-Key" in request.headers:
            raise invalid("Idempotency-Key names one event: in a batch give each event an 'id'")
        if not items:
            raise invalid("the batch is empty")
        if len(items) > config.publish_max_batch:
            manager.refusals["too_many_events"] += 1
            return _error("too_many_events", f"a batch holds at most {config.publish_max_batch} events "
                          f"(EVENTBUS_PUBLISH_MAX_BATCH), got {len(items)}", 413)
        results: list[dict[str, Any]] = []
        for item in items:
            try:
                results.append(publish_item(identity, item))
            except (AuthError, EventBusError) as exc:
                manager.refusals[exc.code] += 1
                results.append({"ok": False, "error": {"code": exc.code, "message": str(exc)}})
        manager.counters["http_batches"] += 1
        failed = sum(1 for r in results if not r["ok"])
        duplicates = sum(1 for r in results if r.get("duplicate"))
        return jsonify({"ok": True, "published": len(results) - failed - duplicates,
                        "duplicates": duplicates, "failed": failed, "results": results}), 202

    @bp.get("/api/events")
    def history() -> Any:
        identity = identity_from_request()
        try:
            if "room" not in request.args:
                raise InvalidRoomError("'room' is required: GET /api/events?room=R&after=SEQ")
            room = validate_room(request.args["room"])
            after = _query_int("after", 0, 0)
            limit = min(_query_int("limit", 1000, 1), 10000)
        except EventBusError as exc:
            return refuse(exc)
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
        try:
            body = read_json(SMALL_BODY_BYTES, config.max_json_depth)
        except EventBusError as exc:
            return refuse(exc)
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
