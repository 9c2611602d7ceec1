"""The JSONL log sink: envelopes on disk, rotation, flush policies, write errors and recovery,
a file deleted or moved away under it, and private file modes."""

from __future__ import annotations

import json
import os
import shutil
import stat
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

    real_open = sink_module.open_private

    def spy_open(*args: Any, **kwargs: Any) -> FlushSpy:
        spies.append(FlushSpy(real_open(*args, **kwargs)))
        return spies[-1]

    monkeypatch.setattr(sink_module, "open_private", spy_open)
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
    assert health["failed"] == 3
    assert "NotADirectoryError" in health["error"]
    assert health["path"] == str(path)
    assert health["bytes_written"] == 0

    blocker.unlink()
    blocker.mkdir()
    bus.emit("tool_executed", {"n": 3})
    wait_until(lambda: worker(bus, "logsink")["delivered"] == 1, message="delivery after recovery")
    health = sink.health()
    assert health["status"] == "ok" and health["error"] is None
    assert health["failed"] == 3 and "NotADirectoryError" in health["last_error"]
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
    assert health["failed"] == (2 if flush == "batch" else 1)
    assert "No space left" in health["error"]
    sink.close()


# -- the file deleted or moved under the sink -------------------------------------------------

def sink_bus(bus_factory, path: Path, flush: str = "batch") -> Any:
    return bus_factory([eventbus_logsink], Config(log_sink_path=str(path), log_sink_flush=flush))


def emit_and_wait(bus: Any, start: int, count: int) -> None:
    """Emit ``count`` events numbered from ``start`` and wait until the sink handled them."""
    before = worker(bus, "logsink")
    for n in range(start, start + count):
        bus.emit("tool_executed", {"n": n})
    done = before["delivered"] + before["failed"] + count
    wait_until(lambda: (w := worker(bus, "logsink"))["delivered"] + w["failed"] >= done,
               message=f"{count} events handled by the sink")


@pytest.mark.parametrize("flush", ["batch", "line"])
def test_a_deleted_file_is_noticed_and_the_next_events_reach_a_new_file(bus_factory, tmp_path, flush):
    path = tmp_path / "events.jsonl"
    bus = sink_bus(bus_factory, path, flush)
    emit_and_wait(bus, 0, 5)
    path.unlink()  # an operator, or a logrotate without copytruncate

    emit_and_wait(bus, 5, 1000)
    assert [rec["data"]["n"] for rec in read_lines(path)] == list(range(5, 1005))
    health = worker(bus, "logsink")["health"]
    assert health["status"] == "ok" and health["reopened"] == 1 and health["failed"] == 0


def test_a_file_moved_away_keeps_its_lines_and_the_path_gets_a_new_file(bus_factory, tmp_path):
    path = tmp_path / "events.jsonl"
    bus = sink_bus(bus_factory, path)
    emit_and_wait(bus, 0, 3)
    path.rename(tmp_path / "events.jsonl.old")  # an external rotation

    emit_and_wait(bus, 3, 3)
    assert [rec["data"]["n"] for rec in read_lines(tmp_path / "events.jsonl.old")] == [0, 1, 2]
    assert [rec["data"]["n"] for rec in read_lines(path)] == [3, 4, 5]
    assert worker(bus, "logsink")["health"]["reopened"] == 1


def test_a_file_deleted_while_a_batch_is_written_gets_the_batch_again(tmp_path, monkeypatch):
    path = tmp_path / "events.jsonl"
    real_open = sink_module.open_private
    opened: list[Any] = []

    class DeletedMidway(FlushSpy):
        def write(self, data: bytes) -> int:
            if len(opened) == 1 and path.exists():
                path.unlink()  # after the sink checked the path, before the lines land
            return self.fh.write(data)

    def spy_open(*args: Any, **kwargs: Any) -> Any:
        opened.append(DeletedMidway(real_open(*args, **kwargs)))
        return opened[-1]

    monkeypatch.setattr(sink_module, "open_private", spy_open)
    sink = BatchLogSinkTransport(path, flush="batch")
    sink.start(None)  # type: ignore[arg-type]
    sink.send_batch([make_event(n) for n in range(1, 4)])
    sink.close()
    assert len(opened) == 2
    assert [rec["seq"] for rec in read_lines(path)] == [1, 2, 3]
    assert sink.health()["reopened"] == 1 and sink.health()["failed"] == 0


def test_a_removed_directory_degrades_counts_every_event_and_recovers(bus_factory, tmp_path):
    directory = tmp_path / "logs"
    directory.mkdir()
    path = directory / "events.jsonl"
    bus = sink_bus(bus_factory, path)
    emit_and_wait(bus, 0, 2)
    shutil.rmtree(directory)

    emit_and_wait(bus, 2, 7)
    row = worker(bus, "logsink")
    assert row["health"]["status"] == "degraded" and row["health"]["failed"] == 7
    assert row["failed"] == 7 and "FileNotFoundError" in row["health"]["error"]

    directory.mkdir()
    emit_and_wait(bus, 9, 4)
    row = worker(bus, "logsink")
    assert row["health"]["status"] == "ok" and row["health"]["failed"] == 7 and row["failed"] == 7
    assert [rec["data"]["n"] for rec in read_lines(path)] == [9, 10, 11, 12]


def test_a_path_taken_by_a_directory_degrades_and_recovers(bus_factory, tmp_path):
    path = tmp_path / "events.jsonl"
    bus = sink_bus(bus_factory, path, flush="line")
    emit_and_wait(bus, 0, 1)
    path.unlink()
    path.mkdir()  # unwritable as a file, even for root

    emit_and_wait(bus, 1, 3)
    health = worker(bus, "logsink")["health"]
    assert health["status"] == "degraded" and health["failed"] == 3
    assert "IsADirectoryError" in health["error"]

    path.rmdir()
    emit_and_wait(bus, 4, 1)
    health = worker(bus, "logsink")["health"]
    assert health["status"] == "ok" and health["failed"] == 3
    assert [rec["data"]["n"] for rec in read_lines(path)] == [4]


# -- private files -----------------------------------------------------------------------------

@pytest.fixture
def open_umask():
    old = os.umask(0)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_file_and_its_backups_are_private_whatever_the_umask(tmp_path, open_umask):
    path = tmp_path / "events.jsonl"
    line_size = len(make_event(1).to_json()) + 1
    sink = LogSinkTransport(path, max_bytes=line_size * 2, backups=2, flush="line")
    sink.start(None)  # type: ignore[arg-type]
    for n in range(1, 8):
        sink.send(make_event(n))
    sink.close()
    files = sorted(tmp_path.iterdir())
    assert [p.name for p in files] == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]
    assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}


def test_an_existing_readable_file_and_backup_are_made_private(tmp_path, open_umask):
    path = tmp_path / "events.jsonl"
    line_size = len(make_event(1).to_json()) + 1
    path.write_text("x" * (line_size - 1) + "\n")
    old_backup = tmp_path / "events.jsonl.1"
    old_backup.write_text("older\n")
    os.chmod(path, 0o644)
    os.chmod(old_backup, 0o644)
    sink = LogSinkTransport(path, max_bytes=line_size, backups=3, flush="line")
    sink.start(None)  # type: ignore[arg-type]
    assert mode(path) == 0o600
    sink.send(make_event(1))  # rotates: .1 -> .2, the file -> .1
    sink.close()
    assert {p.name: mode(p) for p in tmp_path.iterdir()} == {
        "events.jsonl": 0o600, "events.jsonl.1": 0o600, "events.jsonl.2": 0o600}
