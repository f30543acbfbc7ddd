"""Search index tables of the SQLite store: DDL, parameter ids, writing entries.

One table per entry type (search/entries.py), rows keyed by the resource's `pk` and a small
integer `pid` naming (resource type, parameter code), so an index lookup touches only one
type's rows. Composite entries are stored as their components, each in its own type's table
under the pid of `<composite>#<i>`, tied together by `grp`. `_id` and `_lastUpdated` are not
stored here: they are columns of `resource` (see schema.py). docs/storage.md explains
every index.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter
from typing import Any

from ...search import (
    BlindIndex,
    CompositeEntry,
    DateEntry,
    IndexEntry,
    NumberEntry,
    PositionEntry,
    QuantityEntry,
    ReferenceEntry,
    StringEntry,
    TokenEntry,
    UriEntry,
)
from . import audit_index

INDEX_TABLES = """
CREATE TABLE search_param (
    pid   INTEGER PRIMARY KEY,
    rtype TEXT NOT NULL,
    code  TEXT NOT NULL,
    UNIQUE (rtype, code)
);
CREATE TABLE idx_string (pk INTEGER NOT NULL, pid INTEGER NOT NULL, grp INTEGER,
                         value TEXT NOT NULL, exact TEXT NOT NULL);
CREATE INDEX idx_string_value ON idx_string (pid, value, pk);
CREATE INDEX idx_string_pk ON idx_string (pk, pid);
CREATE TABLE idx_token (pk INTEGER NOT NULL, pid INTEGER NOT NULL, grp INTEGER,
                        system TEXT, code TEXT, text TEXT, type_system TEXT, type_code TEXT);
CREATE INDEX idx_token_code ON idx_token (pid, code, system, pk);
CREATE INDEX idx_token_pk ON idx_token (pk, pid);
CREATE TABLE idx_reference (pk INTEGER NOT NULL, pid INTEGER NOT NULL, grp INTEGER,
                            type TEXT, id TEXT, version TEXT, url TEXT,
                            identifier_system TEXT, identifier_value TEXT);
CREATE INDEX idx_reference_target_any ON idx_reference (id, type, pid, pk);
CREATE INDEX idx_reference_url ON idx_reference (pid, url) WHERE url IS NOT NULL;
CREATE INDEX idx_reference_identifier ON idx_reference (pid, identifier_value)
    WHERE identifier_value IS NOT NULL;
CREATE INDEX idx_reference_pk ON idx_reference (pk, pid);
CREATE TABLE idx_date (pk INTEGER NOT NULL, pid INTEGER NOT NULL, grp INTEGER,
                       low INTEGER NOT NULL, high INTEGER NOT NULL);
CREATE INDEX idx_date_low ON idx_date (pid, low, high, pk);
CREATE INDEX idx_date_high ON idx_date (pid, high, low, pk);
CREATE INDEX idx_date_pk ON idx_date (pk, pid);
CREATE TABLE idx_number (pk INTEGER NOT NULL, pid INTEGER NOT NULL, grp INTEGER,
                         value REAL, low REAL NOT NULL, high REAL NOT NULL);
CREATE INDEX idx_number_low ON idx_number (pid, low, high, pk);
CREATE INDEX idx_number_pk ON idx_number (pk, pid);
CREATE TABLE idx_quantity (pk INTEGER NOT NULL, pid INTEGER NOT NULL, grp INTEGER,
                           value REAL, low REAL NOT NULL, high REAL NOT NULL,
                           system TEXT, code TEXT, unit TEXT);
CREATE INDEX idx_quantity_code ON idx_quantity (pid, code, low, high, pk);
CREATE INDEX idx_quantity_pk ON idx_quantity (pk, pid);
CREATE TABLE idx_uri (pk INTEGER NOT NULL, pid INTEGER NOT NULL, grp INTEGER, value TEXT NOT NULL);
CREATE INDEX idx_uri_value ON idx_uri (pid, value, pk);
CREATE INDEX idx_uri_pk ON idx_uri (pk, pid);
CREATE TABLE idx_position (pk INTEGER NOT NULL, pid INTEGER NOT NULL, grp INTEGER,
                           latitude REAL NOT NULL, longitude REAL NOT NULL);
