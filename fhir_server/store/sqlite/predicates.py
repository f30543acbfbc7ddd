"""Query AST predicates -> SQLite boolean expressions (FHIR R4 search.html).

Each predicate becomes an expression over a `resource` row alias, usually
`alias.pk IN (SELECT pk FROM idx_<type> WHERE pid = ? AND <condition>)`, so SQLite drives the
search from the most selective index and never filters after paging. The conditions mirror
search/params/*.match_* exactly; the property-based tests hold them to search/match.py.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable
from typing import Any

from ...search import (
    Chain,
    DateEntry,
    Clause,
    CompositePredicate,
    DatePredicate,
    Has,
    Missing,
    NearPredicate,
    Not,
    NumberPredicate,
    OfTypePredicate,
    Predicate,
    QuantityPredicate,
    ReferenceIdentifierPredicate,
    ReferencePredicate,
    Registry,
    StringPredicate,
    TokenEntry,
    TokenPredicate,
    TokenTextPredicate,
    UriPredicate,
)
from ..prefix import successor
from . import audit_index
from .index import ParamIds, component_code

Sql = tuple[str, list[Any]]
FALSE: Sql = ("0", [])
TRUE: Sql = ("1", [])
_KM_PER_DEGREE_LATITUDE = 111.19
# Index rows counted at most when choosing which clause drives a search, and a count small
# enough to stop looking for a better one.
ESTIMATE_CAP = 1000
FEW_ROWS = 50
# Cheapest to count first: equality seeks before prefix ranges before value ranges.
_RANK = {TokenPredicate: 0, ReferencePredicate: 0, ReferenceIdentifierPredicate: 0,
         OfTypePredicate: 0, UriPredicate: 1, StringPredicate: 1, TokenTextPredicate: 1,
         Chain: 2, Has: 2, DatePredicate: 3, NumberPredicate: 3, QuantityPredicate: 3}


_RANGES = 3


def _rank(clause: Clause) -> int:
    return max((_RANK.get(type(p), 4) for p in clause.any_of), default=0)  # empty: matches nothing

TABLE_OF_TYPE = {
    "string": "idx_string",
    "token": "idx_token",
    "reference": "idx_reference",
    "date": "idx_date",
    "number": "idx_number",
    "quantity": "idx_quantity",
    "uri": "idx_uri",
    "special": "idx_position",
}
_TABLE_OF_PREDICATE: dict[type, str] = {
    StringPredicate: "idx_string",
    TokenPredicate: "idx_token",
    TokenTextPredicate: "idx_token",
    OfTypePredicate: "idx_token",
    ReferencePredicate: "idx_reference",
    ReferenceIdentifierPredicate: "idx_reference",
    DatePredicate: "idx_date",
    NumberPredicate: "idx_number",
    QuantityPredicate: "idx_quantity",
    UriPredicate: "idx_uri",
    NearPredicate: "idx_position",
}

# The entry type a predicate tests, for the parameters AuditEvents keep as columns.
_ENTRY_OF_PREDICATE: dict[type, type] = {
    TokenPredicate: TokenEntry, TokenTextPredicate: TokenEntry, OfTypePredicate: TokenEntry,
    DatePredicate: DateEntry,
}


def _compact(p: Predicate, rtype: str) -> bool:
    """Whether `p`'s values may be columns of `idx_audit` (audit_index.py)."""
    kind = _ENTRY_OF_PREDICATE.get(type(p))
    return kind is not None and audit_index.compact(rtype, p.param, kind)  # type: ignore[union-attr]


def _range(prefix: str, x: str, value: float, low: float, high: float) -> Sql:
    """search/params/number.match_range over columns `x.low`, `x.high`."""
    tl, th = f"{x}.low", f"{x}.high"
    eq = (f"({tl} >= ? AND {th} < ?)", [low, high])
    cases: dict[str, Sql] = {
        "eq": eq,
        "ne": (f"NOT {eq[0]}", eq[1]),
        "gt": (f"{th} > ?", [value]),
        "lt": (f"{tl} < ?", [value]),
        "ge": (f"{th} >= ?", [value]),
        "le": (f"{tl} <= ?", [value]),
        "sa": (f"{tl} >= ?", [high]),
        "eb": (f"{th} < ?", [low]),
        "ap": (f"({tl} < ? AND {th} >= ?)", [high, low]),
    }
    return cases[prefix]


