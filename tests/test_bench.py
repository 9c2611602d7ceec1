"""Smoke test of ``eventbus bench``: the smallest scenario end to end (real eventbus and plain
Flask-SocketIO servers, the Python load generator, HTTP publish, memory, webhooks), checking
the table's rows and that every number is sane and non-zero. No timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from eventbus_socketio.bench import bench_command

pytestmark = pytest.mark.e2e


def test_smallest_bench_end_to_end(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    result = CliRunner().invoke(bench_command, [
        "--modes", "threading", "--clients", "2", "--rates", "100", "--ladder", "100", "--ladder-clients", "2",
        "--duration", "0.5",
        "--memory", "5", "--generator", "python", "--no-node", "--no-batched", "--http-seconds", "0.5",
        "--webhook-events", "20", "--webhook-endpoints", "1", "--redis-url", "", "--output", str(output)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    table = result.output
    for title in ("Latency, agent emit -> client receipt", "Highest sustained deliveries/s",
                  "HTTP publish", "Memory per idle connection", "Webhook deliveries", "Targets"):
        assert f"## {title}" in table
    results = json.loads(output.read_text())
    assert results["generator"] == "python"
    assert results["machine"]["nproc"] >= 1

    latency = {row["server"]: row for row in results["latency"]}
    assert set(latency) == {"eventbus", "flask-socketio"}
    for row in latency.values():
        assert row["mode"] == "threading" and row["clients"] == 2 and row["offered"] == 100
        assert row["received"] == 2 * 25 and row["lost"] == 0  # 50 events/s per client for 0.5 s
        assert row["achieved"] > 0
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"] <= row["max_ms"] * 1.03
        assert f"| {row['server']}" in table

    sustained = {row["server"]: row for row in results["sustained"]}
    assert set(sustained) == {"eventbus", "flask-socketio"}
    assert all(row["peak_achieved"] > 0 and row["steps"] for row in sustained.values())

    http = {row["server"]: row for row in results["http"]}
    assert set(http) == {"eventbus", "flask-socketio"}
    assert all(row["rps"] > 0 and row["ok"] > 0 and row["errors"] == 0 for row in http.values())

    memory = {row["server"]: row for row in results["memory"]}
    assert set(memory) == {"eventbus", "flask-socketio"}
    assert all(row["connected"] == 5 and row["rss_after_mib"] > 0 for row in memory.values())

    [webhook] = results["webhook"]
    assert webhook["deliveries"] == 20 and webhook["deliveries_per_s"] > 0

    assert any("Flask-SocketIO (threading)" in t["target"] for t in results["targets"])
