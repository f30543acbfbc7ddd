"""The resources of many queries at once (`Store.gather`, and the erasure's sweep: erase.py):
a patient's compartment in one statement rather than one search per type (66 in R4, most
of them empty for any one patient).

A compartment query (services/erase.py `compartment`) is one clause of plain references to
the patient (`subject=Patient/x`, `performer=Patient/x`, ...) and, for the Patient itself,
its `_id`. The reference index holds each such row under (id, type, pid), so the members of
every type are found by one seek per parameter, in one statement, exactly as each query's
search would find them (predicates.py `condition`: no url, the target's id and type, any
version). A query of another shape is run as the search runs it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from itertools import chain

from ...search import Query, ReferencePredicate, TokenPredicate
from ..base import Version
from .query import SqliteSearch

# Rows read per statement (bounded SQL, as erase.py's batches).
_CHUNK = 500
_VERSION = ("SELECT r.type, r.id, r.version, r.last_updated, h.method, h.body FROM resource r "
            "JOIN history h ON h.seq = r.seq WHERE r.pk IN ({marks}) ORDER BY r.pk")


def _target(query: Query) -> tuple[str, str] | None:
    """(type, id) of the one resource `query` asks for references to (or, by `_id`, for
    itself), if that is all it asks; None otherwise."""
    if query.resource_type is None or len(query.clauses) != 1:
        return None
    targets = set()
    for p in query.clauses[0].any_of:
        if (isinstance(p, ReferencePredicate) and p.url is None and p.version is None
                and p.type and p.id):
            targets.add((p.type, p.id))
        elif isinstance(p, TokenPredicate) and p.param == "_id" and p.system in (None, "") and p.code:
            targets.add((query.resource_type, p.code))
        else:
            return None
    return next(iter(targets)) if len(targets) == 1 else None


Row = tuple[int, str, str]  # a resource's pk, type and id


def members(conn: sqlite3.Connection, search: SqliteSearch, queries: Sequence[Query]) -> list[Row]:
    """The current resources one of `queries` matches, each once, in `pk` order."""
    by_target: dict[tuple[str, str], list[Query]] = {}
    found: set[Row] = set()
    for query in queries:
        target = _target(query)
        if target is None:
            where = search.where(search.blind.query(query))
            found.update(conn.execute(
                f"SELECT a.pk, a.type, a.id FROM resource a WHERE {where[0]}", where[1]))  # noqa: S608
        else:
            by_target.setdefault(target, []).append(query)
    for (target_type, target_id), same in by_target.items():
        found.update(_referring(conn, search, target_type, target_id, same))
    return sorted(found)


def _referring(conn: sqlite3.Connection, search: SqliteSearch, target_type: str,
               target_id: str, queries: list[Query]) -> list[Row]:
    """The current resources of `queries` (each of `_target` (type, id)) that
    refer to it, or are it."""
    pids = [pid for query in queries for p in query.clauses[0].any_of
            if isinstance(p, ReferencePredicate)
            and (pid := search.compiler.pid(query.resource_type or "", p.param)) is not None]
    itself = sorted({query.resource_type or "" for query in queries  # by `_id`: the target's type
                     if any(isinstance(p, TokenPredicate) for p in query.clauses[0].any_of)})
    parts, args = [], []
    if pids:
        parts.append("SELECT x.pk FROM idx_reference x WHERE x.id = ? AND x.type = ? "
                     f"AND x.pid IN ({','.join('?' * len(pids))}) AND x.url IS NULL")
        args += [target_id, target_type, *pids]
    if itself:
        parts.append(f"SELECT pk FROM resource WHERE type IN ({','.join('?' * len(itself))}) "
                     "AND id = ?")
        args += [*itself, target_id]
    if not parts:
        return []
    return conn.execute(
        f"SELECT a.pk, a.type, a.id FROM resource a WHERE a.deleted = 0 AND a.pk IN "  # noqa: S608
        f"({' UNION '.join(parts)})", args).fetchall()


def gather(conn: sqlite3.Connection, search: SqliteSearch, queries: Sequence[Query]) -> list[Version]:
    """The current versions (bodies as stored) of what one of `queries` matches."""
    pks = [pk for pk, _, _ in members(conn, search, queries)]
    return list(chain.from_iterable(
        (Version(*row) for row in conn.execute(
            _VERSION.format(marks=",".join("?" * len(chunk))), chunk))  # noqa: S608 - marks only
        for chunk in (pks[start:start + _CHUNK] for start in range(0, len(pks), _CHUNK))))
