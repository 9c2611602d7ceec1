"""The log sink: every event as one JSON envelope per line, with size-based rotation.

The file is private to the server's user (0600, whatever the umask). Before each batch the
sink checks that its path still names the file it has open, as
:class:`logging.handlers.WatchedFileHandler` does: a file deleted or moved away (by an
operator or an external logrotate) is closed and the path opened afresh, so lines never
vanish into a deleted file. A write error (disk full, directory removed, path taken by a
directory) marks the sink degraded and counts every event not written; the next batch
opens the file again, so the sink recovers on its own.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from eventbus.config import FLUSH_POLICIES
from eventbus.files import FILE_MODE, open_private
from eventbus.hookspecs import hookimpl
from eventbus.settings import Setting, choice, integer, optional_text
from eventbus.transport import Transport

if TYPE_CHECKING:
    from eventbus.bus import EventBus
    from eventbus.config import Config
    from eventbus.events import Event

log = logging.getLogger("eventbus.logsink")


class LogSinkTransport(Transport):
    """Appends ``event.to_json()`` lines to ``path``.

    :param max_bytes: rotate before a line would take the file past this size.
    :param backups: how many rotated files to keep (``path.1`` is the newest); 0 keeps none.
    :param flush: ``line`` flushes after every event, ``batch`` once per worker batch,
        ``os`` leaves it to buffering (fastest; when a write finally fails, or the file is
        deleted, lines still in the process buffer are lost with it, uncounted one by one).
    """

    name = "logsink"

    def __init__(self, path: str | os.PathLike[str], max_bytes: int = 10 * 1024 * 1024,
                 backups: int = 5, flush: str = "batch"):
        if flush not in ("line", "batch", "os"):
            raise ValueError(f"flush must be line, batch or os, got {flush!r}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.flush = flush
        self.bytes_written = 0
        self.failed = 0  # events that could not be written
        self.reopened = 0  # times the path no longer named the open file
        self.rotations = 0
        self.error: str | None = None  # set while degraded
        self.last_error: str | None = None
        self._fh: IO[bytes] | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the open file
        self._size = 0
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Config) -> LogSinkTransport:
        """The sink the settings describe; ``batch`` flushing gets :class:`BatchLogSinkTransport`."""
        config.declare(SETTINGS)
        kind = BatchLogSinkTransport if config.log_sink_flush == "batch" else LogSinkTransport
        return kind(config.log_sink_path or "", config.log_sink_max_bytes,
                    config.log_sink_backups, config.log_sink_flush)

    def start(self, bus: EventBus) -> None:
        # Open early so a bad path shows as degraded at start-up, not at the first event.
        with self._lock:
            self._guard(0, self._ensure_open, reraise=False)

    def send(self, event: Event) -> None:
        with self._lock:
            self._guard(1, lambda: self._write_batch([event]), reraise=True)

    def _guard(self, count: int, action: Callable[[], Any], reraise: bool) -> None:
        try:
            action()
        except OSError as exc:
            self.failed += count
            self.last_error = self.error = f"{type(exc).__name__}: {exc}"
            log.warning("log sink %s: %d event(s) not written (%d so far): %s",
                        self.path, count, self.failed, self.error)
            self._discard()
            if reraise:
                raise  # so the worker counts the events as failed
            return
        if self.error is not None:
            log.info("log sink %s: writing again after %d lost event(s)", self.path, self.failed)
            self.error = None

    # -- the file ------------------------------------------------------------------------
    def _ensure_open(self) -> IO[bytes]:
        if self._fh is None:
            fh = open_private(self.path, "ab")
            info = os.fstat(fh.fileno())
            self._fh, self._identity, self._size = fh, (info.st_dev, info.st_ino), info.st_size
        return self._fh

    def _follow_path(self) -> None:
        """Close the open file when ``path`` no longer names it (deleted, or moved away by
        an external rotation); the next write opens ``path`` afresh."""
        if self._fh is None:
            return
        try:
            info = os.stat(self.path)
            current: tuple[int, int] | None = (info.st_dev, info.st_ino)
        except OSError:  # gone, or its directory is
            current = None
        if current == self._identity:
            return
        self.reopened += 1
        log.warning("log sink %s: the file was %s; writing to %s afresh", self.path,
                    "deleted" if current is None else "replaced or moved away", self.path)
        self._discard()

    def _write_batch(self, events: list[Event]) -> None:
        """Write ``events``; when the file turns out to have been deleted while they were
        written (so they went nowhere), write them again to a fresh file."""
        self._follow_path()
        lines = [(event.to_json() + "\n").encode("utf-8") for event in events]
        self._write(lines)
        if self.flush != "os" and self._fh is not None and os.fstat(self._fh.fileno()).st_nlink == 0:
            self.reopened += 1
            log.warning("log sink %s: the file was deleted while %d event(s) were written; "
                        "writing them again to %s afresh", self.path, len(lines), self.path)
            self._discard()
            self._write(lines)

    def _write(self, lines: list[bytes]) -> None:
        pending = 0
        for line in lines:
            if self._size and self._size + len(line) > self.max_bytes:
                self._rotate()
            fh = self._ensure_open()
            fh.write(line)
            self._size += len(line)
            pending += len(line)
            if self.flush == "line":
                fh.flush()
                self.bytes_written += pending
                pending = 0
        if self.flush == "batch" and self._fh is not None:
            self._fh.flush()
        self.bytes_written += pending

    def _rotate(self) -> None:
        if self._fh is not None:
            fh, self._fh = self._fh, None
            fh.close()
        if self.backups <= 0:
            self.path.unlink(missing_ok=True)
        else:
            for index in range(self.backups - 1, 0, -1):
                older = self._backup(index)
                if older.exists():
                    os.replace(older, self._backup(index + 1))
                    _make_private(self._backup(index + 1))  # kept from an older version
            os.replace(self.path, self._backup(1))
        self._size = 0
        self.rotations += 1

    def _backup(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    def _discard(self) -> None:
        """Drop the handle (after an error, or when the path moved on); the next batch
        opens the file afresh."""
        fh, self._fh = self._fh, None
        self._identity = None
        if fh is not None:
            try:
                fh.close()
            except OSError:
                pass  # the buffered lines were already counted as lost

    def health(self) -> dict[str, Any]:
        return {
            "status": "degraded" if self.error else "ok",
            "error": self.error,
            "last_error": self.last_error,
            "path": str(self.path),
            "bytes_written": self.bytes_written,
            "failed": self.failed,
            "reopened": self.reopened,
            "rotations": self.rotations,
            "flush": self.flush,
        }

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._guard(0, self._close_file, reraise=False)

    def _close_file(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            fh.close()


class BatchLogSinkTransport(LogSinkTransport):
    """Writes a whole worker batch and flushes once; a failed batch counts every event in it."""

    def send_batch(self, events: list[Event]) -> None:
        with self._lock:
            self._guard(len(events), lambda: self._write_batch(events), reraise=True)


def _make_private(path: Path) -> None:
    try:
        if stat.S_IMODE(path.stat().st_mode) != FILE_MODE:
            os.chmod(path, FILE_MODE)
    except OSError as exc:
        log.warning("log sink backup %s could not be made private: %s", path, exc)


#: The log sink's settings.
SETTINGS = (
    Setting("log_sink_path", "EVENTBUS_LOG_SINK_PATH", None, optional_text,
            "JSONL file every event is appended to (unset: no log sink)"),
    Setting("log_sink_max_bytes", "EVENTBUS_LOG_SINK_MAX_BYTES", 10 * 1024 * 1024, integer(1024),
            "size at which the file rotates"),
    Setting("log_sink_backups", "EVENTBUS_LOG_SINK_BACKUPS", 5, integer(0, 1000), "rotated files kept"),
    Setting("log_sink_flush", "EVENTBUS_LOG_SINK_FLUSH", "batch", choice(*FLUSH_POLICIES),
            "line: every event; batch: every worker batch; os: when the OS decides"),
)


@hookimpl
def eventbus_declare_settings() -> tuple[Setting, ...]:
    return SETTINGS


@hookimpl
def eventbus_register_transports(register: Callable[[Transport], None], config: Config) -> None:
    """Add the sink when ``EVENTBUS_LOG_SINK_PATH`` is set."""
    config.declare(SETTINGS)
    if config.log_sink_path:
        register(LogSinkTransport.from_config(config))
