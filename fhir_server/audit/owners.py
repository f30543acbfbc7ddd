"""Which recorders are running: each process's recorder holds an exclusive `flock` on a file
named after it for as long as it lives, and the kernel releases it when the process dies,
however it dies. The notes a recorder leaves for its own later steps (pending links,
outbox records) carry its name; recovery completes the notes of names whose file is no
longer locked, and never those of a recorder still at work in another process."""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


class Owner:
    """This process's recorder name, locked in `directory` until `close`."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.name = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._fd = os.open(directory / f"{self.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def close(self) -> None:
        """Release the name; its file stays for the next start's recovery to clear, with any
        note a failed batch left."""
        os.close(self._fd)

    def ended(self) -> Iterator[str]:
        """The names of recorders that have stopped (their notes are orphans): each is
        locked by this process while the caller handles it, then forgotten."""
        for path in sorted(self.directory.glob("*.lock")):
            name = path.stem
            if name == self.name:
                continue
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue  # another process has just completed its notes
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # alive
            try:
                yield name
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)
