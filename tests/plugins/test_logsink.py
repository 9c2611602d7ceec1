"""The JSONL log sink: envelopes on disk, rotation, flush policies, write errors and recovery."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

import eventbus_logsink
from eventbus import Config, Event, signals
from eventbus.testing import RecordingTransport, wait_until
from eventbus_logsink import BatchLogSinkTransport, LogSinkTransport
from eventbus_logsink import sink as sink_module


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def make_event(n: int, room: str = "monitoring") -> Event:
    return Event(type="tool_executed", data={"n": n, "pad": "x" * 40}, room=room, seq=n)


def worker(bus: Any, name: str) -> dict[str, Any]:
    return next(row for row in bus.status()["transports"] if row["name"] == name)


def test_agent_signal_reaches_the_file_as_a_valid_envelope(bus_factory, tmp_path):
    path = tmp_path / "events.jsonl"
    bus = bus_factory([eventbus_logsink], Config(log_sink_path=str(path), log_sink_flush="line"))

    signals.agent_started.send("researcher", session_id="s-1", details={"task": "find"})

    wait_until(lambda: path.exists() and path.read_text().endswith("\n"), message="a line in the sink")
    (line,) = path.read_text().splitlines()
    envelope = Event.from_json(line, bus.registry)
    assert envelope.type == "agent_started"
    assert envelope.data == {"details": {"task": "find"}}
    assert (envelope.room, envelope.seq, envelope.session_id, envelope.source) == ("monitoring", 1, "s-1", "researcher")
    assert set(json.loads(line)) == {"id", "type", "data", "timestamp", "room", "seq", "user_id", "session_id", "source"}


def test_not_registered_without_a_path(bus_factory):
    bus = bus_factory([eventbus_logsink], Config())
    assert [w.name for w in bus.workers] == ["signals"]


def test_from_config_picks_the_batching_sink_only_for_batch_flushing(tmp_path):
    for flush, kind in (("batch", BatchLogSinkTransport), ("line", LogSinkTransport), ("os", LogSinkTransport)):
        transport = LogSinkTransport.from_config(Config(log_sink_path=str(tmp_path / "x"), log_sink_flush=flush))
        assert type(transport) is kind and transport.flush == flush
    with pytest.raises(ValueError, match="flush"):
        LogSinkTransport(tmp_path / "x", flush="sometimes")


def test_constructing_it_acquires_nothing(tmp_path):
    path = tmp_path / "never.jsonl"
    transport = LogSinkTransport(path)
    transport.close()
    assert not path.exists()


def test_rotation_keeps_backups_in_order_and_each_file_under_the_limit(tmp_path):
    path = tmp_path / "events.jsonl"
    line_size = len(make_event(1).to_json()) + 1
    sink = LogSinkTransport(path, max_bytes=line_size * 3, backups=2, flush="line")
    sink.start(None)  # type: ignore[arg-type]
    for n in range(1, 11):
        sink.send(make_event(n))
    sink.close()

    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]
    for p in tmp_path.iterdir():
        assert p.stat().st_size <= line_size * 3
    kept = [rec["seq"] for p in (path.with_name("events.jsonl.2"), path.with_name("events.jsonl.1"), path)
            for rec in read_lines(p)]
    assert kept == list(range(4, 11))  # oldest file first; events 1-3 rotated away
    health = sink.health()
    assert health["rotations"] == 3
    assert health["bytes_written"] == sum(len(make_event(n).to_json()) + 1 for n in range(1, 11))


def test_rotation_without_backups_truncates(tmp_path):
    path = tmp_path / "events.jsonl"
    line_size = len(make_event(1).to_json()) + 1
    sink = BatchLogSinkTransport(path, max_bytes=line_size * 2, backups=0, flush="batch")
    sink.start(None)  # type: ignore[arg-type]
    sink.send_batch([make_event(n) for n in range(1, 6)])
    sink.close()
    assert [p.name for p in tmp_path.iterdir()] == ["events.jsonl"]
    assert [rec["seq"] for rec in read_lines(path)] == [5]


def test_rotation_counts_an_existing_file(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("x" * 1000 + "\n")
    sink = LogSinkTransport(path, max_bytes=1024, backups=1, flush="line")
    sink.start(None)  # type: ignore[arg-type]
    sink.send(make_event(1))
    sink.close()
    assert path.with_name("events.jsonl.1").read_text() == "x" * 1000 + "\n"
    assert [rec["seq"] for rec in read_lines(path)] == [1]


class FlushSpy:
    """Wraps the sink's file to count flushes."""

    def __init__(self, fh: Any):
        self.fh = fh
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        self.fh.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fh, name)