def _date(prefix: str, tl: str, th: str, low: int, high: int) -> Sql:
    """search/params/date.match_date over columns `tl`, `th`."""
    eq = (f"({tl} >= ? AND {th} <= ?)", [low, high])
    cases: dict[str, Sql] = {
        "eq": eq,
        "ne": (f"NOT {eq[0]}", eq[1]),
        "gt": (f"{th} > ?", [high]),
        "lt": (f"{tl} < ?", [low]),
        # With tl <= th, "gt or eq" is th > sh or tl >= sl (and "lt or eq" its mirror): one
        # column per side of the OR, so each side can seek its own index.
        "ge": (f"({th} > ? OR {tl} >= ?)", [high, low]),
        "le": (f"({tl} < ? OR {th} <= ?)", [low, high]),
        "sa": (f"{tl} > ?", [high]),
        "eb": (f"{th} < ?", [low]),
        "ap": (f"({tl} <= ? AND {th} >= ?)", [high, low]),
    }
    return cases[prefix]


def starts_with(column: str, prefix: str) -> Sql:
    """`column` starts with `prefix`, as a range an index on `column` can seek:
    exactly the strings in `[prefix, successor(prefix))`."""
    upper = successor(prefix)
    if upper is None:
        return (f"{column} >= ?", [prefix])
    return (f"{column} >= ? AND {column} < ?", [prefix, upper])


def _system(column: str, system: str | None) -> Sql:
    """Token system convention: None = any, "" = no system."""
    if system is None:
        return TRUE
    if system == "":
        return (f"{column} IS NULL", [])
    return (f"{column} = ?", [system])


def all_of(*parts: Sql) -> Sql:
    """The AND of SQL conditions, folding constants."""
    kept = [p for p in parts if p != TRUE]
    if not kept:
        return TRUE
    if FALSE in kept:
        return FALSE
    return (" AND ".join(f"({sql})" for sql, _ in kept), [a for _, args in kept for a in args])


def _one_list(parts: list[Sql]) -> Sql:
    """The OR of a driving clause's `alias.pk IN (subquery)` parts as one list (`IN (s1 UNION
    ALL s2 …)`): SQLite does not start from an OR of lists, and scanned every row of the type
    for `Consent?patient=a,b` where one value alone is a few seeks."""
    kept = [p for p in parts if p != FALSE]
    if len(kept) < 2 or TRUE in kept:
        return any_of(parts)
    head = kept[0][0][:kept[0][0].find(" IN (") + 5]
    # The values of a parameter share one text (their arguments differ): checked once each.
    if not head.endswith(".pk IN (") or not all(_is_list(sql, head) for sql in {sql for sql, _ in kept}):
        return any_of(parts)
    union = " UNION ALL ".join(sql[len(head):-1] for sql, _ in kept)
    return (f"{head}{union})", [arg for _, args in kept for arg in args])


def _is_list(sql: str, head: str) -> bool:
    """Whether `sql` is exactly `head … )`, one list whose parenthesis closes at its end."""
    if not (sql.startswith(head) and sql.endswith(")")):
        return False
    depth = 0
    for n, char in enumerate(sql[len(head) - 1:], start=len(head) - 1):
        depth += (char == "(") - (char == ")")
        if depth == 0:
            return n == len(sql) - 1
    return False


def any_of(parts: list[Sql]) -> Sql:
    """The OR of SQL conditions, folding constants."""
    if TRUE in parts:
        return TRUE
    kept = [p for p in parts if p != FALSE]
    if not kept:
        return FALSE
    return (" OR ".join(f"({sql})" for sql, _ in kept), [a for _, args in kept for a in args])


