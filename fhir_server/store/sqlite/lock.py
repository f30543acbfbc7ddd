"""The lock that takes turns between the writers of one SQLite file, across processes.

SQLite serialises writers itself, but a writer that finds the file locked sleeps in steps
that grow to 100 ms (its busy handler), so with two uvicorn workers writing all the time
each lost race costs tens of milliseconds of idle time. Writers take this advisory file
lock first and poll it in steps of at most 2 ms; SQLite's own lock is then free when
`BEGIN IMMEDIATE` asks for it, unless a program outside this store writes to the file.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from ...model.errors import Kind, fail

_LONGEST_NAP = 0.002


class WriterLock:
    """An exclusive `flock` on a file next to the database; one holder per process at a time
    (the store's single writer thread), released by the kernel if the process dies."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._fd: int | None = None

    def acquire(self) -> None:
        """Wait for the lock; BUSY after `timeout` seconds."""
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.timeout
        nap = 0.0001
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise fail(Kind.BUSY, "transient", "The store is busy; retry later.") from None
                time.sleep(nap)
                nap = min(nap * 2, _LONGEST_NAP)

    def release(self) -> None:
        assert self._fd is not None
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
