"""The audit records' hash chain: append-only, tamper-evident.

Each batch of AuditEvents the recorder stores together gets the next link of one chain:
`digest = SHA-256(previous digest + the canonical JSON of each event of the batch, in order)`,
where the canonical JSON is the event as built (sorted keys, without the server's `meta`); a
batch of one event is linked exactly as the single events of earlier versions were. Links
live in their own SQLite file, appended under its write lock, so the workers of one server
share one chain. Before its events are stored, a batch is noted as pending under its
recorder's name, so that a crash between the two steps leaves a note recovery completes
(recorder.py) rather than an event the chain does not know. `verify` walks the chain against
the stored AuditEvents: a changed event breaks its link, a removed one leaves a link without
its event, an event added behind the recorder's back has no link.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..private_files import make_private

GENESIS = "0" * 64

# `event_id` holds the ids of a link's events, separated by spaces (one id: one event).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS link (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    digest   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pending (
    event_id TEXT PRIMARY KEY,
    owner    TEXT NOT NULL
);
"""


def canonical(event: dict[str, Any]) -> bytes:
    """The bytes a link covers: the event without `meta`, keys sorted."""
    content = {k: v for k, v in event.items() if k != "meta"}
    return orjson.dumps(content, option=orjson.OPT_SORT_KEYS)


def link_digest(previous: str, events: Sequence[dict[str, Any]]) -> str:
    digest = hashlib.sha256(previous.encode())
    for event in events:
        digest.update(canonical(event))
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Link:
    """One link: its number, the ids of the events it covers, in order, and its digest."""

    seq: int
    event_ids: tuple[str, ...]
    digest: str


class Chain:
    """The links, in `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()  # one connection per thread, opened once
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            make_private(self.path)
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")  # a stored event never lacks its link
            conn.executescript(_SCHEMA)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def close(self) -> None:
        """Close every thread's connection (at shutdown)."""
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    def intend(self, owner: str, event_ids: Sequence[str]) -> None:
        """Note, durably, that `owner` is about to store these events."""
        conn = self._connection()
        with _immediate(conn):
            conn.executemany("INSERT OR IGNORE INTO pending (event_id, owner) VALUES (?, ?)",
                             [(id, owner) for id in event_ids])

    def pending(self, owner: str) -> list[str]:
        """The events `owner` noted and has not linked yet, in the order noted."""
        rows = self._connection().execute(
            "SELECT event_id FROM pending WHERE owner = ? ORDER BY rowid", (owner,))
        return [row[0] for row in rows]

    def append(self, events: Sequence[dict[str, Any]]) -> str:
        """Add the link of a batch of stored events (each with its `id`) and clear their
        pending note; returns its digest."""
        conn = self._connection()
        ids = [event["id"] for event in events]
        with _immediate(conn):
            row = conn.execute("SELECT digest FROM link ORDER BY seq DESC LIMIT 1").fetchone()
            digest = link_digest(row[0] if row else GENESIS, events)
            conn.execute("INSERT INTO link (event_id, digest) VALUES (?, ?)", (" ".join(ids), digest))
            conn.executemany("DELETE FROM pending WHERE event_id = ?", [(id,) for id in ids])
        return digest

    def forget(self, event_ids: Iterable[str]) -> None:
        """Clear pending notes of events that were never stored (nothing to link)."""
        conn = self._connection()
        with _immediate(conn):
            conn.executemany("DELETE FROM pending WHERE event_id = ?", [(id,) for id in event_ids])

    def load(self, links: Sequence[Link]) -> None:
        """Put the links of a backup into this chain, which must be empty (`fhir-server
        restore`); ValueError if it is not."""
        conn = self._connection()
        with _immediate(conn):
            if conn.execute("SELECT 1 FROM link LIMIT 1").fetchone():
                raise ValueError(f"the audit chain {self.path} is not empty")
            conn.executemany("INSERT INTO link (seq, event_id, digest) VALUES (?, ?, ?)",
                             [(link.seq, " ".join(link.event_ids), link.digest) for link in links])

    def links(self) -> list[Link]:
        return [Link(r[0], tuple(r[1].split(" ")), r[2]) for r in
                self._connection().execute("SELECT seq, event_id, digest FROM link ORDER BY seq")]


@contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """A `BEGIN IMMEDIATE` transaction: committed at the end of the block, rolled back on
    any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@dataclass(slots=True)
class Verdict:
    """What `verify` found: problems, one line each (empty: the trail is intact)."""

    checked: int = 0
    problems: list[str] = field(default_factory=list)
    shredded: int = 0  # links whose events include some shredded by an erasure


def verify(links: list[Link], events: dict[str, dict[str, Any]],
           stored_ids: Iterable[str], shredded: frozenset[str] = frozenset()) -> Verdict:
    """Check every link against the stored events (`events` by id; `stored_ids` every
    AuditEvent id the store holds). The events in `shredded` are stored but can no longer be
    read (sealed under a patient's data key that an erasure destroyed): a link covering one
    cannot be recomputed, and the chain goes on from its stored digest."""
    verdict = Verdict()
    previous = GENESIS
    expected_seq = links[0].seq if links else 1
    for link in links:
        if link.seq != expected_seq:
            verdict.problems.append(f"links {expected_seq}..{link.seq - 1} are missing")
        expected_seq = link.seq + 1
        missing = [id for id in link.event_ids if id not in events and id not in shredded]
        verdict.problems += [f"AuditEvent/{id} (link {link.seq}) was removed" for id in missing]
        if not shredded.isdisjoint(link.event_ids):
            verdict.shredded += 1
        elif not missing and link_digest(previous, [events[id] for id in link.event_ids]) != link.digest:
            changed = ", ".join(f"AuditEvent/{id}" for id in link.event_ids)
            some = "" if len(link.event_ids) == 1 else "one of "
            verdict.problems.append(f"{some}{changed} (link {link.seq}) was changed")
        verdict.checked += 1
        previous = link.digest
    chained = {id for link in links for id in link.event_ids}
    verdict.problems += [f"AuditEvent/{id} is not in the chain (added outside the recorder)"
                         for id in sorted(set(stored_ids) - chained)]
    return verdict
