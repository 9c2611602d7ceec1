"""Run a blocking call (an SQLite commit that waits for fsync) without stopping a green
server's event loop. Under gevent or eventlet monkey patching, plain Python threads are
greenlets, so a call that blocks in C stops every other request for its duration; gevent's
hub thread pool and eventlet's ``tpool`` run it in a real OS thread instead, and the
greenlet that asked waits cooperatively. Threading servers call it directly."""

from __future__ import annotations

import sys
from typing import Callable, TypeVar

T = TypeVar("T")


def _patched_runner() -> Callable[[Callable[[], T]], T] | None:
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        import gevent

        return lambda fn: gevent.get_hub().threadpool.apply(fn)
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None and patcher.is_monkey_patched("thread"):
        from eventlet import tpool

        return lambda fn: tpool.execute(fn)
    return None


def run_blocking(fn: Callable[[], T]) -> T:
    """``fn()``, in a native OS thread when the process is monkey-patched. ``fn`` must not
    touch green primitives (locks, events): take them before calling."""
    runner = _patched_runner()
    return fn() if runner is None else runner(fn)
