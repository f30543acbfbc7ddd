"""The compact index of AuditEvents: one row per event instead of one row per value.

A request's event has one value each of `type`, `subtype`, `action`, `outcome`, `altid` and
`date` (audit/events.py); as generic rows (index.py) they were 6 rows and 19 B-tree
inserts, the larger part of an event's cost (docs/performance.md, "Eighth pass"). Here they
are columns of one `idx_audit` row keyed by the resource's `pk`. The rule for a parameter
with no value or several: its columns stay NULL and every value it has is a generic row, as
for any resource, so a search reads the columns and the generic rows (predicates.py) and
finds each value in exactly one of them. The references (`patient`, `entity`, `agent`, …) and
the other parameters stay generic rows: includes, compartments and chains read those.

A token value goes to the columns only with a code and no `:of-type` part; a protected
parameter's digests (search/blind.py) are such tokens, stored and searched as any other.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from ...search import DateEntry, IndexEntry, TokenEntry

AUDIT_TYPE = "AuditEvent"
TABLE = "idx_audit"
TOKENS = ("type", "subtype", "action", "outcome", "altid")
DATES = ("date",)
# The row's columns in insert order after `pk`: `<param>__<field>` (a double underscore, since
# `type_code` and `type_system` are already names of the token rows' :of-type columns).
COLUMNS = (*(f"{p}__{f}" for p in TOKENS for f in ("system", "code", "text")),
           *(f"{p}__{f}" for p in DATES for f in ("low", "high")))
DDL = f"""
CREATE TABLE {TABLE} (pk INTEGER PRIMARY KEY, {', '.join(COLUMNS)});
{';'.join(f"CREATE INDEX idx_audit_{p} ON {TABLE} ({p}__code)" for p in TOKENS)};
CREATE INDEX idx_audit_date_low ON {TABLE} (date__low, date__high);
CREATE INDEX idx_audit_date_high ON {TABLE} (date__high, date__low)
"""
FILL_CHUNK = 10_000  # events read at a time by the migration (a trail may hold millions)
_INSERT = f"INSERT INTO {TABLE} (pk, {', '.join(COLUMNS)}) VALUES (?{', ?' * len(COLUMNS)})"
_EMPTY = (None,) * len(COLUMNS)
_KIND = {**dict.fromkeys(TOKENS, TokenEntry), **dict.fromkeys(DATES, DateEntry)}
_KIND_OF_TABLE = {"idx_token": TokenEntry, "idx_date": DateEntry}
_OFFSET = {p: 3 * n for n, p in enumerate(TOKENS)} | {p: 3 * len(TOKENS) + 2 * n for n, p in enumerate(DATES)}


def compact(rtype: str, param: str, kind: type) -> bool:
    """Whether `rtype`'s values of `param` of entry type `kind` may be columns of `idx_audit`."""
    return rtype == AUDIT_TYPE and _KIND.get(param) is kind


def compact_table(rtype: str, param: str, table: str) -> bool:
    """`compact` for the parameter whose generic rows are in `table` (index.py)."""
    return compact(rtype, param, _KIND_OF_TABLE.get(table, type))


def _fits(entry: IndexEntry) -> bool:
    if type(entry) is TokenEntry:
        return entry.code is not None and entry.type_system is None and entry.type_code is None
    return True


def split(pk: int, entries: Iterable[IndexEntry]) -> tuple[tuple[Any, ...], list[IndexEntry]]:
    """An event's `idx_audit` row, and the entries left to generic rows: those of the other
    parameters, and every value of a compact parameter that has several (or one that does
    not fit a column)."""
    # Lists, not sets: a parameter nearly always has one value, and hashing each entry (a
    # dataclass: a tuple of its fields) cost more than the rest of the split.
    found: dict[str, list[IndexEntry]] = {}
    rest: list[IndexEntry] = []
    for entry in entries:
        if _KIND.get(entry.param) is type(entry):
            values = found.setdefault(entry.param, [])
            if entry not in values:  # duplicates collapse, as in any index
                values.append(entry)
        else:
            rest.append(entry)
    row: list[Any] = list(_EMPTY)
    for param, values in found.items():
        if len(values) != 1 or not _fits(entry := values[0]):
            rest.extend(values)
            continue
        at = _OFFSET[param]
        if type(entry) is TokenEntry:
            row[at:at + 3] = (entry.system, entry.code, entry.text)
        else:
            assert type(entry) is DateEntry
            row[at:at + 2] = (entry.low, entry.high)
    return (pk, *row), rest


