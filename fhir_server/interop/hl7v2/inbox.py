"""The inbox: every message as received, stored before it is processed, with its state and
the acknowledgment it got (data_dir/hl7v2.db, owner-only).

Each call commits before it returns, safe from a crash of the process (WAL,
synchronous=NORMAL); `flush()` makes what was committed durable on disk too (a power cut),
one fsync for all the callers waiting at the time: a receipt is flushed while its message
is mapped and validated, before its transaction may commit (receiver.py).

A message is keyed by its sender (MSH-3, MSH-4) and control id (MSH-10): the same key again
is a duplicate, answered with the stored acknowledgment and never applied twice. A message
found `received` (the server stopped before it was settled) is processed again when resent
or replayed; its conditional writes make a second run change nothing already written.
Unreadable messages (no key) are kept too, as errors."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ... import clock
from ...private_files import make_private

T = TypeVar("T")

RECEIVED, APPLIED, ERROR = "received", "applied", "error"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS message (
    id INTEGER PRIMARY KEY,
    sender TEXT,
    control_id TEXT,
    received TEXT NOT NULL,
    peer TEXT,
    raw BLOB NOT NULL,
    state TEXT NOT NULL,
    ack BLOB,
    reason TEXT,
    settled TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS message_key ON message (sender, control_id)
    WHERE sender IS NOT NULL;
CREATE INDEX IF NOT EXISTS message_state ON message (state);
"""


@dataclass(frozen=True, slots=True)
class Stored:
    """One message of the inbox."""

    id: int
    sender: str | None
    control_id: str | None
    received: str
    peer: str | None
    raw: bytes
    state: str
    ack: bytes | None
    reason: str | None


class Inbox:
    """The messages received, in SQLite; each call commits before it returns, `flush` makes
    the commits durable."""

    def __init__(self, path: Path) -> None:
        make_private(path)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level="IMMEDIATE")
        self._db.execute("PRAGMA journal_mode=WAL")
        # A commit is written to the WAL file (a killed process loses nothing) but not synced:
        # flush() syncs the WAL for every commit made before it, as synchronous=FULL would
        # for each one (sqlite.org/pragma.html#pragma_synchronous).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._wal = path.with_name(path.name + "-wal")
        self._named = False  # whether the WAL file's directory entry was synced
        self._lock = threading.Lock()
        self._committed = 0  # commits made by this inbox ...
        self._flushed = 0  # ... and how many of them are known durable
        self._flushing = asyncio.Lock()

    async def _run(self, work: Callable[[sqlite3.Connection], T], *, commits: bool = False) -> T:
        def locked() -> T:
            with self._lock:
                result = work(self._db)
                self._committed += commits
                return result
        return await asyncio.to_thread(locked)

    async def flush(self) -> None:
        """Return once every commit made before the call is on disk. Callers arriving while
        a sync runs wait for it, then share the next one."""
        wanted = self._committed
        async with self._flushing:
            if self._flushed >= wanted:
                return
            reached = self._committed
            await asyncio.to_thread(self._sync)
            self._flushed = reached

    def _sync(self) -> None:
        # A checkpoint has synced what it moved out of the WAL (and a WAL file removed at the
        # last close was all checkpointed); the rest is in the WAL file.
        try:
            _fsync(self._wal)
        except FileNotFoundError:
            return
        if not self._named:
            _fsync(self._wal.parent)
            self._named = True

    async def receive(self, sender: str | None, control_id: str | None, raw: bytes,
                      peer: str | None) -> tuple[Stored, bool]:
        """Store a message as `received` (True), or return the one stored under the same key
        (False)."""
        [received] = await self.receive_all([(sender, control_id, raw, peer)])
        return received

    async def receive_all(self, messages: Sequence[tuple[str | None, str | None, bytes, str | None]]
                          ) -> list[tuple[Stored, bool]]:
        """`receive` of several messages (sender, control id, raw, peer), in one commit."""
        def work(db: sqlite3.Connection) -> list[tuple[Stored, bool]]:
            received = []
            with db:  # the first insert starts an IMMEDIATE transaction: other processes wait
                for sender, control_id, raw, peer in messages:
                    cursor = db.execute(
                        "INSERT INTO message (sender, control_id, received, peer, raw, state) "
                        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (sender, control_id) "
                        "WHERE sender IS NOT NULL DO NOTHING",
                        (sender, control_id, clock.instant(), peer, raw, RECEIVED))
                    new = cursor.rowcount == 1
                    row = (db.execute(f"SELECT {_COLUMNS} FROM message WHERE id = ?", (cursor.lastrowid,))
                           if new else db.execute(f"SELECT {_COLUMNS} FROM message WHERE sender = ? "
                                                  "AND control_id = ?", (sender, control_id))).fetchone()
                    received.append((Stored(*row), new))
            return received
        return await self._run(work, commits=True)

    async def settle(self, id: int, state: str, ack: bytes, reason: str | None = None) -> None:
        """Record how message `id` ended: `applied` or `error`, with its acknowledgment."""
        await self.settle_all([(id, state, ack, reason)])

    async def settle_all(self, outcomes: Sequence[tuple[int, str, bytes, str | None]]) -> None:
        """`settle` of several messages (id, state, ack, reason), in one commit.

        Not flushed by itself: losing it to a power cut leaves a message `received`, and a
        resend then finds its writes by their `meta.source` (receiver.py) instead of applying
        it again."""
        def work(db: sqlite3.Connection) -> None:
            with db:
                db.executemany("UPDATE message SET state = ?, ack = ?, reason = ?, settled = ? "
                               "WHERE id = ?", [(state, ack, reason, clock.instant(), id)
                                                for id, state, ack, reason in outcomes])
        await self._run(work, commits=True)

    async def get(self, id: int) -> Stored | None:
        row = await self._run(lambda db: db.execute(
            f"SELECT {_COLUMNS} FROM message WHERE id = ?", (id,)).fetchone())
        return Stored(*row) if row else None

    async def unsettled(self, states: tuple[str, ...] = (ERROR, RECEIVED), limit: int = 100) -> list[Stored]:
        """Messages in `states`, oldest first: the errors, and those received but never settled."""
        marks = ", ".join("?" for _ in states)
        rows = await self._run(lambda db: db.execute(
            f"SELECT {_COLUMNS} FROM message WHERE state IN ({marks}) ORDER BY id LIMIT ?",
            (*states, limit)).fetchall())
        return [Stored(*row) for row in rows]

    def close(self) -> None:
        self._db.close()


_COLUMNS = "id, sender, control_id, received, peer, raw, state, ack, reason"


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
