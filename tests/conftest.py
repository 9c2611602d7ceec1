"""Fixtures shared by every test directory: an isolated environment and buses that close."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from eventbus import EventBus
from eventbus.testing import RecordingTransport, bus, make_bus, recorder  # noqa: F401 - fixtures

ENV_PREFIXES = ("EVENTBUS_", "WEBSOCKET_")


@pytest.fixture(autouse=True, scope="session")
def _temporary_user_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The per-user default data dir (``$XDG_DATA_HOME/eventbus`` on Linux) lies in a
    temporary folder for the whole run, so no test, and no command a test starts without
    ``EVENTBUS_DATA_DIR``, reads or writes the real user's secret key or outbox."""
    patch = pytest.MonkeyPatch()
    patch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("user-data")))
    yield
    patch.undo()


@pytest.fixture(autouse=True, scope="session")
def _engineio_client_closes_a_websocket_the_server_closed() -> Iterator[None]:
    """python-engineio's client (4.x) ends its WebSocket read loop when the server closes
    the connection first (a kick, a refused frame, a dropped or killed server) without
    closing its websocket-client socket, which is then left to the garbage collector and
    reported as a ResourceWarning in whatever test runs next. Close the socket the loop read
    from when the loop ends (its own ``disconnect()`` does it for a client-side close), so
    ResourceWarnings stay errors for everything else."""
    try:
        import engineio
    except ImportError:
        yield
        return
    original = engineio.Client._read_loop_websocket

    def read_loop_websocket(self: Any) -> None:
        ws = self.ws  # this loop's socket; a reconnect may set another one meanwhile
        try:
            original(self)
        finally:
            if ws is not None:
                ws.shutdown()  # closes the socket (close() skips one the server ended)

    patch = pytest.MonkeyPatch()
    patch.setattr(engineio.Client, "_read_loop_websocket", read_loop_websocket)
    yield
    patch.undo()


@pytest.fixture
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> dict[str, str]:
    """No EVENTBUS_*/WEBSOCKET_* variables and a fresh working directory (so no stray
    ``eventbus.toml`` is read). Returns a dict to build an environ from."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return {"EVENTBUS_DATA_DIR": str(tmp_path / "data")}


@pytest.fixture
def bus_factory() -> Iterator[Callable[..., EventBus]]:
    """``bus_factory(plugins=..., config=..., transports=...)`` like
    :func:`eventbus.testing.make_bus`; every bus is closed after the test, because buses
    listen to the process-wide signals."""
    made: list[EventBus] = []

    def factory(*args: Any, **kwargs: Any) -> EventBus:
        instance = make_bus(*args, **kwargs)
        made.append(instance)
        return instance

    yield factory
    for instance in made:
        instance.close()
