"""A python-socketio client that hands events to its handlers in arrival order.

The stock client runs each incoming message in a thread of its own, so two events sent in
order may reach handlers out of order; tests that check the server's ordering need to see
exactly what arrived, in sequence. (The product's own ``EventBusClient`` reorders by ``seq``.)
"""

from __future__ import annotations

from typing import Any

import socketio


def ordered_client(**kwargs: Any) -> socketio.Client:
    client = socketio.Client(**kwargs)
    trigger = client.eio._trigger_event

    def in_order(event: str, *args: Any, **kwargs: Any) -> Any:
        # Messages are handled on the reading thread, one after another.
        if event == "message":
            kwargs["run_async"] = False
        return trigger(event, *args, **kwargs)

    client.eio._trigger_event = in_order
    return client
