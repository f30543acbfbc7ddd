"""Search on SQLite: a Query AST -> one page of matches, includes, total (FHIR R4 search.html).

Paging is keyset: the cursor carries the sort key values and `pk` of the row at the page
boundary, so pages stay stable while others write (no OFFSET drift). Sort keys of multi-valued
parameters are the lowest value ascending and the highest descending; resources without a
value sort last either way.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from ...search import BlindIndex, Include, Query, Registry, Sort
from ..base import SearchPage, Version
from .. import decrypted_sort, includes
from ..cursors import decode, encode
from ..decrypted_sort import Opener
from . import audit_index
from .index import ParamIds
from .predicates import FALSE, PredicateCompiler, Sql, all_of, any_of

DEFAULT_COUNT = 20
_COLUMNS = "a.type, a.id, a.version, a.last_updated, h.method, h.body"
_ASC_MISSING = {"text": "char(1114111)", "number": "1.7e308"}
_DESC_MISSING = {"text": "''", "number": "-1.7e308"}
_SORT_COLUMNS = {
    "string": ("idx_string", "value", "value", "text"),
    "token": ("idx_token", "code", "code", "text"),
    "reference": ("idx_reference", "id", "id", "text"),
    "uri": ("idx_uri", "value", "value", "text"),
    "date": ("idx_date", "low", "high", "number"),
    "number": ("idx_number", "low", "high", "number"),
    "quantity": ("idx_quantity", "low", "high", "number"),
}


class SqliteSearch:
    """Runs Query ASTs on one connection."""

    def __init__(self, conn: sqlite3.Connection, ids: ParamIds, registry: Registry,
                 blind: BlindIndex | None = None, opened: Opener | None = None) -> None:
        """`blind`: protected parameters are indexed as digests; `opened` gives a stored
        version with its body readable (a `_sort` on a protected parameter reads it)."""
        self.conn = conn
        self.registry = registry
        self.compiler = PredicateCompiler(conn, ids, registry)
        self.ids = ids
        self.blind = blind or BlindIndex.nothing(registry)
        self.opened = opened

    # -- filtering -----------------------------------------------------------------------

    def _types(self, query: Query) -> list[str]:
        if query.resource_type is not None:
            return [query.resource_type]
        if query.types:
            return list(query.types)
        return [r[0] for r in self.conn.execute("SELECT DISTINCT type FROM resource")]

    def where(self, query: Query) -> Sql:
        """The filter of `query` over resource alias `a` (current, not deleted)."""
        if query.resource_type is not None:
            return all_of(("a.type = ? AND a.deleted = 0", [query.resource_type]),
                          self.compiler.clauses(query.clauses, query.resource_type, "a",
                                                pk_order=not query.sort))
        per_type = [
            all_of(("a.type = ?", [t]),
                   self.compiler.clauses(self.blind.clauses(query.clauses, t), t, "a",
                                         pk_order=not query.sort))
            for t in self._types(query)
        ]
        return all_of(("a.deleted = 0", []), any_of(per_type))

    # -- sorting and cursors -------------------------------------------------------------

    def _sort_key(self, sort: Sort, rtype: str | None) -> tuple[str, list[Any], str]:
        """(SQL expression, args, kind 'text'|'number') of one sort key, missing values last."""
        if sort.param == "_id":
            return "a.id", [], "text"
        if sort.param == "_lastUpdated":
            return "a.lu", [], "number"
        param = self.registry.get(rtype, sort.param) if rtype else self.registry.common(sort.param)
        found = _SORT_COLUMNS.get(param.type) if param else None
        pid = self.compiler.pid(rtype, sort.param) if rtype and found else None
        kind = found[3] if found else "text"
        missing = (_DESC_MISSING if sort.descending else _ASC_MISSING)[kind]
        table, low, high, _ = found or ("", "", "", "")
        # AuditEvents keep a single value as a column, several as rows (audit_index.py).
        own = audit_index.compact_table(rtype or "", sort.param, table)
        if found is None or (pid is None and not own):
            return missing, [], kind
        values = []
        if own:
            values.append(f"(SELECT {audit_index.column(sort.param, high if sort.descending else low)} "
                          f"FROM {audit_index.TABLE} WHERE pk = a.pk)")
        if pid is not None:
            pick = f"max({high})" if sort.descending else f"min({low})"
            # INDEXED BY: without statistics SQLite prefers scanning the (pid, value) index.
            values.append(f"(SELECT {pick} FROM {table} INDEXED BY {table}_pk WHERE pk = a.pk AND pid = ?)")
        return f"coalesce({', '.join(values)}, {missing})", [pid] if pid is not None else [], kind

    def _keys(self, query: Query) -> list[tuple[str, list[Any], bool]]:
        keys = [(*self._sort_key(s, query.resource_type)[:2], s.descending) for s in query.sort]
        keys.append(("a.pk", [], False))
        return keys

    @staticmethod
    def _after(keys: list[tuple[str, list[Any], bool]], values: Sequence[Any], backwards: bool) -> Sql:
        """Rows strictly after (or before, `backwards`) the row with key `values`."""
        options = []
        for n, (expression, args, descending) in enumerate(keys):
            equal = [(f"{e} = ?", [*a, v]) for (e, a, _), v in zip(keys[:n], values[:n])]
            greater = descending == backwards
            options.append(all_of(*equal, (f"{expression} {'>' if greater else '<'} ?", [*args, values[n]])))
        return any_of(options)

    # -- the page ------------------------------------------------------------------------

    def search(self, query: Query, cursor: str | None) -> SearchPage:
        """One page of `query`, starting after/before `cursor`."""
        if self.blind.sorts_protected(query):
            return self._search_decrypted(query, cursor, self.blind.sort_limit)
        query = self.blind.query(query)
        count = DEFAULT_COUNT if query.count is None else query.count
        where = self.where(query)
        total = self.count(where) if query.total in ("accurate", "estimate") or query.summary == "count" else None
        if count == 0 or query.summary == "count" or where == FALSE:
            return SearchPage((), total=0 if where == FALSE and total is not None else total)
        keys = self._keys(query)
        backwards, boundary = decode(cursor, len(keys)) if cursor else (False, None)
        sql, args = self._page(where, keys, boundary, backwards, count + 1)
        rows = self.conn.execute(sql, args).fetchall()
        more = len(rows) > count
        rows = rows[:count]
        if backwards:
            rows.reverse()
        width = len(keys)
        next_cursor = prev_cursor = None
        if rows and (more if not backwards else True):
            next_cursor = encode(False, rows[-1][-width:])
        if rows and (boundary is not None if not backwards else more):
            prev_cursor = encode(True, rows[0][-width:])
        matches = tuple(Version(*row[:6]) for row in rows)
        included = self.includes(query, rows)
        return SearchPage(matches, included, next_cursor, prev_cursor, total)

    def _search_decrypted(self, query: Query, cursor: str | None, limit: int) -> SearchPage:
        """`_sort` on a protected parameter: every match, sorted after decryption."""
        found = self.search(decrypted_sort.unsorted(query, limit), None).matches
        page = decrypted_sort.sorted_page(query, found, cursor, limit, self.opened)
        keys = [(v.resource_type, v.id) for v in page.matches]
        return dataclasses.replace(page, included=self.includes(query, keys))

    def _page(self, where: Sql, keys: list[tuple[str, list[Any], bool]], boundary: Sequence[Any] | None,
              backwards: bool, limit: int) -> Sql:
        """The statement of one page: matches after (or before) `boundary` in key order."""
        conditions = [where]
        if boundary is not None:
            conditions.append(self._after(keys, boundary, backwards))
        full = all_of(*conditions)
        order = ", ".join(f"{e} {'DESC' if d != backwards else 'ASC'}" for e, _, d in keys)
        select = ", ".join(e for e, _, _ in keys)
        sql = (f"SELECT {_COLUMNS}, {select} FROM resource a JOIN history h ON h.seq = a.seq "
               f"WHERE {full[0]} ORDER BY {order} LIMIT ?")
        key_args = [a for _, args, _ in keys for a in args]
        return sql, [*key_args, *full[1], *key_args, limit]

    def plan(self, query: Query) -> list[str]:
        """How SQLite runs the first page of `query` (EXPLAIN QUERY PLAN), for tests and benches."""
        query = self.blind.query(query)
        where = self.where(query)
        if where == FALSE:
            return []
        sql, args = self._page(where, self._keys(query), None, False, DEFAULT_COUNT + 1)
        return [row[3] for row in self.conn.execute(f"EXPLAIN QUERY PLAN {sql}", args)]

    def count(self, where: Sql) -> int:
        if where == FALSE:
            return 0
        sql = f"SELECT count(*) FROM resource a WHERE {where[0]}"
        return int(self.conn.execute(sql, where[1]).fetchone()[0])

    def match_ids(self, query: Query, limit: int | None) -> list[str]:
        """Ids of current resources matching `query` (conditional interactions)."""
        query = self.blind.query(query)
        where = self.where(query)
        if where == FALSE:
            return []
        sql = f"SELECT a.id FROM resource a WHERE {where[0]} ORDER BY a.pk"
        args = list(where[1])
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [row[0] for row in self.conn.execute(sql, args)]

    # -- _include / _revinclude ----------------------------------------------------------

    def includes(self, query: Query, rows: Sequence[Sequence[Any]]) -> tuple[Version, ...]:
        """Resources named by `_include` / `_revinclude`, iterating where asked."""
        return includes.run(query, [(row[0], row[1]) for row in rows], self._include_round,
                            self.opened)

    def _reference_pids(self, spec: Include, types: Iterable[str]) -> list[int]:
        pids = []
        for rtype in types:
            if spec.source_type not in (None, rtype):
                continue
            codes = ([spec.param] if spec.param else
                     [c for c, p in self.registry.for_type(rtype).items() if p.type == "reference"])
            pids += [pid for c in codes if (pid := self.compiler.pid(rtype, c)) is not None]
        return pids

    def _include_round(
        self, frontier: list[tuple[str, str]], specs: list[Include], rev: list[Include]
    ) -> list[Version]:
        """What one include round adds (store/includes.py walks the rounds)."""
        by_type: dict[str, list[str]] = {}
        for rtype, id in frontier:
            by_type.setdefault(rtype, []).append(id)
        targets: set[tuple[str, str]] = set()
        sources: set[int] = set()
        for rtype, ids in by_type.items():
            marks = ",".join("?" * len(ids))
            for spec in specs:
                pids = self._reference_pids(spec, [rtype])
                if not pids:
                    continue
                kind = " AND r.type = ?" if spec.target_type else ""
                # CROSS JOIN: from the page's resources to their reference rows by (pk, pid),
                # never from every reference row of the parameter.
                sql = (f"SELECT DISTINCT r.type, r.id FROM resource a "
                       f"CROSS JOIN idx_reference r INDEXED BY idx_reference_pk ON r.pk = a.pk "
                       f"WHERE a.type = ? AND a.id IN ({marks}) AND r.pid IN ({','.join('?' * len(pids))}) "
                       f"AND r.url IS NULL AND r.type IS NOT NULL{kind}")
                args = [rtype, *ids, *pids] + ([spec.target_type] if spec.target_type else [])
                targets.update((t, i) for t, i in self.conn.execute(sql, args))
            for spec in rev:
                if spec.target_type not in (None, rtype):
                    continue
                source_types = [spec.source_type] if spec.source_type else self._stored_types()
                pids = self._reference_pids(spec, source_types)
                if not pids:
                    continue
                sql = (f"SELECT DISTINCT r.pk FROM idx_reference r WHERE r.type = ? AND r.id IN ({marks}) "
                       f"AND r.pid IN ({','.join('?' * len(pids))}) AND r.url IS NULL")
                sources.update(row[0] for row in self.conn.execute(sql, [rtype, *ids, *pids]))
        return self._fetch_targets(targets) + self._fetch_pks(sources)

    def _stored_types(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT DISTINCT rtype FROM search_param")]

    def _fetch_targets(self, targets: set[tuple[str, str]]) -> list[Version]:
        out = []
        for rtype, id in sorted(targets):
            row = self.conn.execute(
                f"SELECT {_COLUMNS} FROM resource a JOIN history h ON h.seq = a.seq "
                "WHERE a.type = ? AND a.id = ? AND a.deleted = 0", (rtype, id)).fetchone()
            if row:
                out.append(Version(*row))
        return out

    def _fetch_pks(self, pks: set[int]) -> list[Version]:
        if not pks:
            return []
        ordered = sorted(pks)
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM resource a JOIN history h ON h.seq = a.seq "
            f"WHERE a.pk IN ({','.join('?' * len(ordered))}) AND a.deleted = 0 ORDER BY a.pk", ordered)
        return [Version(*row) for row in rows]
