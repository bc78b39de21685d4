"""The journal's files on disk: the run lock, and a database file that is private (0600)
and really an SQLite database before SQLite is let near it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from pathlib import Path
from typing import Final

from ..errors import JournalError, JournalLockedError

__all__ = ["check", "lock", "prepare"]

_SQLITE_MAGIC: Final = b"SQLite format 3\x00"
_PRIVATE: Final = 0o600


def check(path: Path) -> None:
    """JournalError unless ``path`` is missing, or a regular file holding an SQLite
    database or nothing (no side effect: the CLI checks ``--journal`` with it up front)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise JournalError(f"journal {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        what = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise JournalError(f"journal {path} is {what}; give a file path for --journal")
    try:
        with open(path, "rb") as f:
            _check_head(path, f.read(len(_SQLITE_MAGIC)))
    except OSError as exc:
        raise JournalError(f"journal {path}: {exc.strerror or exc}") from None


def _check_head(path: Path, head: bytes) -> None:
    if head and head != _SQLITE_MAGIC:
        raise JournalError(
            f"journal {path} is not an ingest journal (not an SQLite database); "
            "give another --journal path"
        )


def prepare(path: Path) -> None:
    """Make ``path`` ready to open: its folder exists (created 0700), it is a regular file
    (created 0600 when missing) holding an SQLite database or nothing. A looser mode on an
    existing journal (and its ``-wal``/``-shm`` files) is tightened to 0600. JournalError
    naming the path otherwise."""
    check(path)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK, _PRIVATE)
    except OSError as exc:
        raise JournalError(f"journal {path}: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped since the check
            raise JournalError(f"journal {path} is not a regular file")
        _check_head(path, os.pread(fd, len(_SQLITE_MAGIC), 0))
        for name in (str(path), f"{path}-wal", f"{path}-shm"):
            with contextlib.suppress(OSError):
                if os.stat(name).st_mode & 0o077:
                    os.chmod(name, _PRIVATE)
    finally:
        os.close(fd)


def lock(path: Path) -> int:
    """Take the exclusive, non-blocking flock on ``<path>.lock`` (created 0600) and write
    our pid in it."""
    lock_path = f"{path}.lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _PRIVATE)
    except OSError as exc:
        raise JournalError(f"journal lock {lock_path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise JournalLockedError(
            f"journal {path} is locked by another running ingest (pid {holder})"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
