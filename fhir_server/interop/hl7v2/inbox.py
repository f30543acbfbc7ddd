"""The inbox: every message as received, stored durably before it is processed, with its
state and the acknowledgment it got (data_dir/hl7v2.db, owner-only).

A message is keyed by its sender (MSH-3, MSH-4) and control id (MSH-10): the same key again
is a duplicate, answered with the stored acknowledgment and never applied twice. A message
found `received` (the server stopped before it was settled) is processed again when resent
or replayed; its conditional writes make a second run change nothing already written.
Unreadable messages (no key) are kept too, as errors."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
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
    """The messages received, in SQLite; each call commits (synchronous=FULL) before it returns."""

    def __init__(self, path: Path) -> None:
        make_private(path)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level="IMMEDIATE")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                return work(self._db)
        return await asyncio.to_thread(locked)

    async def receive(self, sender: str | None, control_id: str | None, raw: bytes,
                      peer: str | None) -> tuple[Stored, bool]:
        """Store a message as `received` (True), or return the one stored under the same key
        (False)."""
        def work(db: sqlite3.Connection) -> tuple[Stored, bool]:
            with db:  # the insert starts an IMMEDIATE transaction: other processes wait
                cursor = db.execute(
                    "INSERT INTO message (sender, control_id, received, peer, raw, state) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (sender, control_id) "
                    "WHERE sender IS NOT NULL DO NOTHING",
                    (sender, control_id, clock.instant(), peer, raw, RECEIVED))
                new = cursor.rowcount == 1
                row = (db.execute(f"SELECT {_COLUMNS} FROM message WHERE id = ?", (cursor.lastrowid,))
                       if new else db.execute(f"SELECT {_COLUMNS} FROM message WHERE sender = ? "
                                              "AND control_id = ?", (sender, control_id))).fetchone()
                return Stored(*row), new
        return await self._run(work)

    async def settle(self, id: int, state: str, ack: bytes, reason: str | None = None) -> None:
        """Record how message `id` ended: `applied` or `error`, with its acknowledgment.

        Not flushed to disk (synchronous=NORMAL, still safe from a process crash): losing it
        to a power cut leaves the message `received`, and a resend then finds its writes by
        their `meta.source` (receiver.py) instead of applying it again."""
        def work(db: sqlite3.Connection) -> None:
            db.execute("PRAGMA synchronous=NORMAL")
            try:
                with db:
                    db.execute("UPDATE message SET state = ?, ack = ?, reason = ?, settled = ? "
                               "WHERE id = ?", (state, ack, reason, clock.instant(), id))
            finally:
                db.execute("PRAGMA synchronous=FULL")
        await self._run(work)

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