CREATE INDEX idx_position_lat ON idx_position (pid, latitude, pk);
CREATE INDEX idx_position_pk ON idx_position (pk, pid);
"""

# Entry type -> (table, value columns in field order after `param`).
TABLES: dict[type, tuple[str, tuple[str, ...]]] = {
    StringEntry: ("idx_string", ("value", "exact")),
    TokenEntry: ("idx_token", ("system", "code", "text", "type_system", "type_code")),
    ReferenceEntry: (
        "idx_reference",
        ("type", "id", "version", "url", "identifier_system", "identifier_value"),
    ),
    DateEntry: ("idx_date", ("low", "high")),
    NumberEntry: ("idx_number", ("value", "low", "high")),
    QuantityEntry: ("idx_quantity", ("value", "low", "high", "system", "code", "unit")),
    UriEntry: ("idx_uri", ("value",)),
    PositionEntry: ("idx_position", ("latitude", "longitude")),
}
TABLE_NAMES = (*(table for table, _ in TABLES.values()), audit_index.TABLE)
_INSERTS = {
    entry_type: f"INSERT INTO {table} (pk, pid, grp, {', '.join(columns)}) "
    f"VALUES (?, ?, ?, {', '.join('?' * len(columns))})"
    for entry_type, (table, columns) in TABLES.items()
}
# The index B-trees searches seek by value, by name: a restore into an empty store drops them
# and builds each once at the end, sorted (sqlite/dump.py), rather than one random insert per
# row. The `_pk` ones stay: a restore removes a resource's rows by pk when its next version
# comes, and their inserts are appends (idx_audit is keyed by pk itself). INDEX_TABLES and
# audit_index.DDL are the current shape (a migration that
# drops an index removes it there too, see schema.py), so what is built is what is wanted.
LOOKUPS: dict[str, str] = {
    statement.split()[2]: statement.strip()
    for statement in (INDEX_TABLES + ";" + audit_index.DDL).split(";")
    if statement.strip().startswith("CREATE INDEX") and not statement.split()[2].endswith("_pk")
}
# Kept in resource columns, not in index tables.
RESOURCE_COLUMNS = frozenset({"_id", "_lastUpdated"})


def component_code(composite: str, index: int) -> str:
    """The pseudo parameter code under which component `index` of a composite is stored."""
    return f"{composite}#{index}"


class ParamIds:
    """(resource type, code) <-> pid, cached once committed.

    A committed pid is never reassigned, so it is cached for good. A pid inserted by a unit of
    work is not cached before that unit commits: if it rolled back, SQLite would hand the same
    pid to the next new parameter (rowids of rolled-back rows are reused) and the index rows
    of both parameters would mix. Such a pid is cached when `settle(committed=True)` reports
    the commit, or when a read outside any transaction sees its row; until then each lookup
    reads the row again.
    """

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str], int] = {}
        self.committed: Mapping[tuple[str, str], int] = self._ids  # read-only view for callers
        self._pending: dict[tuple[str, str], int] = {}  # inserted, commit not yet seen
        self._settling = False  # settle() is called: _pending holds the open transaction's only

    def get(self, conn: sqlite3.Connection, rtype: str, code: str) -> int | None:
        """The pid, or None if no resource was ever indexed under it."""
        key = (rtype, code)
        pid = self._ids.get(key)
        if pid is not None:
            return pid
        if self._settling and conn.in_transaction:
            pending = self._pending.get(key)
            if pending is not None:
                return pending
        row = conn.execute("SELECT pid FROM search_param WHERE rtype = ? AND code = ?", key).fetchone()
        if row is None:
            if conn.in_transaction:  # the writer: the unit that inserted it rolled back
                self._pending.pop(key, None)
            return None
        # Outside a transaction only committed rows are visible; inside one, a row is committed
        # unless this process inserted it (other connections' pending rows are invisible).
        if not conn.in_transaction or key not in self._pending:
            self._ids[key] = int(row[0])
            self._pending.pop(key, None)
        return int(row[0])

    def ensure(self, conn: sqlite3.Connection, rtype: str, code: str) -> int:
        """The pid, created if needed (inside the caller's write transaction)."""
        pid = self.get(conn, rtype, code)
        if pid is None:
            key = (rtype, code)
            conn.execute("INSERT OR IGNORE INTO search_param (rtype, code) VALUES (?, ?)", key)
            row = conn.execute("SELECT pid FROM search_param WHERE rtype = ? AND code = ?", key).fetchone()
            pid = self._pending[key] = int(row[0])
        return pid

    def savepoint(self) -> frozenset[tuple[str, str]]:
        """The parameters inserted so far by the open transaction (see `rolled_back`)."""
        return frozenset(self._pending)

    def rolled_back(self, savepoint: frozenset[tuple[str, str]]) -> None:
        """The transaction rolled back to `savepoint`: the pids inserted since are gone (and
        SQLite may hand them out again)."""
        for key in [key for key in self._pending if key not in savepoint]:
            del self._pending[key]

    def settle(self, committed: bool) -> None:
        """The write transaction ended: cache the pids it created, or forget them.

        To be called after every COMMIT and every ROLLBACK of the writer, or never.
        """
        if committed:
            self._ids.update(self._pending)
        self._pending.clear()
        self._settling = True


def _getter(columns: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """The value columns of an entry as a tuple (attrgetter: no Python-level loop per row)."""
    get = attrgetter(*columns)
    if len(columns) == 1:
        return lambda entry: (get(entry),)
    return get


_GETTERS = {entry_type: _getter(columns) for entry_type, (_, columns) in TABLES.items()}


def insert(
    conn: sqlite3.Connection, ids: ParamIds, pk: int, rtype: str, entries: Sequence[IndexEntry],
    blind: BlindIndex | None = None,
) -> None:
    """Write the index rows of one resource version (duplicates collapse to one row);
    `blind` turns the entries of protected parameters into digests (search/blind.py)."""
    rows = PendingRows()
    rows.add(conn, ids, pk, rtype, entries, blind)
    rows.write(conn)


class PendingRows:
    """The index rows of a unit's writes, kept until `write` inserts them all with one
    `executemany` per table (a batch of AuditEvents: an `idx_audit` row and two reference
    rows each, audit_index.py). Whoever
    holds them writes them before anything reads the index or removes rows."""

    def __init__(self) -> None:
        self._rows: dict[type, list[tuple[Any, ...]]] = {}
        # The pids the unit's writes used, by (type, code): a pid it inserted is valid as long
        # as the unit, and these rows go with the unit if it rolls back. A batch of 10,000
        # AuditEvents names 8 codes; before the store's first commit none is in `ids.committed`.
        self._pids: dict[tuple[str, str], int] = {}
        self._audit: list[tuple[Any, ...]] = []  # AuditEvents' rows of idx_audit (audit_index.py)

    def add(self, conn: sqlite3.Connection, ids: ParamIds, pk: int, rtype: str,
            entries: Sequence[IndexEntry], blind: BlindIndex | None = None) -> None:
        """Keep the rows of one resource version (its duplicates collapse to one row);
        `blind` turns the entries of protected parameters into digests (search/blind.py)."""
        if blind is not None:
            entries = blind.entries(rtype, entries)
        if rtype == audit_index.AUDIT_TYPE:
            row, entries = audit_index.split(pk, entries)
            self._audit.append(row)
        rows: dict[type, set[tuple[Any, ...]]] = {}
        known = ids.committed  # the pids of nearly every entry, without a call per entry
        pids = self._pids
        group = 0
        for entry in entries:
            param = entry.param
            if param in RESOURCE_COLUMNS:
                continue
            kind = type(entry)
            if kind is CompositeEntry:
                group += 1
                for index, component in enumerate(entry.components):
                    pid = self._pid(conn, ids, rtype, component_code(param, index))
                    kind = type(component)
                    rows.setdefault(kind, set()).add((pk, pid, group, *_GETTERS[kind](component)))
                continue
            key = (rtype, param)
            pid = known.get(key) or pids.get(key) or self._pid(conn, ids, rtype, param)
            rows.setdefault(kind, set()).add((pk, pid, None, *_GETTERS[kind](entry)))
        pending = self._rows
        for kind, values in rows.items():
            if kind in pending:
                pending[kind].extend(values)
            else:
                pending[kind] = list(values)

    def _pid(self, conn: sqlite3.Connection, ids: ParamIds, rtype: str, code: str) -> int:
        """The pid of `rtype`'s `code`, created if needed, remembered for the unit."""
        key = (rtype, code)
        pid = ids.committed.get(key) or self._pids.get(key)
        if pid is None:
            pid = self._pids[key] = ids.ensure(conn, rtype, code)
        return pid

    def write(self, conn: sqlite3.Connection) -> None:
        """Insert the rows kept so far (inside the caller's write transaction)."""
        for entry_type, values in self._rows.items():
            conn.executemany(_INSERTS[entry_type], values)
        self._rows.clear()
        if self._audit:
            audit_index.write(conn, self._audit)
            self._audit.clear()


def drop_lookups(conn: sqlite3.Connection) -> None:
    """Drop the lookup B-trees (inside a restore's first write into an empty store)."""
    for name in LOOKUPS:
        conn.execute(f"DROP INDEX IF EXISTS {name}")


def build_lookups(conn: sqlite3.Connection) -> None:
    """Build the lookup B-trees that are missing (after a restore, or at open after one was
    cut short); those present are left as they are."""
    for statement in LOOKUPS.values():
        conn.execute(statement.replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS", 1))


def remove(conn: sqlite3.Connection, pk: int) -> None:
    """Delete every index row of a resource (before re-indexing it, or on deletion)."""
    for table in TABLE_NAMES:
        conn.execute(f"DELETE FROM {table} WHERE pk = ?", (pk,))  # noqa: S608 - fixed names