def condition(p: Predicate, x: str) -> Sql:
    """The test of one index row `x` against a simple predicate (one match_* function)."""
    match p:
        case StringPredicate(mode="exact"):
            # An entry equal to the text has its normalized value too: that column is indexed.
            return (f"{x}.value = ? AND {x}.exact = ?", [p.value, p.exact])
        case StringPredicate(mode="contains"):
            return (f"instr({x}.value, ?) > 0", [p.value])
        case StringPredicate():
            return starts_with(f"{x}.value", p.value)
        case TokenPredicate():
            if p.code is None and p.system is None:
                return FALSE
            code = (f"{x}.code = ?", [p.code]) if p.code is not None else TRUE
            return all_of(code, _system(f"{x}.system", p.system))
        case TokenTextPredicate():
            return starts_with(f"{x}.text", p.text)
        case OfTypePredicate():
            return (f"{x}.type_system = ? AND {x}.type_code = ? AND {x}.code = ?",
                    [p.type_system, p.type_code, p.value])
        case ReferencePredicate():
            version = (f"{x}.version = ?", [p.version]) if p.version is not None else TRUE
            if p.url is not None:
                return all_of(version, (f"{x}.url = ?", [p.url]))
            kind = (f"{x}.type = ?", [p.type]) if p.type is not None else TRUE
            return all_of(version, (f"{x}.url IS NULL AND {x}.id IS ?", [p.id]), kind)
        case ReferenceIdentifierPredicate():
            return all_of((f"{x}.identifier_value IS ?", [p.value]),
                        _system(f"{x}.identifier_system", p.system))
        case DatePredicate():
            return _date(p.prefix, f"{x}.low", f"{x}.high", p.low, p.high)
        case NumberPredicate():
            return _range(p.prefix, x, p.value, p.low, p.high)
        case QuantityPredicate():
            if p.code is not None and p.system is not None:
                unit = (f"{x}.system = ? AND {x}.code = ?", [p.system, p.code])
            elif p.code is not None:
                unit = (f"({x}.code = ? OR {x}.unit = ?)", [p.code, p.code])
            else:
                unit = _system(f"{x}.system", p.system)
            return all_of(unit, _range(p.prefix, x, p.value, p.low, p.high))
        case UriPredicate(mode="below"):
            return starts_with(f"{x}.value", p.value)
        case UriPredicate(mode="above"):
            return (f"substr(?, 1, length({x}.value)) = {x}.value", [p.value])
        case UriPredicate():
            return (f"{x}.value = ?", [p.value])
        case NearPredicate():
            spread = p.distance_km / _KM_PER_DEGREE_LATITUDE + 1e-6
            return (
                f"{x}.latitude BETWEEN ? AND ? "
                f"AND fhir_distance_km(?, ?, {x}.latitude, {x}.longitude) <= ?",
                [p.latitude - spread, p.latitude + spread, p.latitude, p.longitude, p.distance_km],
            )
    raise TypeError(f"not a simple predicate: {type(p).__name__}")


