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
Unreadable messages (no key) are kept too, as errors.

What a message says is personal (names, INS, diagnoses): its raw bytes, its acknowledgment
(ERR texts quote fields) and the reason it failed are stored sealed by the body codec
(crypto/, docs/security.md) under the key of the type scope `hl7-message`, each bound to
its row id and field (version 0 raw, 1 ack, 2 reason): a sealed field moved to another row
or field, or changed, fails to open. Sender, control id, peer, dates and state stay in
clear (they find duplicates and errors; no personal data). A file written before sealing
(`PRAGMA user_version` 0) is sealed in place when opened."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ... import clock
from ...private_files import fsync_path, make_private
from .message import Message, read

T = TypeVar("T")
log = logging.getLogger("fhir_server.hl7v2")

RECEIVED, APPLIED, ERROR, ERASED = "received", "applied", "error", "erased"
# The "resource type" a message's fields are sealed as: a key scope of their own.
SCOPE = "hl7-message"
_RAW, _ACK, _REASON = 0, 1, 2  # the field a sealed value is bound to, as its "version"
_SEALED = 1  # PRAGMA user_version of a file whose fields are all sealed


class Codec(Protocol):
    """The body codec (crypto/codec.py `BodyCodec`), as the inbox uses it; interop/ reaches
    crypto/ only through what app.py hands it (ARCHITECTURE.md)."""

    def seal(self, resource_type: str, id: str, version: int, body: bytes,
             patients: Collection[str]) -> bytes: ...

    def open(self, resource_type: str, id: str, version: int, stored: bytes) -> bytes: ...

    def prepare(self, resources: Iterable[tuple[str, Collection[str]]]) -> None: ...

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
-- The Patients an applied message wrote (ids, pseudonymous): what an erasure wipes.
CREATE TABLE IF NOT EXISTS message_patient (
    patient TEXT NOT NULL,
    message INTEGER NOT NULL,
    PRIMARY KEY (patient, message)
) WITHOUT ROWID;
-- The last message id given: never given again, even once that message is deleted (a sealed
-- field is bound to its row id; an old one put back on a new row must not open).
CREATE TABLE IF NOT EXISTS last_id (one INTEGER PRIMARY KEY CHECK (one = 1), id INTEGER NOT NULL);
"""


class SealedInboxError(Exception):
    """A sealed inbox opened with encryption off (docs/hl7v2.md "Encrypted at rest")."""


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

    def __init__(self, path: Path, codec: Codec) -> None:
        make_private(path)
        self._codec = codec
        codec.prepare([(SCOPE, ())])  # the scope's key made now, not under the lock
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level="IMMEDIATE")
        self._db.execute("PRAGMA journal_mode=WAL")
        # A commit is written to the WAL file (a killed process loses nothing) but not synced:
        # flush() syncs the WAL for every commit made before it, as synchronous=FULL would
        # for each one (sqlite.org/pragma.html#pragma_synchronous).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        # What is deleted or rewritten (erased, expired, sealed in place) is overwritten with
        # zeros, not left in free pages (sqlite.org/pragma.html#pragma_secure_delete).
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.executescript(_SCHEMA)
        self._seal_plaintext(path)
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
            fsync_path(self._wal)
        except FileNotFoundError:
            return
        if not self._named:
            fsync_path(self._wal.parent)
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
            with db:
                # Begun before the id is chosen: the module's implicit BEGIN comes only with
                # the first insert, and another process could choose the same id meanwhile.
                db.execute("BEGIN IMMEDIATE")
                for sender, control_id, raw, peer in messages:
                    # The id is chosen here (the transaction holds the write lock) so that the
                    # sealed raw bytes can be bound to it.
                    [id] = db.execute("SELECT max(coalesce(max(id), 0), coalesce((SELECT id FROM last_id), 0)) "
                                      "+ 1 FROM message").fetchone()
                    cursor = db.execute(
                        "INSERT INTO message (id, sender, control_id, received, peer, raw, state) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sender, control_id) "
                        "WHERE sender IS NOT NULL DO NOTHING",
                        (id, sender, control_id, clock.instant(), peer,
                         self._seal(id, _RAW, raw), RECEIVED))
                    new = cursor.rowcount == 1
                    if new:
                        db.execute("INSERT INTO last_id VALUES (1, ?) ON CONFLICT (one) DO UPDATE "
                                   "SET id = excluded.id", (id,))
                    row = (db.execute(f"SELECT {_COLUMNS} FROM message WHERE id = ?", (id,))
                           if new else db.execute(f"SELECT {_COLUMNS} FROM message WHERE sender = ? "
                                                  "AND control_id = ?", (sender, control_id))).fetchone()
                    received.append((self._opened(row), new))
            return received
        return await self._run(work, commits=True)

    async def settle(self, id: int, state: str, ack: bytes, reason: str | None = None) -> None:
        """Record how message `id` ended: `applied` or `error`, with its acknowledgment."""
        await self.settle_all([(id, state, ack, reason)])

    async def settle_all(self, outcomes: Sequence[tuple[int, str, bytes, str | None]],
                         patients: Mapping[int, Collection[str]] | None = None) -> None:
        """`settle` of several messages (id, state, ack, reason), in one commit, with the
        Patients (ids) each applied message wrote.

        Not flushed by itself: losing it to a power cut leaves a message `received`, and a
        resend then finds its writes by their `meta.source` (receiver.py) instead of applying
        it again."""
        def work(db: sqlite3.Connection) -> None:
            with db:
                db.executemany("UPDATE message SET state = ?, ack = ?, reason = ?, settled = ? "
                               "WHERE id = ?", [(state, self._seal(id, _ACK, ack),
                                                 self._seal(id, _REASON, reason.encode()) if reason else None,
                                                 clock.instant(), id)
                                                for id, state, ack, reason in outcomes])
                db.executemany("INSERT OR IGNORE INTO message_patient (patient, message) VALUES (?, ?)",
                               [(patient, id) for id, written in (patients or {}).items()
                                for patient in written])
        await self._run(work, commits=True)

    async def forget(self, patient: str) -> int:
        """Wipe the messages that wrote Patient/`patient` (an erasure): their raw bytes and
        reason go, their key and acknowledgment stay (state `erased`), so that the same
        message sent again is answered as the duplicate it is and does not write the
        patient again. The messages in error or unsettled that name one of the identifiers
        (PID-3, MRG-1) those messages named are deleted (their ERR texts may quote fields:
        nothing of them is kept). How many; the WAL is emptied after (or, if a reader blocks
        it, logged and left to the next retention pass)."""
        def work(db: sqlite3.Connection) -> int:
            with db:
                ids = [id for (id,) in db.execute(
                    "SELECT message FROM message_patient WHERE patient = ?", (patient,))]
                named = frozenset().union(*(self._identifiers(id, raw) for id, raw in db.execute(
                    f"SELECT id, raw FROM message WHERE id IN ({', '.join('?' * len(ids))})", ids)))
                unsettled = [id for id, raw in db.execute(
                    "SELECT id, raw FROM message WHERE state IN (?, ?)", (ERROR, RECEIVED))
                    if self._identifiers(id, raw) & named]
                self._wipe(db, ids, ERASED)
                db.executemany("DELETE FROM message WHERE id = ?", [(id,) for id in unsettled])
            self._truncate_wal()
            return len(ids) + len(unsettled)
        return await self._run(work, commits=True)

    def _identifiers(self, id: int, raw: bytes) -> frozenset[str]:
        """The patient identifiers message `id` names, as sent; none if wiped or unreadable
        (one row that fails to open must not stop every erasure: it is logged, and kept for
        `hl7 errors`, which reports it)."""
        try:
            message = read(self._open(id, _RAW, raw)) if raw else None
        except Exception:  # noqa: BLE001 - the codec's UnreadableBody (crypto/ is not imported here)
            log.warning("hl7v2: a stored message cannot be opened; an erasure skips it",
                        extra={"message_id": id})
            return frozenset()
        return message.patients() if isinstance(message, Message) else frozenset()

    async def expire(self, keep_days: int) -> tuple[int, int]:
        """Retention: wipe the messages applied more than `keep_days` days ago (their key and
        acknowledgment stay, still finding duplicates), delete those in error or unsettled
        received that long ago (a resend is processed anew). How many of each."""
        cutoff = clock.instant(clock.now() - timedelta(days=keep_days))

        def work(db: sqlite3.Connection) -> tuple[int, int]:
            with db:
                ids = [id for (id,) in db.execute(
                    "SELECT id FROM message WHERE state = ? AND settled < ? AND length(raw) > 0",
                    (APPLIED, cutoff))]
                self._wipe(db, ids, APPLIED)
                deleted = db.execute("DELETE FROM message WHERE state IN (?, ?) AND received < ?",
                                     (ERROR, RECEIVED, cutoff)).rowcount
            self._truncate_wal()  # also what an earlier erasure or pass could not truncate
            return len(ids), deleted
        return await self._run(work, commits=True)

    def _wipe(self, db: sqlite3.Connection, ids: list[int], state: str) -> None:
        db.executemany("UPDATE message SET raw = x'', reason = NULL, state = ? WHERE id = ?",
                       [(state, id) for id in ids])
        db.executemany("DELETE FROM message_patient WHERE message = ?", [(id,) for id in ids])

    async def get(self, id: int) -> Stored | None:
        row = await self._run(lambda db: db.execute(
            f"SELECT {_COLUMNS} FROM message WHERE id = ?", (id,)).fetchone())
        return self._opened(row) if row else None

    async def unsettled(self, states: tuple[str, ...] = (ERROR, RECEIVED), limit: int = 100) -> list[Stored]:
        """Messages in `states`, oldest first: the errors, and those received but never settled."""
        marks = ", ".join("?" for _ in states)
        rows = await self._run(lambda db: db.execute(
            f"SELECT {_COLUMNS} FROM message WHERE state IN ({marks}) ORDER BY id LIMIT ?",
            (*states, limit)).fetchall())
        return [self._listed(row) for row in rows]

    def _listed(self, row: tuple[Any, ...]) -> Stored:
        """A row as `_opened`, or, if it fails to open, with why as its reason and no content:
        one changed row does not hide the others from `hl7 errors`."""
        try:
            return self._opened(row)
        except Exception as exc:  # noqa: BLE001 - the codec's UnreadableBody; its text names no content
            id, sender, control_id, received, peer, _, state, _, _ = row
            return Stored(id, sender, control_id, received, peer, b"", state, None, str(exc))

    def _seal(self, id: int, field: int, value: bytes) -> bytes:
        return self._codec.seal(SCOPE, str(id), field, value, ())

    def _open(self, id: int, field: int, stored: bytes) -> bytes:
        """A sealed field; raises the codec's UnreadableBody if it was moved or changed."""
        return self._codec.open(SCOPE, str(id), field, stored)

    def _opened(self, row: tuple[Any, ...]) -> Stored:
        id, sender, control_id, received, peer, raw, state, ack, reason = row
        content = self._open(id, _RAW, raw) if raw else b""  # empty: wiped (erased, expired)
        return Stored(id, sender, control_id, received, peer, content, state,
                      self._open(id, _ACK, ack) if ack is not None else None,
                      self._open(id, _REASON, reason).decode() if reason is not None else None)

    def _seal_plaintext(self, path: Path) -> None:
        """Seal in place the fields of a file written before they were sealed, once, in one
        transaction (another process opening it meanwhile waits, then finds it done). Left
        as it is when the codec stores plaintext (encryption off); but a sealed file is not
        opened then: the rows it would take in clear would never be sealed (the file says it
        is) and, encryption on again, would fail to open (SealedInboxError)."""
        if self._codec.seal(SCOPE, "0", _RAW, b"", ()) == b"":
            if self._db.execute("PRAGMA user_version").fetchone()[0] >= _SEALED:
                self._db.close()
                raise SealedInboxError(
                    f"the HL7 v2 inbox {path} is encrypted and encryption is off: turn it on "
                    "(FHIR_SERVER_ENCRYPTION, with the key ring that sealed it) to open it")
            return
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            if self._db.execute("PRAGMA user_version").fetchone()[0] >= _SEALED:
                return
            rows = self._db.execute("SELECT id, raw, ack, reason FROM message").fetchall()
            self._db.executemany(
                "UPDATE message SET raw = ?, ack = ?, reason = ? WHERE id = ?",
                [(self._seal(id, _RAW, raw), self._seal(id, _ACK, ack) if ack is not None else None,
                  self._seal(id, _REASON, reason.encode()) if reason is not None else None, id)
                 for id, raw, ack, reason in rows])
            self._db.execute(f"PRAGMA user_version = {_SEALED}")
        self._truncate_wal()

    def _truncate_wal(self) -> bool:
        """Copy the WAL into the file and empty it: the pages it held before (plaintext,
        erased rows) are gone from both. A reader holding an older snapshot blocks it: SQLite
        retries for the busy timeout (5 s), then it is logged and left to the next retention
        pass (`expire`, hourly), which truncates whatever it wiped or not. Whether it was done."""
        [busy, *_] = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            log.warning("hl7v2: a reader blocks the inbox's WAL; wiped messages stay in its older "
                        "frames until the next retention pass truncates it")
        return not busy

    def close(self) -> None:
        """Close the file once the work running in a thread is done (the listener stops
        waiting for connections after STOP_TIMEOUT; closing under a statement crashes)."""
        with self._lock:
            self._db.close()


_COLUMNS = "id, sender, control_id, received, peer, raw, state, ack, reason"
