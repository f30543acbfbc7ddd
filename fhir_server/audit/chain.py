"""The audit records' hash chain: append-only, tamper-evident.

Each AuditEvent, once stored, gets the next link of one chain: `digest = SHA-256(previous
digest + canonical JSON of the event)`, where the canonical JSON is the event as built (sorted
keys, without the server's `meta`). Links live in their own SQLite file, appended under its
write lock, so the workers of one server share one chain. `verify` walks the chain against the
stored AuditEvents: a changed event breaks its link, a removed one leaves a link without its
event, an event added behind the recorder's back has no link.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

GENESIS = "0" * 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS link (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    digest   TEXT NOT NULL
);
"""


def canonical(event: dict[str, Any]) -> bytes:
    """The bytes a link covers: the event without `meta`, keys sorted."""
    content = {k: v for k, v in event.items() if k != "meta"}
    return orjson.dumps(content, option=orjson.OPT_SORT_KEYS)


def link_digest(previous: str, event: dict[str, Any]) -> str:
    return hashlib.sha256(previous.encode() + canonical(event)).hexdigest()


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

    def append(self, event_id: str, event: dict[str, Any]) -> str:
        """Add the link of a stored event; returns its digest."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT digest FROM link ORDER BY seq DESC LIMIT 1").fetchone()
            digest = link_digest(row[0] if row else GENESIS, event)
            conn.execute("INSERT INTO link (event_id, digest) VALUES (?, ?)", (event_id, digest))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return digest

    def links(self) -> list[tuple[int, str, str]]:
        return [(r[0], r[1], r[2]) for r in
                self._connection().execute("SELECT seq, event_id, digest FROM link ORDER BY seq")]


@dataclass(slots=True)
class Verdict:
    """What `verify` found: problems, one line each (empty: the trail is intact)."""

    checked: int = 0
    problems: list[str] = field(default_factory=list)


def verify(links: list[tuple[int, str, str]], events: dict[str, dict[str, Any]],
           stored_ids: Iterable[str]) -> Verdict:
    """Check every link against the stored events (`events` by id; `stored_ids` every
    AuditEvent id the store holds)."""
    verdict = Verdict()
    previous = GENESIS
    expected_seq = links[0][0] if links else 1
    for seq, event_id, digest in links:
        if seq != expected_seq:
            verdict.problems.append(f"links {expected_seq}..{seq - 1} are missing")
        expected_seq = seq + 1
        event = events.get(event_id)
        if event is None:
            verdict.problems.append(f"AuditEvent/{event_id} (link {seq}) was removed")
        elif link_digest(previous, event) != digest:
            verdict.problems.append(f"AuditEvent/{event_id} (link {seq}) was changed")
        verdict.checked += 1
        previous = digest
    chained = {event_id for _, event_id, _ in links}
    verdict.problems += [f"AuditEvent/{id} is not in the chain (added outside the recorder)"
                         for id in sorted(set(stored_ids) - chained)]
    return verdict