class PredicateCompiler:
    """Compiles predicates for resources of one type, given as a `resource` row alias."""

    def __init__(self, conn: sqlite3.Connection, ids: ParamIds, registry: Registry) -> None:
        self.conn = conn
        self.ids = ids
        self.registry = registry
        self._aliases = itertools.count()

    def alias(self, stem: str) -> str:
        """A fresh table alias (nested chains and _has need distinct names)."""
        return f"{stem}{next(self._aliases)}"

    def pid(self, rtype: str, code: str) -> int | None:
        return self.ids.get(self.conn, rtype, code)

    def clauses(
        self, clauses: tuple[Clause, ...], rtype: str, a: str, *, pk_order: bool = True
    ) -> Sql:
        """The AND of the clauses, each an OR of its predicates.

        SQLite materialises every uncorrelated `IN (subquery)` list in full, so only one
        clause may be written that way: the one that matches fewest rows (a capped count
        decides), which then drives the search. The others become per-row `EXISTS` checks
        through the `(pk, pid)` indexes. When even the most selective clause matches many rows
        and results come in `pk` order, no clause drives: resources are walked in page order
        and checked, so the first page is found without collecting every match.
        """
        if not clauses:
            return TRUE
        driver = self._driver(clauses, rtype, pk_order)
        return all_of(*(
            (_one_list if n == driver else any_of)([self.predicate(p, rtype, a, drive=n == driver) for p in c.any_of])
            for n, c in enumerate(clauses)
        ))

    def _driver(self, clauses: tuple[Clause, ...], rtype: str, pk_order: bool) -> int | None:
        """The clause to drive the search (None: walk resources in pk order).

        Clauses are counted cheapest-to-count first, and counting stops at one that matches
        only a few rows: counting a date range can cost more than the search it would plan.
        """
        if len(clauses) == 1 and not pk_order:
            return 0
        best, best_count = 0, ESTIMATE_CAP
        for n in sorted(range(len(clauses)), key=lambda n: _rank(clauses[n])):
            if _rank(clauses[n]) >= _RANGES and best_count < ESTIMATE_CAP:
                break  # a value range is seldom narrower than a selective seek, and dear to count
            count = self.estimate(clauses[n], rtype)
            if count < best_count:
                best, best_count = n, count
            if best_count <= FEW_ROWS:
                break
        return None if pk_order and best_count >= ESTIMATE_CAP else best

    def estimate(self, clause: Clause, rtype: str) -> int:
        """How many index rows the clause matches, counted up to ESTIMATE_CAP."""
        total = 0
        for p in clause.any_of:
            total += self._estimate(p, rtype)
            if total >= ESTIMATE_CAP:
                return ESTIMATE_CAP
        return total

    def _estimate(self, p: Predicate, rtype: str) -> int:
        if isinstance(p, TokenPredicate) and p.param == "_id":
            return 1
        if isinstance(p, Chain):
            return min(ESTIMATE_CAP, sum(self._estimate(p.inner, t) for t in p.target_types))
        if isinstance(p, Has):
            return self._estimate(p.inner, p.target_type)
        table = _TABLE_OF_PREDICATE.get(type(p))
        if table is None or self._resource_column(p, "a") is not None:
            return ESTIMATE_CAP
        sql, args = condition(p, "x")
        sources = []
        if _compact(p, rtype):
            sources.append((f"{audit_index.view(p.param)} x WHERE {sql}", args))  # type: ignore[union-attr]
        pid = self.pid(rtype, p.param)  # type: ignore[union-attr]
        if pid is not None:
            sources.append((f"{table} x WHERE x.pid = ? AND {sql}", [pid, *args]))
        total = 0
        for source, source_args in sources:
            row = self.conn.execute(f"SELECT count(*) FROM (SELECT 1 FROM {source} LIMIT ?)",
                                    [*source_args, ESTIMATE_CAP]).fetchone()
            total += int(row[0])
        return min(total, ESTIMATE_CAP)

    def predicate(self, p: Predicate, rtype: str, a: str, *, drive: bool = True) -> Sql:
        """`p` as a boolean expression over resource alias `a` of type `rtype`.

        `drive`: written as `a.pk IN (…)`, a list SQLite can start from; otherwise as a check
        of the row `a` (`EXISTS`), which costs one index seek per row.
        """
        if p.__class__ in _TABLE_OF_PREDICATE:
            return self._simple(p, rtype, a, drive)
        handler: Callable[[Any, str, str, bool], Sql] = getattr(self, f"_{type(p).__name__.lower()}")
        return handler(p, rtype, a, drive)

    def _simple(self, p: Predicate, rtype: str, a: str, drive: bool) -> Sql:
        column = self._resource_column(p, a)
        if column is not None and drive and column[0] == f"{a}.id = ?":
            # A list SQLite starts from, on the (type, id) key: an OR of `a.id = ?` walked
            # every resource of the type.
            r = self.alias("r")
            return (f"{a}.pk IN (SELECT {r}.pk FROM resource {r} WHERE {r}.type = ? AND {r}.id = ?)",
                    [rtype, *column[1]])
        if column is not None:
            return column
        pid = self.pid(rtype, p.param)  # type: ignore[union-attr]
        if _compact(p, rtype):
            return self._audit_columns(p, a, drive, pid)
        if pid is None:
            return FALSE
        sql, args = condition(p, "x")
        table = _TABLE_OF_PREDICATE[type(p)]
        if drive:
            return (f"{a}.pk IN (SELECT x.pk FROM {table} x WHERE x.pid = ? AND {sql})", [pid, *args])
        return (f"EXISTS (SELECT 1 FROM {table} x INDEXED BY {table}_pk "
                f"WHERE x.pk = {a}.pk AND x.pid = ? AND {sql})", [pid, *args])

    @staticmethod
    def _audit_columns(p: Predicate, a: str, drive: bool, pid: int | None) -> Sql:
        """A parameter AuditEvents keep as columns: its value is in the event's `idx_audit`
        row, or, when it has several, in generic rows (audit_index.py); the two sets are
        disjoint, so a list of both has no duplicates."""
        sql, args = condition(p, "x")
        view = audit_index.view(p.param)  # type: ignore[union-attr]
        table = _TABLE_OF_PREDICATE[type(p)]
        if drive:
            own = f"SELECT x.pk FROM {view} x WHERE {sql}"
            if pid is None:
                return (f"{a}.pk IN ({own})", args)
            return (f"{a}.pk IN ({own} UNION ALL SELECT x.pk FROM {table} x WHERE x.pid = ? AND {sql})",
                    [*args, pid, *args])
        own = f"EXISTS (SELECT 1 FROM {view} x WHERE x.pk = {a}.pk AND {sql})"
        if pid is None:
            return (own, args)
        return (f"({own} OR EXISTS (SELECT 1 FROM {table} x INDEXED BY {table}_pk "
                f"WHERE x.pk = {a}.pk AND x.pid = ? AND {sql}))", [*args, pid, *args])

    @staticmethod
    def _resource_column(p: Predicate, a: str) -> Sql | None:
        """`_id` and `_lastUpdated` live in the resource row itself."""
        if isinstance(p, TokenPredicate) and p.param == "_id":
            # search/params/token.match_token on the id entry, which has no system.
            if p.system not in (None, "") or (p.code is None and p.system is None):
                return FALSE
            return TRUE if p.code is None else (f"{a}.id = ?", [p.code])
        if isinstance(p, DatePredicate) and p.param == "_lastUpdated":
            return _date(p.prefix, f"{a}.lu", f"{a}.lu", p.low, p.high)
        return None

    def _table_of_param(self, rtype: str, code: str) -> tuple[str, str] | None:
        """(table, stored code) where `code`'s entries live; composites by their first part."""
        param = self.registry.get(rtype, code)
        if param is None:
            return None
        if param.type == "composite":
            if not param.components:
                return None
            return TABLE_OF_TYPE[param.components[0].type], component_code(code, 0)
        return TABLE_OF_TYPE[param.type], code

    def _missing(self, p: Missing, rtype: str, a: str, drive: bool) -> Sql:
        if p.param in ("_id", "_lastUpdated"):
            return FALSE if p.missing else TRUE
        found = self._table_of_param(rtype, p.param)
        pid = self.pid(rtype, found[1]) if found else None
        # Always per-row checks: as a list it would hold every resource having the element.
        checks = []
        if found is not None and audit_index.compact_table(rtype, found[1], found[0]):
            checks.append((f"EXISTS (SELECT 1 FROM {audit_index.view(found[1])} x WHERE x.pk = {a}.pk)", []))
        if found is not None and pid is not None:
            checks.append((f"EXISTS (SELECT 1 FROM {found[0]} x INDEXED BY {found[0]}_pk "
                           f"WHERE x.pk = {a}.pk AND x.pid = ?)", [pid]))
        if not checks:
            return TRUE if p.missing else FALSE
        exists = any_of(checks)
        return (f"NOT ({exists[0]})" if p.missing else f"({exists[0]})", exists[1])

    def _not(self, p: Not, rtype: str, a: str, drive: bool) -> Sql:
        matched = any_of([self.predicate(inner, rtype, a, drive=False) for inner in p.any_of])
        if matched == FALSE:
            return TRUE
        return (f"NOT ({matched[0]})", matched[1])

    def _compositepredicate(self, p: CompositePredicate, rtype: str, a: str, drive: bool) -> Sql:
        joins, conditions = [], []
        for index, part in enumerate(p.parts):
            pid = self.pid(rtype, component_code(p.param, index))
            if pid is None or part.__class__ not in _TABLE_OF_PREDICATE:
                return FALSE
            x = f"c{index}"
            sql, args = condition(part, x)
            table = _TABLE_OF_PREDICATE[type(part)]
            if index == 0:
                joins.append(f"{table} {x}" if drive else f"{table} {x} INDEXED BY {table}_pk")
            else:
                joins.append(f"JOIN {table} {x} ON {x}.pk = c0.pk AND {x}.grp = c0.grp")
            conditions.append((f"{x}.pid = ? AND {sql}", [pid, *args]))
        where = all_of(*conditions)
        if drive:
            return (f"{a}.pk IN (SELECT c0.pk FROM {' '.join(joins)} WHERE {where[0]})", where[1])
        return (f"EXISTS (SELECT 1 FROM {' '.join(joins)} WHERE c0.pk = {a}.pk AND {where[0]})",
                where[1])

    def _chain(self, p: Chain, rtype: str, a: str, drive: bool) -> Sql:
        pid = self.pid(rtype, p.param)
        if pid is None:
            return FALSE
        options = []
        for target in p.target_types:
            t = self.alias("t")
            inner = self.predicate(p.inner, target, t)
            if inner == FALSE:
                continue
            options.append((
                f"SELECT {t}.id FROM resource {t} WHERE {t}.type = ? AND {t}.deleted = 0 "
                f"AND {inner[0]}",
                [target, *inner[1]],
                target,
            ))
        if drive:
            shape = (f"{a}.pk IN (SELECT r.pk FROM idx_reference r WHERE r.pid = ? AND r.url IS NULL "
                     "AND r.type = ? AND r.id IN ({}))")
        else:
            shape = (f"EXISTS (SELECT 1 FROM idx_reference r INDEXED BY idx_reference_pk "
                     f"WHERE r.pk = {a}.pk AND r.pid = ? AND r.url IS NULL AND r.type = ? "
                     "AND r.id IN ({}))")
        return any_of([(shape.format(sql), [pid, target, *args]) for sql, args, target in options])

    def _has(self, p: Has, rtype: str, a: str, drive: bool) -> Sql:
        pid = self.pid(p.target_type, p.ref_param)
        if pid is None:
            return FALSE
        s = self.alias("s")
        inner = self.predicate(p.inner, p.target_type, s, drive=drive)
        if inner == FALSE:
            return FALSE
        if not drive:
            # Per row of `a`: the resources referencing it through this parameter, by
            # (id, type, pid), each checked against the inner predicate.
            return (
                f"EXISTS (SELECT 1 FROM idx_reference r INDEXED BY idx_reference_target_any "
                f"CROSS JOIN resource {s} ON {s}.pk = r.pk "
                f"WHERE r.id = {a}.id AND r.type = ? AND r.pid = ? AND r.url IS NULL "
                f"AND {s}.deleted = 0 AND {inner[0]})",
                [rtype, pid, *inner[1]],
            )
        # CROSS JOIN fixes the order SQLite would otherwise guess without statistics: the
        # referencing resources `s` the inner predicate selects, their reference rows by
        # (pk, pid), then the referenced resource by (type, id), whose pk the outer row seeks.
        target = self.alias("h")
        return (
            f"{a}.pk IN (SELECT {target}.pk FROM resource {s} "
            f"CROSS JOIN idx_reference r ON r.pk = {s}.pk AND r.pid = ? "
            f"CROSS JOIN resource {target} ON {target}.type = r.type AND {target}.id = r.id "
            f"WHERE {s}.type = ? AND {s}.deleted = 0 AND r.type = ? AND r.url IS NULL "
            f"AND {inner[0]})",
            [pid, p.target_type, rtype, *inner[1]],
        )