@pytest.fixture
def flush_spies(monkeypatch):
    spies: list[FlushSpy] = []

    def spy_open(*args: Any, **kwargs: Any) -> FlushSpy:
        spies.append(FlushSpy(open(*args, **kwargs)))
        return spies[-1]

    monkeypatch.setattr(sink_module, "open", spy_open, raising=False)
    return spies


def test_line_flush_writes_every_line_through(tmp_path, flush_spies):
    path = tmp_path / "events.jsonl"
    sink = LogSinkTransport(path, flush="line")
    sink.start(None)  # type: ignore[arg-type]
    for n in (1, 2, 3):
        sink.send(make_event(n))
        assert len(path.read_text().splitlines()) == n  # on disk before close
    assert flush_spies[0].flushes == 3
    sink.close()


def test_batch_flush_writes_the_batch_and_flushes_once(tmp_path, flush_spies):
    path = tmp_path / "events.jsonl"
    sink = BatchLogSinkTransport(path, flush="batch")
    sink.start(None)  # type: ignore[arg-type]
    sink.send_batch([make_event(n) for n in range(1, 6)])
    assert flush_spies[0].flushes == 1
    assert [rec["seq"] for rec in read_lines(path)] == [1, 2, 3, 4, 5]
    sink.close()


def test_os_flush_leaves_small_writes_to_buffering_until_close(tmp_path, flush_spies):
    path = tmp_path / "events.jsonl"
    sink = LogSinkTransport(path, flush="os")
    sink.start(None)  # type: ignore[arg-type]
    sink.send(make_event(1))
    assert flush_spies[0].flushes == 0
    assert path.read_text() == ""
    sink.close()
    assert [rec["seq"] for rec in read_lines(path)] == [1]


def test_batch_mode_on_a_bus_uses_send_batch(bus_factory, tmp_path):
    path = tmp_path / "events.jsonl"
    bus = bus_factory([eventbus_logsink], Config(log_sink_path=str(path)), start=False)
    for n in range(20):
        bus.emit("tool_executed", {"n": n})
    bus.start()
    wait_until(lambda: worker(bus, "logsink")["delivered"] == 20)
    assert [rec["data"]["n"] for rec in read_lines(path)] == list(range(20))


def test_a_missing_directory_degrades_counts_and_recovers(bus_factory, tmp_path):
    blocker = tmp_path / "logs"
    blocker.write_text("a regular file where the directory should be")
    path = blocker / "events.jsonl"  # ENOTDIR, even for root
    recorder = RecordingTransport()
    bus = bus_factory([eventbus_logsink], Config(log_sink_path=str(path), log_sink_flush="line"),
                      transports=[recorder])
    sink = bus.transport("logsink")
    assert sink.health()["status"] == "degraded"  # already at start

    for n in range(3):
        bus.emit("tool_executed", {"n": n})
    wait_until(lambda: worker(bus, "logsink")["failed"] == 3, message="three failures counted")
    recorder.wait_for(3)  # the bus and its other transports keep going
    health = worker(bus, "logsink")["health"]
    assert health["status"] == "degraded"
    assert health["write_errors"] == 3
    assert "NotADirectoryError" in health["error"]
    assert health["path"] == str(path)
    assert health["bytes_written"] == 0

    blocker.unlink()
    blocker.mkdir()
    bus.emit("tool_executed", {"n": 3})
    wait_until(lambda: worker(bus, "logsink")["delivered"] == 1, message="delivery after recovery")
    health = sink.health()
    assert health["status"] == "ok" and health["error"] is None
    assert health["write_errors"] == 3 and "NotADirectoryError" in health["last_error"]
    assert [rec["data"]["n"] for rec in read_lines(path)] == [3]
    assert health["bytes_written"] == path.stat().st_size


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("kind,flush", [(LogSinkTransport, "line"), (BatchLogSinkTransport, "batch")])
def test_disk_full_raises_after_counting(kind, flush):
    sink = kind("/dev/full", flush=flush)
    sink.start(None)  # type: ignore[arg-type]
    with pytest.raises(OSError):
        sink.send_batch([make_event(1), make_event(2)]) if flush == "batch" else sink.send(make_event(1))
    health = sink.health()
    assert health["status"] == "degraded"
    assert health["write_errors"] == (2 if flush == "batch" else 1)
    assert "No space left" in health["error"]
    sink.close()
