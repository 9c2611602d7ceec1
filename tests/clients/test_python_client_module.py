"""The Python client is its own module, ``eventbus_client``, outside the core: importing the
core loads no client or server library, and the old import path still works, with a warning."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

import eventbus_client


def loaded_after(statement: str) -> set[str]:
    """Top-level modules a fresh interpreter has loaded after ``statement``."""
    code = f"import sys\n{statement}\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return set(result.stdout.split())


def test_the_core_loads_no_client_library() -> None:
    loaded = loaded_after("import eventbus, eventbus.signals")
    assert not loaded & {"socketio", "engineio", "requests", "eventbus_client", "flask"}, loaded


def test_the_client_module_is_outside_the_core() -> None:
    assert "eventbus_client" in loaded_after("import eventbus_client")
    assert eventbus_client.__name__ == "eventbus_client"
    assert "/eventbus/" not in eventbus_client.__file__.replace("\\", "/")


def test_the_old_import_path_warns_and_gives_the_same_class() -> None:
    with pytest.warns(DeprecationWarning, match="eventbus_client"):
        from eventbus.client import EventBusClient
    assert EventBusClient is eventbus_client.EventBusClient
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        import eventbus.client  # noqa: F401 - importing the module alone does not warn
