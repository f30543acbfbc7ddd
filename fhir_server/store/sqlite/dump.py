"""Backups of the SQLite store (`Store.dump`, `Store.load`): versions as stored, in write
order, out; the same back into an empty store, with index rows for each current version.

A dump reads in pages of `seq` up to the highest at its start: history is append-only, so
versions written meanwhile are left for the next backup, and an erasure meanwhile is replayed
from the erasure ledger on restore (docs/backup-and-erasure.md).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

from ... import clock
from ...search import BlindIndex, IndexEntry
from ..base import Version
from . import index as sqlite_index
from .index import ParamIds


def top(conn: sqlite3.Connection) -> int:
    """The `seq` of the latest version (0: none)."""
    return int(conn.execute("SELECT coalesce(max(seq), 0) FROM history").fetchone()[0])


def page(conn: sqlite3.Connection, after: int, upto: int, count: int) -> list[tuple[int, Version]]:
    """Up to `count` versions with `after` < seq <= `upto`, in write order, bodies as stored."""
    rows = conn.execute(
        "SELECT seq, type, id, version, last_updated, method, body FROM history "
        "WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?", (after, upto, count))
    return [(row[0], Version(*row[1:])) for row in rows]


def load(conn: sqlite3.Connection, ids: ParamIds,
         versions: Sequence[tuple[Version, Sequence[IndexEntry]]],
         blind: BlindIndex | None = None) -> None:
    """Append `versions` (each with its index entries) as the latest of their resources
    (inside the caller's transaction); `blind` indexes protected parameters as a write does.

    Into an empty store (a restore's first batch) the index lookups are dropped, to be built
    once by `index.build_lookups` when the restore is done (`Store.loaded`)."""
    if conn.execute("SELECT NOT EXISTS (SELECT 1 FROM resource)").fetchone()[0]:
        sqlite_index.drop_lookups(conn)
    for version, entries in versions:
        lu = clock.micros(datetime.fromisoformat(version.last_updated.replace("Z", "+00:00")))
        row = conn.execute("SELECT pk FROM resource WHERE type = ? AND id = ?",
                           (version.resource_type, version.id)).fetchone()
        if row is None:
            pk = conn.execute(
                "INSERT INTO resource (type, id, version, last_updated, lu, deleted, seq) "
                "VALUES (?, ?, 0, '', 0, 0, 0)", (version.resource_type, version.id)).lastrowid
        else:
            pk = row[0]
            sqlite_index.remove(conn, pk)
        seq = conn.execute(
            "INSERT INTO history (resource_pk, type, id, version, last_updated, method, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (pk, version.resource_type, version.id, version.version, version.last_updated,
             version.method, version.body)).lastrowid
        conn.execute("UPDATE resource SET version = ?, last_updated = ?, lu = ?, deleted = ?, "
                     "seq = ? WHERE pk = ?",
                     (version.version, version.last_updated, lu, version.body is None, seq, pk))
        if version.body is not None:
            assert pk is not None
            sqlite_index.insert(conn, ids, pk, version.resource_type, entries, blind)


def current_page(conn: sqlite3.Connection, after: int, count: int) -> list[tuple[int, Version]]:
    """Up to `count` current versions that are no deletion, of resources `pk` > `after`, in
    `pk` order, bodies as stored (a re-index's input: store/index_layout.py)."""
    rows = conn.execute(
        "SELECT r.pk, h.type, h.id, h.version, h.last_updated, h.method, h.body "
        "FROM resource r JOIN history h ON h.seq = r.seq "
        "WHERE r.pk > ? AND r.deleted = 0 ORDER BY r.pk LIMIT ?", (after, count))
    return [(row[0], Version(*row[1:])) for row in rows]


def reindex(conn: sqlite3.Connection, ids: ParamIds,
            versions: Sequence[tuple[Version, Sequence[IndexEntry]]],
            blind: BlindIndex | None = None) -> int:
    """Replace the index rows of each version still current with its entries (inside the
    caller's transaction); how many were. One written or deleted since was indexed by that
    write."""
    done = 0
    for version, entries in versions:
        row = conn.execute("SELECT pk FROM resource WHERE type = ? AND id = ? AND version = ? "
                           "AND deleted = 0", (version.resource_type, version.id,
                                               version.version)).fetchone()
        if row is not None:
            sqlite_index.remove(conn, row[0])
            sqlite_index.insert(conn, ids, row[0], version.resource_type, entries, blind)
            done += 1
    return done
