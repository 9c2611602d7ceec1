"""Files private to the server's user: the data dir is 0700 and every file in it 0600, the
generated secret included, whatever the umask the server was started with."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from eventbus.testing import wait_until

from ..e2e.server import ServerProcess, make_token

UMASKS = pytest.mark.parametrize("umask", [0o000, 0o022], ids=["umask000", "umask022"])


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _modes(root: Path) -> dict[str, int]:
    """``{relative path: mode}`` of ``root`` and everything under it."""
    found = {".": _mode(root)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            found[str(path.relative_to(root))] = _mode(path)
    return found


def _not_private(root: Path) -> dict[str, str]:
    """Entries under ``root`` that are not 0700 (directories) or 0600 (files)."""
    wrong = {}
    for rel, mode in _modes(root).items():
        want = 0o700 if (root / rel).is_dir() else 0o600
        if mode != want:
            wrong[rel] = f"{mode:04o} (want {want:04o})"
    return wrong


def test_loose_data_dir_and_secret_are_tightened_with_a_warning(
        start_server: Callable[..., ServerProcess], async_mode: str, tmp_path: Path) -> None:
    data = tmp_path / "old-data"
    data.mkdir()
    (data / "secret_key").write_text("s" * 48 + "\n")
    os.chmod(data, 0o755)
    os.chmod(data / "secret_key", 0o644)
    server = start_server(async_mode, env={"EVENTBUS_SECRET_KEY": "", "EVENTBUS_DATA_DIR": str(data)},
                          umask=0o022)
    assert _not_private(data) == {}
    log = server.log()
    assert "directory was readable by other users, made private" in log
    assert "file was readable by other users, made private" in log
    assert server.publish("agent_started", {"agent_name": "a"}, token=make_token(secret="s" * 48))["seq"] >= 1


@UMASKS
def test_data_dir_and_every_file_in_it_are_private(start_server: Callable[..., ServerProcess],
                                                   async_mode: str, umask: int, tmp_path: Path) -> None:
    """The generated secret, the webhook outbox (SQLite with its journal files) and the
    JSONL log sink; the data dir's missing parents are created private too."""
    data = tmp_path / "state" / "eventbus"
    sink = tmp_path / "logs" / "events.jsonl"
    sink.parent.mkdir()
    hook = {"name": "closed", "url": "http://127.0.0.1:9/hook",
            "secret": "whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", "retry_schedule": [0, 60]}
    server = start_server(async_mode, umask=umask, env={
        "EVENTBUS_SECRET_KEY": "", "EVENTBUS_DATA_DIR": str(data), "EVENTBUS_LOG_SINK_PATH": str(sink),
        "EVENTBUS_LOG_SINK_FLUSH": "line", "EVENTBUS_WEBHOOKS": json.dumps([hook])})
    secret = (data / "secret_key").read_text().strip()
    assert len(secret) >= 32
    # The server signs with the key it keeps there: a token made with it is accepted.
    seq = server.publish("agent_started", {"agent_name": "a"}, token=make_token(secret=secret))["seq"]
    wait_until(lambda: sink.exists() and f'"seq":{seq}' in sink.read_text().replace(" ", ""), 10,
               message="event in the log sink")
    wait_until(lambda: any(p.name.startswith("webhooks.sqlite3") for p in data.iterdir()), 10,
               message="webhook outbox")
    assert _mode(sink) == 0o600
    assert _not_private(data) == {}
    assert _mode(tmp_path / "state") == 0o700
