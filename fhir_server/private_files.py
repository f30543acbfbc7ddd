"""The data directory's SQLite files readable by their owner only: they hold clinical data,
the audit trail, confirmation codes, password hashes and TOTP keys."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def make_private(path: Path) -> None:
    """Create the database file `path` 0600, or narrow it to 0600 if an older version made it
    wider. SQLite gives the -wal and -shm files the database file's mode; those left by an
    older version are narrowed too. Call before SQLite opens the file."""
    # Only a file this call creates is opened: closing any descriptor of a file drops every
    # POSIX lock this process holds on it, and SQLite's locks on a database another
    # connection of the process has open are such locks (losing them corrupts the WAL).
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    for name in (path, path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")):
        if name.exists() and name.stat().st_mode & 0o077:
            os.chmod(name, 0o600)


def fsync_path(path: Path) -> None:
    """Flush file `path` to disk; for a directory, the creation, renaming or removal of the
    files in it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def turn_lock(lock: Path) -> Iterator[int | None]:
    """Try to take the lock file `lock` (0600) without waiting: its descriptor while this
    process holds it, else None. With several worker processes, the one holding it takes a
    scheduled turn, the others skip. A child process handed the descriptor holds the lock
    with it (flock belongs to the open file, which the child shares)."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        yield fd
    finally:
        os.close(fd)
