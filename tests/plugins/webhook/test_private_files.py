"""The outbox holds event bodies: its file and SQLite's ``-wal``/``-shm`` companions are 0600
and a data dir it creates is 0700, whatever the umask; files left readable by an older
version are tightened."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from eventbus_webhook.outbox import Outbox


@pytest.fixture
def open_umask():
    old = os.umask(0)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def outbox_files(directory: Path) -> dict[str, int]:
    return {p.name: mode(p) for p in sorted(directory.iterdir())}


def test_a_new_outbox_and_its_wal_and_shm_are_private(webhook_bus, tmp_path, free_port, secret, endpoint,
                                                      open_umask):
    bus = webhook_bus(endpoint("down", f"http://127.0.0.1:{free_port}/hook", secret))
    bus.emit("agent_started", {"agent_name": "a"}, origin="http")
    data = tmp_path / "data"
    assert mode(data) == 0o700
    files = outbox_files(data)
    assert {"webhooks.sqlite3", "webhooks.sqlite3-wal", "webhooks.sqlite3-shm"} <= set(files)
    assert files == dict.fromkeys(files, 384)


def test_nested_directories_it_creates_are_private(tmp_path, open_umask):
    path = tmp_path / "a" / "b" / "outbox.sqlite3"
    with Outbox(path) as outbox:
        outbox.enqueue([("e", "evt_1", "agent_started", "{}", 1.0)])
        assert mode(tmp_path / "a") == mode(tmp_path / "a" / "b") == 0o700
        assert set(outbox_files(path.parent).values()) == {0o600}


def test_files_left_readable_are_tightened(tmp_path, open_umask):
    path = tmp_path / "outbox.sqlite3"
    with Outbox(path) as outbox:
        outbox.enqueue([("e", "evt_1", "agent_started", "{}", 1.0)])
        for name in outbox_files(tmp_path):  # what an older version under umask 022 left
            os.chmod(tmp_path / name, 0o644)
        with Outbox(path) as second:  # the next server start, or an `eventbus webhook` command
            assert second.counts() == {"e": {"pending": 1, "dead": 0}}
            assert set(outbox_files(tmp_path).values()) == {0o600}
