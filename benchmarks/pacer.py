"""The bench "agent": emits ``count`` events at ``rate`` per second, each stamped with the
wall-clock time it was due, so an emitter that falls behind shows up as latency instead of
hiding it (no coordinated omission). Shared by the eventbus and plain Flask-SocketIO servers."""

from __future__ import annotations

import time
from collections.abc import Callable


def paced(count: int, rate: float, send: Callable[[int, float], None]) -> None:
    """Call ``send(i, due)`` for i in range(count), ``due`` being ``time.time()``-based."""
    wall0 = time.time()
    mono0 = time.perf_counter()
    i = 0
    while i < count:
        due_now = min(count, int((time.perf_counter() - mono0) * rate) + 1)
        while i < due_now:
            send(i, wall0 + i / rate)
            i += 1
        delay = mono0 + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
