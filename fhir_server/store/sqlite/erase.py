"""Erasure on the SQLite store (`Store.erase`): every version, index row and resource row of a
patient's compartment, and of what else their data keys sealed (a Bundle holding their
record, earlier versions of resources that left the compartment: store/erasure.py), in one
write transaction, then the WAL checkpointed and truncated (at once, or, for many erasures
in a row, when the caller asks: `Store.checkpoints_deferred`).

The connections run with `PRAGMA secure_delete` (store.py), so the rows removed are
overwritten with zeros in the database file rather than left in free pages; the checkpoint
then copies those pages home and empties the WAL, whose older frames still held them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ... import clock
from ...crypto import BodyCodec, patient_key_ids
from ...model.errors import FhirError, Kind
from ...search import Query
from ..base import Erase, Erasure, Version
from ..erasure import batches, updated_since, was_member
from . import index as sqlite_index
from .compartment import members as current_members
from .query import SqliteSearch
from .schema import ERASABLE


def members(conn: sqlite3.Connection, search: SqliteSearch, codec: BodyCodec,
            queries: Sequence[Query], unless_updated_since: int | None = None) -> list[tuple[str, str]]:
    """(type, id) of the current resources one of `queries` matches (compartment.py: one
    statement for a compartment) and of the deleted ones one of them matched; CONFLICT if
    one of the current ones was written at `unless_updated_since` (microseconds) or later."""
    current = current_members(conn, search, queries)
    if unless_updated_since is not None and _updated(conn, [pk for pk, _, _ in current], unless_updated_since):
        raise updated_since()
    found = [(resource_type, id) for _, resource_type, id in current]
    of_type: dict[str, list[Query]] = {}
    for query in queries:
        of_type.setdefault(query.resource_type or "", []).append(query)
    deleted = conn.execute(
        f"SELECT type, id FROM resource WHERE type IN ({','.join('?' * len(of_type))}) "  # noqa: S608
        "AND deleted = 1", list(of_type)).fetchall() if of_type else []
    for resource_type, id in deleted:
        last = _last_stored(conn, resource_type, id)
        if any(was_member(query, search.registry, codec, last) for query in of_type[resource_type]):
            found.append((resource_type, id))
    return found


def _updated(conn: sqlite3.Connection, pks: list[int], since: int) -> bool:
    """Whether one of the resources `pks` was written at `since` (microseconds) or later."""
    return any(conn.execute(
        f"SELECT 1 FROM resource WHERE pk IN ({','.join('?' * len(chunk))}) AND lu >= ? LIMIT 1",  # noqa: S608
        (*chunk, since)).fetchone() for chunk in batches(pks))


def _last_stored(conn: sqlite3.Connection, resource_type: str | None, id: str) -> Version | None:
    row = conn.execute(
        "SELECT type, id, version, last_updated, method, body FROM history "
        "WHERE type = ? AND id = ? AND body IS NOT NULL ORDER BY version DESC LIMIT 1",
        (resource_type, id)).fetchone()
    return Version(*row) if row else None


def remove(conn: sqlite3.Connection, search: SqliteSearch, codec: BodyCodec,
           compartment: Sequence[Query], last: tuple[str, str],
           unless_updated_since: int | None = None) -> Erasure:
    """Remove the compartment's resources, then `last` (inside the caller's transaction: a
    BEGIN IMMEDIATE one, which holds SQLite's write lock from its start, so the condition
    `unless_updated_since` is checked with no write of any process able to land before the
    removal ends)."""
    key_ids = patient_key_ids(codec, last[1])
    keys = members(conn, search, codec, compartment, unless_updated_since) + _current_under(conn, key_ids)
    erased = Erasure()
    for batch in [*batches(list(dict.fromkeys(k for k in keys if k != last))), [last]]:
        _remove_batch(conn, batch, erased)
    _remove_moved_out(conn, key_ids, erased)
    return erased


def remove_each(conn: sqlite3.Connection, search: SqliteSearch, codec: BodyCodec,
                erasures: Sequence[Erase]) -> list[Erasure | FhirError]:
    """`remove` of each of `erasures`, in order, in the caller's one transaction (the pages
    their compartments share are written once, at its commit); an erasure its condition
    refuses has its CONFLICT for outcome, and nothing of it removed (`members` checks before
    anything is removed), the others go on."""
    outcomes: list[Erasure | FhirError] = []
    for erasure in erasures:
        since = erasure.unless_updated_since
        try:
            outcomes.append(remove(conn, search, codec, erasure.compartment, erasure.last,
                                   None if since is None else clock.micros(since)))
        except FhirError as error:
            if error.kind is not Kind.CONFLICT:
                raise
            outcomes.append(error)
    return outcomes


def _remove_batch(conn: sqlite3.Connection, keys: list[tuple[str, str]], erased: Erasure) -> None:
    """Remove the resources `keys` (at most BATCH), their versions and index rows: a few
    statements per type and table, not one per resource and table."""
    by_type: dict[str, list[str]] = {}
    for resource_type, id in keys:
        by_type.setdefault(resource_type, []).append(id)
    for resource_type, ids in by_type.items():
        found = conn.execute(f"SELECT pk, id FROM resource WHERE type = ? AND id IN "  # noqa: S608
                             f"({','.join('?' * len(ids))})", (resource_type, *ids)).fetchall()
        if not found:
            continue
        pks = [pk for pk, _ in found]
        pk_marks = ",".join("?" * len(pks))
        for table in sqlite_index.TABLE_NAMES:
            conn.execute(f"DELETE FROM {table} WHERE pk IN ({pk_marks})", pks)  # noqa: S608
        versions = conn.execute(
            f"DELETE FROM history WHERE type = ? AND id IN ({pk_marks})",  # noqa: S608
            (resource_type, *(id for _, id in found))).rowcount
        conn.execute(f"DELETE FROM resource WHERE pk IN ({pk_marks})", pks)  # noqa: S608
        erased.resources[resource_type] = erased.resources.get(resource_type, 0) + len(pks)
        erased.versions[resource_type] = erased.versions.get(resource_type, 0) + versions


def _current_under(conn: sqlite3.Connection, key_ids: frozenset[bytes]) -> list[tuple[str, str]]:
    """The resources outside the compartment whose current version is sealed under the
    patient's keys (a Bundle holding their record: store/bodies.py)."""
    if not key_ids:
        return []
    marks = ",".join("?" * len(key_ids))
    return [(t, i) for t, i in conn.execute(
        # from the history's index on the key id (schema.py) to each current version's row
        "SELECT r.type, r.id FROM history h CROSS JOIN resource r ON r.pk = h.resource_pk "  # noqa: S608
        f"WHERE substr(h.body, 2, 16) IN ({marks}) AND h.{ERASABLE} AND r.seq = h.seq", tuple(key_ids))]


