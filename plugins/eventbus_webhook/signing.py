"""Standard Webhooks payloads and signatures: the body and the three ``webhook-*`` headers
that a receiver using the official ``standardwebhooks`` library verifies unchanged."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from eventbus.events import Event


def payload(event: Event) -> str:
    """The body: ``{"type", "timestamp", "data"}`` with the whole envelope in ``data``."""
    return json.dumps({"type": event.type, "timestamp": event.timestamp, "data": event.to_dict()},
                      separators=(",", ":"), ensure_ascii=False)


def sign(keys: Iterable[bytes], msg_id: str, timestamp: int, body: str) -> str:
    """``v1,<base64 HMAC-SHA256 of id.timestamp.body>`` per key, space-separated, so a
    receiver still holding the previous secret keeps verifying during rotation."""
    signed = f"{msg_id}.{timestamp}.{body}".encode()
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")
        for key in keys
    )


def headers(keys: Iterable[bytes], msg_id: str, body: str, now: float | None = None) -> dict[str, str]:
    """The signed headers of one attempt. The timestamp is the attempt's, because receivers
    reject signatures older than a few minutes; the id stays the event's across retries."""
    timestamp = int(time.time() if now is None else now)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(keys, msg_id, timestamp, body),
        "content-type": "application/json",
    }