def write(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert events' rows (inside the caller's write transaction)."""
    conn.executemany(_INSERT, rows)


def view(param: str) -> str:
    """`param`'s column values as rows shaped like its generic table's (`idx_token` or
    `idx_date`, less `pid`), so predicates.condition reads both alike; SQLite flattens the
    subquery, and seeks the column's index."""
    if _KIND[param] is TokenEntry:
        return (f"(SELECT pk, {param}__system AS system, {param}__code AS code, {param}__text AS text, "
                f"NULL AS type_system, NULL AS type_code FROM {TABLE} WHERE {param}__code IS NOT NULL)")
    return (f"(SELECT pk, {param}__low AS low, {param}__high AS high FROM {TABLE} "
            f"WHERE {param}__low IS NOT NULL)")


def column(param: str, field: str) -> str:
    """The column of `idx_audit` holding `field` (code, low, high, …) of `param`'s value."""
    return f"{param}__{field}"


def fill(conn: sqlite3.Connection) -> None:
    """Move the compact parameters' generic rows of a store made before `idx_audit` into it,
    FILL_CHUNK events at a time (a migration, inside its transaction): the rule of `split`."""
    chunk = FILL_CHUNK
    pids = dict(conn.execute(
        f"SELECT code, pid FROM search_param WHERE rtype = ? AND code IN "  # noqa: S608 - fixed
        f"({','.join('?' * len(_KIND))})", (AUDIT_TYPE, *_KIND)).fetchall())
    codes = {pid: code for code, pid in pids.items()}
    marks = ",".join("?" * len(codes))
    last = 0
    while True:
        pks = [row[0] for row in conn.execute(
            "SELECT pk FROM resource WHERE type = ? AND deleted = 0 AND pk > ? ORDER BY pk LIMIT ?",
            (AUDIT_TYPE, last, chunk))]
        if not pks:
            return
        low, last = pks[0], pks[-1]
        entries: dict[int, list[IndexEntry]] = {pk: [] for pk in pks}
        if codes:
            for pk, pid, system, code, text, type_system, type_code in conn.execute(
                    "SELECT pk, pid, system, code, text, type_system, type_code FROM idx_token "  # noqa: S608
                    f"WHERE pk BETWEEN ? AND ? AND pid IN ({marks}) AND grp IS NULL", (low, last, *codes)):
                if pk in entries:
                    entries[pk].append(TokenEntry(codes[pid], system, code, text, type_system, type_code))
            for pk, pid, low_at, high_at in conn.execute(
                    "SELECT pk, pid, low, high FROM idx_date "  # noqa: S608
                    f"WHERE pk BETWEEN ? AND ? AND pid IN ({marks}) AND grp IS NULL", (low, last, *codes)):
                if pk in entries:
                    entries[pk].append(DateEntry(codes[pid], low_at, high_at))
        rows: list[tuple[Any, ...]] = []
        moved: dict[type, set[tuple[int, int]]] = {TokenEntry: set(), DateEntry: set()}
        for pk, found in entries.items():
            row, rest = split(pk, found)
            rows.append(row)
            for entry in set(found) - set(rest):  # now in the row: its generic rows go
                moved[type(entry)].add((pk, pids[entry.param]))
        write(conn, rows)
        for kind, table in ((TokenEntry, "idx_token"), (DateEntry, "idx_date")):
            conn.executemany(f"DELETE FROM {table} WHERE pk = ? AND pid = ?", sorted(moved[kind]))  # noqa: S608
