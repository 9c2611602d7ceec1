"""Fault tests: crashes and broken files under a real ``eventbus serve`` in every async mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..e2e.conftest import async_mode, server, start_server  # noqa: F401 - fixtures


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.faults)
