"""Helpers for testing plugins and agents: a recording transport and a bus fixture.

In a test suite: ``pytest_plugins = ["eventbus.testing"]``, then use the ``bus`` fixture or
:func:`make_bus` with your plugin objects.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pytest

from .bus import EventBus
from .config import Config
from .events import Event
from .transport import Transport


class RecordingTransport(Transport):
    """Keeps every event it is sent; :meth:`wait_for` blocks until a condition holds."""

    def __init__(self, name: str = "recorder", fail: Callable[[Event], bool] | None = None,
                 delay: float = 0.0):
        self.name = name
        self.events: list[Event] = []
        self._fail = fail
        self._delay = delay
        self._cond = threading.Condition()

    def send(self, event: Event) -> None:
        if self._delay:
            time.sleep(self._delay)
        if self._fail is not None and self._fail(event):
            raise RuntimeError(f"{self.name} refuses {event.id}")
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[Event]], bool] | int, timeout: float = 5.0) -> list[Event]:
        """Wait until ``predicate(events)`` is true (or ``len(events) >= n`` for an int);
        raise ``AssertionError`` after ``timeout`` seconds."""
        check = (lambda evs: len(evs) >= predicate) if isinstance(predicate, int) else predicate
        deadline = time.monotonic() + timeout
        with self._cond:
            while not check(self.events):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{self.name}: condition not met in {timeout}s; have {len(self.events)} events: "
                        f"{[e.type for e in self.events[-10:]]}")
                self._cond.wait(left)
            return list(self.events)

    def types(self) -> list[str]:
        return [e.type for e in self.events]


def make_bus(plugins: Iterable[Any] = (), config: Config | None = None, *,
             transports: Iterable[Transport] = (), start: bool = True, **kwargs: Any) -> EventBus:
    """A bus with only the given plugins and transports (no entry points)."""
    kwargs.setdefault("load_entrypoints", False)
    bus = EventBus(config or Config(), plugins=plugins, **kwargs)
    for transport in transports:
        bus.add_transport(transport)
    if start:
        bus.start()
    return bus


def started_config(environ: Mapping[str, str] | None = None, **kwargs: Any) -> Config:
    """Settings as start-up validates them (``eventbus serve``, ``EventBus.from_env()``): the
    core's from ``environ``, then those of every installed plugin it loads."""
    from .plugins import create_plugin_manager

    config = Config.from_env(environ, **kwargs)
    create_plugin_manager(config)
    return config


def wait_until(condition: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01,
               message: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not met within {timeout}s")
        time.sleep(interval)


@pytest.fixture
def recorder() -> RecordingTransport:
    return RecordingTransport()


@pytest.fixture
def bus(recorder: RecordingTransport, tmp_path: Any) -> Iterable[EventBus]:
    """A started bus with a :class:`RecordingTransport` named ``recorder`` and no plugins."""
    instance = make_bus(config=Config(data_dir=str(tmp_path / "data")), transports=[recorder])
    yield instance
    instance.close()
