"""The log sink of a real server when its file is deleted, its directory removed, or its path
taken by a directory: nothing vanishes uncounted, the status says degraded while writes
fail, and the sink recovers on its own. The file is private whatever the umask."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path
from typing import Any

import requests

from eventbus.testing import wait_until

from ..e2e.server import ServerProcess


def publish(server: ServerProcess, count: int, start: int) -> list[str]:
    """``count`` events over one keep-alive connection; their ids."""
    session = requests.Session()
    headers = {"Authorization": f"Bearer {server.token()}"}
    ids = []
    for n in range(start, start + count):
        response = session.post(f"{server.url}/api/events", headers=headers, timeout=10,
                                json={"type": "tool_executed", "data": {"n": n}})
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    return ids


def sink(server: ServerProcess) -> dict[str, Any]:
    return server.status()["transports"]["logsink"]


def handled(server: ServerProcess, total: int) -> dict[str, Any]:
    """Wait until the sink delivered or failed ``total`` events in all; its status row."""
    return wait_until(lambda: (row := sink(server))["delivered"] + row["failed"] >= total and row,
                      timeout=15, message=f"{total} events handled by the log sink")


def ids_in(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def metric(server: ServerProcess, name: str, **labels: str) -> float:
    """The value of the ``/metrics`` sample ``name`` with exactly these labels."""
    wanted = {f'{k}="{v}"' for k, v in labels.items()}
    for line in requests.get(f"{server.url}/metrics", timeout=5).text.splitlines():
        sample, _, value = line.rpartition(" ")
        head, _, rest = sample.partition("{")
        if head == name and set(rest.rstrip("}").split(",")) == wanted:
            return float(value)
    raise AssertionError(f"no {name}{labels} in /metrics")


def test_deleted_file_removed_directory_and_recovery(start_server, async_mode, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    path = logs / "events.jsonl"
    server = start_server(async_mode, env={"EVENTBUS_LOG_SINK_PATH": str(path)}, umask=0)

    before = publish(server, 5, 0)
    handled(server, 5)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.unlink()  # an operator, or a logrotate without copytruncate
    after = publish(server, 300, 5)
    row = handled(server, 305)
    assert ids_in(path) == after, "events written after the file was deleted went missing"
    assert row["health"]["status"] == "ok" and row["health"]["reopened"] == 1 and row["failed"] == 0
    assert before  # written to the file the operator deleted: theirs to lose

    shutil.rmtree(logs)
    publish(server, 10, 305)
    row = handled(server, 315)
    health = row["health"]
    assert health["status"] == "degraded" and health["failed"] == 10 and row["failed"] == 10
    assert "FileNotFoundError" in health["error"]
    assert requests.get(f"{server.url}/api/health", timeout=5).json()["transports"]["logsink"] == "degraded"
    assert metric(server, "eventbus_transport_failed_total", transport="logsink") == 10
    assert metric(server, "eventbus_transport_stat", transport="logsink", stat="failed") == 10

    logs.mkdir()
    path.mkdir()  # the path taken by a directory: unwritable, even for root
    publish(server, 2, 315)
    row = handled(server, 317)
    assert row["health"]["status"] == "degraded" and row["failed"] == 12
    assert "IsADirectoryError" in row["health"]["error"]

    path.rmdir()
    recovered = publish(server, 3, 317)
    row = handled(server, 320)
    assert row["health"]["status"] == "ok" and row["failed"] == 12 and row["health"]["failed"] == 12
    assert ids_in(path) == recovered
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
