"""End-to-end fixtures: real ``eventbus serve`` processes, one per async mode."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .server import ServerProcess, selected_modes


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(params=selected_modes())
def async_mode(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """``start_server(async_mode, env={...})`` starts a server and stops it after the test."""
    started: list[ServerProcess] = []

    def start(async_mode: str = "threading", env: dict[str, str] | None = None, **kwargs: Any) -> ServerProcess:
        server = ServerProcess(tmp_path / f"s{len(started)}", async_mode, env, **kwargs)
        started.append(server)
        return server.start()

    yield start
    errors = []
    for server in started:
        try:
            server.stop()  # also scans the server's log and public bodies for secrets
        except Exception as exc:  # noqa: BLE001 - stop (and scan) every server, then report
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def server(start_server: Callable[..., ServerProcess], async_mode: str) -> ServerProcess:
    return start_server(async_mode)