def _remove_moved_out(conn: sqlite3.Connection, key_ids: frozenset[bytes], erased: Erasure) -> None:
    """Remove the earlier versions, sealed under the patient's keys, of resources that left
    the compartment since (their current version is another's). One pass over the history:
    the key id is bytes 2-17 of every sealed body (crypto/envelope.py)."""
    if not key_ids:
        return
    marks = ",".join("?" * len(key_ids))
    earlier = ("NOT EXISTS (SELECT 1 FROM resource r WHERE r.pk = history.resource_pk "
               "AND r.seq = history.seq)")  # not a current version: one look-up, not a scan
    for resource_type, count in conn.execute(
            f"SELECT type, count(*) FROM history WHERE substr(body, 2, 16) IN ({marks}) "  # noqa: S608
            f"AND {ERASABLE} AND {earlier} GROUP BY type", tuple(key_ids)).fetchall():
        erased.versions[resource_type] = erased.versions.get(resource_type, 0) + count
    conn.execute(f"DELETE FROM history WHERE substr(body, 2, 16) IN ({marks}) "  # noqa: S608
                 f"AND {ERASABLE} AND {earlier}", tuple(key_ids))


# The WAL's bound, in pages, inside `Store.checkpoints_deferred` (SQLite's default: 1,000):
# past it, SQLite copies the WAL home after a commit on its own, as ever, so that a caller
# checkpointing too seldom does not fill the disk (4 KiB pages: 400 MB).
DEFERRED_WAL_PAGES = 100_000


def checkpoint(conn: sqlite3.Connection) -> None:
    """Copy the WAL into the database and truncate it to nothing (waits for readers up to
    the busy timeout; a reader holding an old snapshot longer leaves the WAL for the next
    checkpoint, which SQLite runs on its own)."""
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
