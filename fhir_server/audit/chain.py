"""The audit records' hash chain: append-only, tamper-evident.

Each batch of AuditEvents the recorder stores together gets the next link of one chain:
`digest = SHA-256(previous digest + the hex SHA-256 of each event's canonical JSON, in order)`,
where the canonical JSON is the event as built (sorted keys, without the server's `meta`). The
link keeps each event's own digest too: an event stored encrypted under a patient's key
(crypto/) becomes unreadable when that key is destroyed by an erasure, and the chain still
verifies around it, from the digests it kept (links made before, without them, covered the
canonical JSON itself and are checked as they were). Links
live in their own SQLite file, appended under its write lock, so the workers of one server
share one chain. A batch's events are stored with a note naming them, so that a crash before
their link leaves a note recovery completes (recorder.py) rather than an event the chain does
not know; the `pending` table holds the notes of earlier releases, which noted a batch here
before storing it. `verify` walks the chain against
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
    digest   TEXT NOT NULL,
    event_digests TEXT   -- each event's digest, separated by spaces (NULL in older links)
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


def event_digest(event: dict[str, Any]) -> str:
    """What a link keeps of one event."""
    return hashlib.sha256(canonical(event)).hexdigest()


def link_digest(previous: str, event_digests: Sequence[str]) -> str:
    return hashlib.sha256("".join((previous, *event_digests)).encode()).hexdigest()


def _older_link_digest(previous: str, events: Sequence[dict[str, Any]]) -> str:
    """The digest of a link made before links kept their events' digests."""
    digest = hashlib.sha256(previous.encode())
    for event in events:
        digest.update(canonical(event))
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Link:
    """One link: its number, the ids of the events it covers, in order, its digest, and the
    digest of each event (None in links made before they were kept)."""

    seq: int
    event_ids: tuple[str, ...]
    digest: str
    event_digests: tuple[str, ...] | None = None


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
            if "event_digests" not in {row[1] for row in conn.execute("PRAGMA table_info(link)")}:
                conn.execute("ALTER TABLE link ADD COLUMN event_digests TEXT")
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

    def pending(self, owner: str) -> list[str]:
        """The events `owner` (a recorder of an earlier release) noted here and did not link,
        in the order noted."""
        rows = self._connection().execute(
            "SELECT event_id FROM pending WHERE owner = ? ORDER BY rowid", (owner,))
        return [row[0] for row in rows]

    def append(self, events: Sequence[dict[str, Any]]) -> str:
        """Add the link of a batch of stored events (each with its `id`); returns its digest."""
        conn = self._connection()
        ids = [event["id"] for event in events]
        digests = [event_digest(event) for event in events]
        with _immediate(conn):
            row = conn.execute("SELECT digest FROM link ORDER BY seq DESC LIMIT 1").fetchone()
            digest = link_digest(row[0] if row else GENESIS, digests)
            conn.execute("INSERT INTO link (event_id, digest, event_digests) VALUES (?, ?, ?)",
                         (" ".join(ids), digest, " ".join(digests)))
        return digest

    def linked(self, event_ids: Sequence[str]) -> bool:
        """Whether these events, in this order, are the batch of a link."""
        return self._connection().execute(
            "SELECT 1 FROM link WHERE event_id = ?", (" ".join(event_ids),)).fetchone() is not None

    def forget(self, event_ids: Iterable[str]) -> None:
        """Clear the pending notes of these events (linked, or never stored)."""
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
            conn.executemany(
                "INSERT INTO link (seq, event_id, digest, event_digests) VALUES (?, ?, ?, ?)",
                [(link.seq, " ".join(link.event_ids), link.digest,
                  " ".join(link.event_digests) if link.event_digests is not None else None)
                 for link in links])

    def links(self) -> list[Link]:
        return [Link(r[0], tuple(r[1].split(" ")), r[2], tuple(r[3].split(" ")) if r[3] else None)
                for r in self._connection().execute(
                    "SELECT seq, event_id, digest, event_digests FROM link ORDER BY seq")]


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
    shredded: int = 0  # events whose key an erasure destroyed: present, no longer readable


def verify(links: list[Link], events: dict[str, dict[str, Any]],
           stored_ids: Iterable[str], shredded: Iterable[str] = (), previous: str = GENESIS) -> Verdict:
    """Check every link against the stored events (`events` by id; `stored_ids` every
    AuditEvent id the store holds; `shredded` the ids of those whose key was destroyed;
    `previous` the digest before the first link: a pruning's checkpoint, audit/prune.py)."""
    verdict = Verdict()
    shredded = set(shredded)
    expected_seq = links[0].seq if links else 1
    for link in links:
        if link.seq != expected_seq:
            verdict.problems.append(f"links {expected_seq}..{link.seq - 1} are missing")
        expected_seq = link.seq + 1
        missing = [id for id in link.event_ids if id not in events and id not in shredded]
        verdict.problems += [f"AuditEvent/{id} (link {link.seq}) was removed" for id in missing]
        verdict.shredded += sum(id in shredded for id in link.event_ids)
        if link.event_digests is not None:
            verdict.problems += _changed(link, previous, events)
        elif not missing and not shredded.intersection(link.event_ids) and _older_link_digest(
                previous, [events[id] for id in link.event_ids]) != link.digest:
            changed = ", ".join(f"AuditEvent/{id}" for id in link.event_ids)
            some = "" if len(link.event_ids) == 1 else "one of "
            verdict.problems.append(f"{some}{changed} (link {link.seq}) was changed")
        verdict.checked += 1
        previous = link.digest
    chained = {id for link in links for id in link.event_ids}
    verdict.problems += [f"AuditEvent/{id} is not in the chain (added outside the recorder)"
                         for id in sorted(set(stored_ids) - chained)]
    return verdict


def _changed(link: Link, previous: str, events: dict[str, dict[str, Any]]) -> list[str]:
    """What a link keeping its events' digests finds changed: each readable event against its
    digest, and the link against the digests (an unreadable, shredded event is not checked)."""
    assert link.event_digests is not None
    if (len(link.event_digests) != len(link.event_ids)
            or link_digest(previous, link.event_digests) != link.digest):
        return [f"link {link.seq} was changed"]
    return [f"AuditEvent/{id} (link {link.seq}) was changed"
            for id, digest in zip(link.event_ids, link.event_digests, strict=False)
            if id in events and event_digest(events[id]) != digest]
