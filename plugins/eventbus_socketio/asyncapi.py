"""An AsyncAPI 3.0 document of the Socket.IO and webhook interface, generated from the event
registry, so plugin event types appear in it as soon as they are registered.

``eventbus asyncapi [--output FILE]`` prints or writes it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import click

from eventbus.events import (
    ADMIN_NAMESPACE,
    ADMIN_ROOM,
    CHAT_NAMESPACE,
    MONITORING_NAMESPACE,
    MONITORING_ROOM,
    WIRE_FIELDS,
    EventRegistry,
    EventTypeSpec,
)

ASYNCAPI_VERSION = "3.0.0"

ENVELOPE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The envelope every transport carries; `data` is the type's payload.",
    "required": list(WIRE_FIELDS),
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "pattern": "^evt_", "description": "Unique event id."},
        "type": {"type": "string", "description": "The event type, also the Socket.IO event name."},
        "data": {"type": "object"},
        "timestamp": {"type": "string", "format": "date-time", "description": "ISO-8601 UTC, milliseconds."},
        "room": {"type": "string", "description": "The room the event was delivered to."},
        "seq": {"type": ["integer", "null"], "minimum": 1,
                "description": "Position in the room, strictly increasing; null for ephemeral types."},
        "user_id": {"type": ["string", "null"]},
        "session_id": {"type": ["string", "null"]},
        "source": {"type": ["string", "null"], "description": "Who emitted it (an agent's name, ...)."},
    },
}

ERROR_ACK: dict[str, Any] = {
    "type": "object",
    "required": ["ok", "error"],
    "properties": {
        "ok": {"const": False},
        "error": {"type": "object", "required": ["code", "message"],
                  "properties": {"code": {"type": "string"}, "message": {"type": "string"}}},
    },
}

#: Client events: (name, summary, payload schema, namespaces).
CLIENT_EVENTS: tuple[tuple[str, str, dict[str, Any], tuple[str, ...]], ...] = (
    ("join_room", "Join a room; with `after` (and `epoch`) replay what was missed first.",
     {"type": "object", "required": ["room"],
      "properties": {"room": {"type": "string"}, "after": {"type": "integer", "minimum": 0},
                     "epoch": {"type": "string"}}},
     (CHAT_NAMESPACE, MONITORING_NAMESPACE, ADMIN_NAMESPACE)),
    ("leave_room", "Leave a room.",
     {"type": "object", "required": ["room"], "properties": {"room": {"type": "string"}}},
     (CHAT_NAMESPACE, MONITORING_NAMESPACE, ADMIN_NAMESPACE)),
    ("resume", "Rejoin rooms after a reconnect and replay the events after each last seen seq.",
     {"type": "object", "required": ["rooms"],
      "properties": {"rooms": {"type": "object", "additionalProperties": {"type": ["integer", "null"]}},
                     "epoch": {"type": "string"}}},
     (CHAT_NAMESPACE, MONITORING_NAMESPACE, ADMIN_NAMESPACE)),
    ("chat_message", "Send a chat message to a session; agents receive it as a signal.",
     {"type": "object", "required": ["session_id", "message"],
      "properties": {"session_id": {"type": "string", "minLength": 1},
                     "message": {"type": "string", "minLength": 1},
                     "metadata": {"type": "object"}}},
     (CHAT_NAMESPACE,)),
    ("typing_indicator", "Say that you started or stopped typing in a session (throttled).",
     {"type": "object", "required": ["session_id"],
      "properties": {"session_id": {"type": "string", "minLength": 1}, "typing": {"type": "boolean"}}},
     (CHAT_NAMESPACE,)),
)


def _camel(*parts: str) -> str:
    words = [w for part in parts for w in re.split(r"[^A-Za-z0-9]+", part) if w]
    return words[0].lower() + "".join(w[:1].upper() + w[1:] for w in words[1:]) if words else "x"


def _component_key(name: str) -> str:
    # Component keys allow letters, digits, '.', '_' and '-'; event names already fit.
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name)


class _Channel:
    def __init__(self, key: str, namespace: str, address: str, description: str,
                 parameters: dict[str, Any] | None = None):
        self.key = key
        self.namespace = namespace
        self.address = address
        self.description = description
        self.parameters = parameters or {}
        self.server_events: list[str] = []
        self.client_events: list[str] = []


def _channels_for(registry: EventRegistry) -> list[_Channel]:
    """Socket.IO channels (namespace + room) and the event types each one carries."""
    session = _Channel("chatSession", CHAT_NAMESPACE, "session:{session_id}",
                       "A chat session's room in the `/chat` namespace; join it with `join_room`.",
                       {"session_id": {"description": "The chat session id."}})
    fixed: dict[tuple[str, str], _Channel] = {
        (MONITORING_NAMESPACE, MONITORING_ROOM): _Channel(
            "monitoring", MONITORING_NAMESPACE, MONITORING_ROOM,
            "Agent and system events in the `/monitoring` namespace; clients are in it on connect."),
        (ADMIN_NAMESPACE, ADMIN_ROOM): _Channel(
            "admin", ADMIN_NAMESPACE, ADMIN_ROOM,
            "Alerts for operators in the `/admin` namespace (role `admin`); clients are in it on connect."),
    }
    channels = [session, *fixed.values()]

    def channel(namespace: str, room: str | None) -> _Channel:
        if room is None:
            if namespace == CHAT_NAMESPACE:
                return session
            room = "{room}"
        key = (namespace, room)
        if key not in fixed:
            params = {"room": {"description": "The room name."}} if room == "{room}" else None
            fixed[key] = _Channel(_camel(namespace, room), namespace, room,
                                  f"Room `{room}` in the `{namespace}` namespace.", params)
            channels.append(fixed[key])
        return fixed[key]

    for spec in registry:
        if spec.category == "connection":
            targets = list(channels)  # presence events go to the room they concern: any room
        else:
            targets = [channel(spec.namespace, spec.room)]
            targets += [channel(ns, room) for ns, room in spec.also]
        for target in targets:
            if spec.name not in target.server_events:
                target.server_events.append(spec.name)
    for name, _summary, _schema, namespaces in CLIENT_EVENTS:
        for target in channels:
            if target.namespace in namespaces:
                target.client_events.append(name)
    return channels


def _event_message(spec: EventTypeSpec) -> dict[str, Any]:
    envelope = json.loads(json.dumps(ENVELOPE_SCHEMA))
    envelope["properties"]["type"] = {"const": spec.name}
    envelope["properties"]["data"] = json.loads(json.dumps(dict(spec.schema)))
    if not spec.history:
        envelope["properties"]["seq"] = {"type": "null"}
    return {
        "name": spec.name,
        "title": spec.name.replace("_", " ").capitalize(),
        "summary": spec.description or f"A {spec.name} event.",
        "contentType": "application/json",
        "payload": envelope,
        "tags": [{"name": spec.category}],
        "x-eventbus-history": spec.history,
    }


def build_asyncapi(registry: EventRegistry | None = None, *, version: str = "0.1.0",
                   host: str = "127.0.0.1:5050") -> dict[str, Any]:
    """The AsyncAPI 3.0 document for ``registry`` (the built-in types when omitted)."""
    registry = registry or EventRegistry()
    channels = _channels_for(registry)
    messages: dict[str, Any] = {}
    for spec in registry:
        messages[_component_key(spec.name)] = _event_message(spec)
    for name, summary, schema, _namespaces in CLIENT_EVENTS:
        messages[_component_key(f"client.{name}")] = {
            "name": name, "title": f"Client {name}", "summary": summary,
            "contentType": "application/json", "payload": schema, "tags": [{"name": "client"}]}
    messages["ack"] = {
        "name": "ack", "title": "Acknowledgement",
        "summary": "The answer to every client event: `{ok: true, ...}` or `{ok: false, error}`.",
        "payload": {"oneOf": [{"type": "object", "required": ["ok"], "properties": {"ok": {"const": True}}},
                              ERROR_ACK]}}
    messages["webhook"] = {
        "name": "webhook", "title": "Webhook delivery",
        "summary": "One event POSTed to a webhook endpoint, signed per Standard Webhooks.",
        "contentType": "application/json",
        "headers": {
            "type": "object", "required": ["webhook-id", "webhook-timestamp", "webhook-signature"],
            "properties": {
                "webhook-id": {"type": "string", "description": "The event id; the same across retries."},
                "webhook-timestamp": {"type": "string", "pattern": "^[0-9]+$",
                                      "description": "Unix seconds of this attempt."},
                "webhook-signature": {"type": "string",
                                      "description": "Space-separated `v1,<base64 HMAC-SHA256>` of "
                                                     "`id.timestamp.body`, one per active secret."},
            }},
        "payload": {
            "type": "object", "required": ["type", "timestamp", "data"],
            "properties": {"type": {"enum": registry.names()}, "timestamp": {"type": "string"},
                           "data": {"$ref": "#/components/schemas/Envelope"}}},
    }

    doc_channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for ch in channels:
        body: dict[str, Any] = {
            "address": ch.address,
            "title": f"{ch.namespace} {ch.address}",
            "description": ch.description,
            "servers": [{"$ref": "#/servers/socketio"}],
            "messages": {},
            "x-socketio-namespace": ch.namespace,
        }
        if ch.parameters:
            body["parameters"] = ch.parameters
        for name in ch.server_events:
            body["messages"][_component_key(name)] = {"$ref": f"#/components/messages/{_component_key(name)}"}
        for name in ch.client_events:
            key = _component_key(f"client.{name}")
            body["messages"][key] = {"$ref": f"#/components/messages/{key}"}
        body["messages"]["ack"] = {"$ref": "#/components/messages/ack"}
        doc_channels[ch.key] = body
        if ch.server_events:
            operations[_camel("send", ch.key)] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{ch.key}"},
                "title": f"Events to {ch.namespace} {ch.address}",
                "summary": "The server emits each event with its type as the Socket.IO event "
                           "name and the envelope as the single argument.",
                "messages": [{"$ref": f"#/channels/{ch.key}/messages/{_component_key(n)}"}
                             for n in ch.server_events],
            }
        for name in ch.client_events:
            key = _component_key(f"client.{name}")
            operations[_camel("receive", ch.key, name)] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{ch.key}"},
                "summary": f"`{name}` from a client, answered with an acknowledgement.",
                "messages": [{"$ref": f"#/channels/{ch.key}/messages/{key}"}],
                "reply": {"channel": {"$ref": f"#/channels/{ch.key}"},
                          "messages": [{"$ref": f"#/channels/{ch.key}/messages/ack"}]},
            }

    doc_channels["webhook"] = {
        "address": None,
        "title": "Webhook endpoint",
        "description": "Each configured endpoint URL (`EVENTBUS_WEBHOOKS`) receives the events its "
                       "`event_types` and `rooms` filters select, retried with backoff until a 2xx.",
        "servers": [{"$ref": "#/servers/webhookReceiver"}],
        "messages": {"webhook": {"$ref": "#/components/messages/webhook"}},
    }
    operations["deliverWebhook"] = {
        "action": "send",
        "channel": {"$ref": "#/channels/webhook"},
        "summary": "POST one signed event to an endpoint; any 2xx acknowledges it.",
        "bindings": {"http": {"method": "POST"}},
        "messages": [{"$ref": "#/channels/webhook/messages/webhook"}],
    }

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:eventbus:api",
        "info": {
            "title": "eventbus",
            "version": version,
            "description": (
                "Real-time events for AI-agent applications. Socket.IO namespaces `/chat`, "
                "`/monitoring` and `/admin`: connect with `auth: {token}`; the server emits each "
                "event with its type as the event name and the envelope as the single argument; "
                "client events are answered with an acknowledgement. The same envelopes reach "
                "webhook endpoints as Standard-Webhooks-signed POSTs."),
            "license": {"name": "MIT"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "socketio": {
                "host": host, "protocol": "ws", "pathname": "/socket.io/",
                "title": "Socket.IO server",
                "description": "Socket.IO (Engine.IO v4) on the HTTP port; the namespace is the "
                               "channel's `x-socketio-namespace`.",
                "security": [{"$ref": "#/components/securitySchemes/token"}],
            },
            "webhookReceiver": {
                "host": "receiver.example.com", "protocol": "https",
                "title": "Your webhook endpoint",
                "description": "Verify `webhook-signature` with the endpoint's `whsec_` secret "
                               "(any Standard Webhooks library) and de-duplicate on `webhook-id`.",
                "security": [{"$ref": "#/components/securitySchemes/webhookSignature"}],
            },
        },
        "channels": doc_channels,
        "operations": operations,
        "components": {
            "schemas": {"Envelope": ENVELOPE_SCHEMA},
            "messages": messages,
            "securitySchemes": {
                "token": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                          "description": "A token (`eventbus token create`) sent as Socket.IO "
                                         "`auth: {token}` or `Authorization: Bearer`; API keys "
                                         "are accepted as `auth: {api_key}`."},
                "webhookSignature": {"type": "symmetricEncryption",
                                     "description": "HMAC-SHA256 with the endpoint's shared "
                                                    "secret, in the `webhook-signature` header."},
            },
        },
    }


def _registry_from_plugins() -> EventRegistry:
    registry = EventRegistry()
    state = click.get_current_context().obj
    pm = getattr(state, "pm", None)
    if pm is not None:
        pm.hook.eventbus_register_event_types(register=registry.register)
    return registry


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


@click.command("asyncapi")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write to this file instead of standard output.")
@click.option("--host", default=None, help="host:port of the server in the document (default from EVENTBUS_HOST/PORT).")
def asyncapi_command(output: str | None, host: str | None) -> None:
    """Print the AsyncAPI 3.0 document of the Socket.IO and webhook interface (JSON)."""
    from eventbus import __version__

    state = click.get_current_context().obj
    config = getattr(state, "config", None)
    if host is None and config is not None:
        host = f"{config.host}:{config.port}"
    doc = build_asyncapi(_registry_from_plugins(), version=__version__, host=host or "127.0.0.1:5050")
    text = render(doc)
    if output:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)
        click.echo(f"wrote {output} ({len(doc['channels'])} channels, "
                   f"{len(doc['components']['messages'])} messages)", err=True)
    else:
        click.echo(text, nl=False)


def names_in(doc: dict[str, Any]) -> Iterable[str]:
    """The Socket.IO event names a document describes (for tests and tooling)."""
    return [m["name"] for m in doc["components"]["messages"].values()]
