"""Socket.IO packets that decode whatever a client sends without raising.

python-socketio builds one packet object per incoming message (``serializer=`` option of
``socketio.Server``); the stock class raises from its decoder on malformed or very deeply
nested JSON, which python-socketio only logs, so the client never hears why its event got
no answer. :func:`packet_class` returns a class that checks every packet the way HTTP
bodies are checked (:func:`eventbus.events.check_json`: JSON, Unicode text, at most
``max_json_depth`` levels in each argument) and turns a refused ``EVENT`` into one whose
name is an :class:`InvalidPacket`. The namespace answers that with an error ack
``{"ok": false, "error": {"code", "message"}}`` to the ack id the client gave, and counts
the refusal; the connection stays open.
"""

from __future__ import annotations

from typing import Any

from socketio import packet

from eventbus.events import DEFAULT_MAX_JSON_DEPTH, EventBusError, check_json


class InvalidPacket(str):
    """The event name of a client ``EVENT`` packet that was refused while decoding.

    A ``str`` so python-socketio can log and route it like any name; clients cannot forge
    one, since every name decoded from JSON is a plain ``str``. ``code`` and ``message``
    are what the error ack carries: ``invalid_json`` (not JSON, or not Unicode text),
    ``too_deep`` (nested past the limit) or ``invalid_payload`` (not ``[name, ...args]``).
    """

    code: str
    message: str

    def __new__(cls, code: str, message: str) -> InvalidPacket:
        self = super().__new__(cls, f"<{code}>")
        self.code = code
        self.message = message
        return self


class EventBusPacket(packet.Packet):
    """A :class:`socketio.packet.Packet` whose :meth:`decode` never raises on client input.

    ``max_depth`` bounds each event argument (and a ``CONNECT`` packet's auth object);
    use :func:`packet_class` to get a subclass bound to a configured limit.
    """

    max_depth: int = DEFAULT_MAX_JSON_DEPTH
    # Set by the stock packet's constructor and decoder.
    packet_type: int
    data: Any
    attachment_count: int

    def decode(self, encoded_packet: Any) -> int:
        """Decode as the stock packet does; on a refusal, keep the type, namespace and ack
        id that were read and replace the data (see :meth:`_refuse`). Returns the number of
        binary attachments still to come (0 after a refusal)."""
        try:
            attachments = super().decode(encoded_packet)
        except EventBusError as exc:
            return self._refuse(exc.code, str(exc))
        except RecursionError:
            return self._refuse("too_deep", f"objects and lists nest deeper than {self.max_depth} levels")
        except (ValueError, TypeError) as exc:
            return self._refuse("invalid_json", f"not a valid Socket.IO packet: {exc}")
        try:
            self._check(encoded_packet)
        except EventBusError as exc:
            return self._refuse(exc.code, str(exc))
        return attachments or 0

    def _check(self, encoded_packet: Any) -> None:
        """Raise an :class:`~eventbus.events.EventBusError` for data eventbus will not take."""
        text = encoded_packet if isinstance(encoded_packet, str) else None
        if self.packet_type in (packet.EVENT, packet.BINARY_EVENT):
            if not (isinstance(self.data, list) and self.data and type(self.data[0]) is str):
                raise EventBusError("an event packet is [name, ...arguments] with a string name",
                                    code="invalid_payload")
            check_json(self.data, self.max_depth + 1, text)  # +1: the [name, ...] list itself
        elif self.data is not None:
            depth = self.max_depth + (1 if self.packet_type in (packet.ACK, packet.BINARY_ACK) else 0)
            check_json(self.data, depth, text)

    def _refuse(self, code: str, message: str) -> int:
        """An ``EVENT`` becomes ``[InvalidPacket(code, message)]`` for the namespace to
        answer; an ``ACK`` carries no arguments; any other packet carries no data (a
        ``CONNECT`` without auth, refused by the namespace unless a header carries a token)."""
        if self.packet_type in (packet.EVENT, packet.BINARY_EVENT):
            self.packet_type = packet.EVENT
            self.data = [InvalidPacket(code, message)]
        elif self.packet_type in (packet.ACK, packet.BINARY_ACK):
            self.packet_type = packet.ACK
            self.data = []
        else:
            self.data = None
        self.attachment_count = 0
        return 0


def packet_class(max_depth: int) -> type[EventBusPacket]:
    """A fresh :class:`EventBusPacket` subclass bound to ``max_depth`` (one per server, as
    python-socketio sets its ``json`` attribute on the class it is given)."""
    return type("EventBusPacket", (EventBusPacket,), {"max_depth": max_depth})
