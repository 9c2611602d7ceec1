"""Files and directories private to the server's user, whatever the umask.

The data dir holds the generated secret key and the webhook outbox; the log sink holds every
event. :func:`private_dir` makes a directory ``0700`` (creating it, or tightening an existing
one that others can read), and :func:`open_private` opens a file that is ``0600`` from the
moment it exists, so no other local user can read it even for an instant.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("eventbus.files")

#: Mode of a private directory and of a private file.
DIR_MODE = 0o700
FILE_MODE = 0o600
_OTHERS = 0o077  # group and other permission bits


def private_dir(path: str | os.PathLike[str]) -> Path:
    """The directory at ``path``, made private and returned as a :class:`Path`.

    Missing directories (including missing parents) are created with mode ``0700``,
    independent of the umask. An existing directory that grants group or other users any
    permission loses those bits (its owner's bits are kept) and a warning is logged; when it
    belongs to another user and cannot be changed, a warning is logged and the directory is
    used as it is. Raises :class:`OSError` when the directory cannot be created.
    """
    target = Path(path)
    missing: list[Path] = []
    probe = target
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:
            pass  # created meanwhile by another process; checked below
        else:
            os.chmod(directory, DIR_MODE)  # mkdir's mode is masked by the umask
    _tighten_dir(target)
    return target


def _tighten_dir(path: Path) -> None:
    """Remove group and other bits from an existing directory, warning when there were any."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if not mode & _OTHERS:
        return
    try:
        os.chmod(path, mode & ~_OTHERS)
    except OSError as exc:
        log.warning("directory is readable by other users and could not be made private: "
                    "path=%s mode=%04o error=%s", path, mode, exc.strerror or exc)
        return
    log.warning("directory was readable by other users, made private: path=%s mode=%04o -> %04o",
                path, mode, mode & ~_OTHERS)


def _flags(mode: str) -> int:
    """``open()``-style mode (``r w a x``, optional ``+ b t``) as ``os.open`` flags."""
    kind = [c for c in mode if c in "rwax"]
    if len(kind) != 1 or any(c not in "rwaxbt+" for c in mode):
        raise ValueError(f"invalid mode: {mode!r}")
    access = os.O_RDWR if "+" in mode else (os.O_RDONLY if kind[0] == "r" else os.O_WRONLY)
    extra = {"r": 0, "w": os.O_CREAT | os.O_TRUNC, "a": os.O_CREAT | os.O_APPEND,
             "x": os.O_CREAT | os.O_EXCL}[kind[0]]
    return access | extra | getattr(os, "O_CLOEXEC", 0)


def open_private(path: str | os.PathLike[str], mode: str = "a", **kwargs: Any) -> IO[Any]:
    """Open ``path`` like :func:`open` (same ``mode`` letters and keyword arguments:
    ``encoding``, ``buffering``, ``newline``, ``errors``), with the file private to the
    server's user.

    A new file is created with mode ``0600`` whatever the umask; an existing file is set to
    ``0600`` (with a warning when group or other users could read it). The parent directory
    is not created. To make a file private that another library opens itself (an SQLite
    database), call ``open_private(path, "a").close()`` first; SQLite gives its journal and
    WAL files the permissions of the database file.
    """
    fd = os.open(path, _flags(mode), FILE_MODE)
    try:
        before = stat.S_IMODE(os.fstat(fd).st_mode)
        if before != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
            if before & _OTHERS:
                log.warning("file was readable by other users, made private: path=%s mode=%04o -> %04o",
                            path, before, FILE_MODE)
        # io.open, not os.fdopen (eventlet's green fdopen refuses "x"); the flags are set
        # already, and an fd is never truncated or created again by open().
        return open(fd, mode.replace("x", "w"), **kwargs)
    except BaseException:
        os.close(fd)
        raise
