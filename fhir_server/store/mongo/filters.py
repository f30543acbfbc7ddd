"""Query AST predicates -> MongoDB query filters (FHIR R4 search.html).

A simple predicate becomes `$elemMatch` on the entry array of its kind (layout.py), which
the multikey `(type, <array>.p, <array>.<value>)` indexes serve. The conditions mirror
search/params/*.match_* exactly, as the SQLite translation does; the contract and property
tests hold both to search/match.py.

Chains and `_has` are resolved first: the inner search runs on its own (through a `Resolver`)
and the outer filter tests references against the ids it found, which keeps every filter a
plain query a sharded cluster can route. The translation is otherwise pure, so tests compare
generated filters exactly.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from ...model.errors import Kind, fail
from ...search import (
    Chain,
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
    TokenPredicate,
    TokenTextPredicate,
    UriPredicate,
)
from ...search.params.special import EARTH_RADIUS_KM
from .layout import ARRAY_OF_PARAM_TYPE, COMPOSITE, POSITION, SHARED_SHARD, key
from ..prefix import successor

Filter = dict[str, Any]
TRUE: Filter = {}
FALSE: Filter = {"_id": {"$in": []}}
# Ids a chain or _has may resolve to before the search is refused as too costly: the outer
# filter carries them all, and a MongoDB command is at most 16 MB.
MAX_RESOLVED = 100_000

_ARRAY_OF_PREDICATE: dict[type, str] = {
    StringPredicate: "str",
    TokenPredicate: "tok",
    TokenTextPredicate: "tok",
    OfTypePredicate: "tok",
    ReferencePredicate: "ref",
    ReferenceIdentifierPredicate: "ref",
    DatePredicate: "date",
    NumberPredicate: "num",
    QuantityPredicate: "qty",
    UriPredicate: "uri",
    NearPredicate: POSITION,
}


class Resolver(Protocol):
    """Runs the inner searches of chains and `_has`."""

    async def ids(self, resource_type: str, where: Filter) -> list[str]:
        """Ids of current `resource_type` resources matching `where`."""

    async def referenced(self, source_type: str, param: str, target_type: str,
                         where: Filter) -> list[str]:
        """Ids of `target_type` resources that current `source_type` resources matching
        `where` reference through `param`."""


def all_of(*parts: Filter) -> Filter:
    """The AND of filters, folding constants (merged when their keys do not clash)."""
    kept = [p for p in parts if p != TRUE]
    if any(p == FALSE for p in kept):
        return FALSE
    if not kept:
        return TRUE
    merged: Filter = {}
    for part in kept:
        if merged.keys() & part.keys():
            return {"$and": kept}
        merged.update(part)
    return merged


def any_of(parts: list[Filter]) -> Filter:
    """The OR of filters, folding constants."""
    if any(p == TRUE for p in parts):
        return TRUE
    kept = [p for p in parts if p != FALSE]
    if not kept:
        return FALSE
    return kept[0] if len(kept) == 1 else {"$or": kept}


def starts_with(field: str, prefix: str) -> Filter:
    """`field` starts with `prefix`, as a range an index can seek."""
    upper = successor(prefix)
    return {field: {"$gte": prefix} if upper is None else {"$gte": prefix, "$lt": upper}}


def _system(field: str, system: str | None) -> Filter:
    """Token system convention: None = any, "" = no system."""
    if system is None:
        return TRUE
    return {field: None if system == "" else system}


def _range(prefix: str, x: str, value: float, low: float, high: float) -> Filter:
    """search/params/number.match_range over fields `x`lo / `x`hi."""
    lo, hi = f"{x}lo", f"{x}hi"
    eq = {lo: {"$gte": low}, hi: {"$lt": high}}
    cases: dict[str, Filter] = {
        "eq": eq,
        "ne": {"$nor": [eq]},
        "gt": {hi: {"$gt": value}},
        "lt": {lo: {"$lt": value}},
        "ge": {hi: {"$gte": value}},
        "le": {lo: {"$lte": value}},
        "sa": {lo: {"$gte": high}},
        "eb": {hi: {"$lt": low}},
        "ap": {lo: {"$lt": high}, hi: {"$gte": low}},
    }
    return cases[prefix]


def date_filter(prefix: str, lo: str, hi: str, low: int, high: int) -> Filter:
    """search/params/date.match_date over fields `lo`, `hi` (the same field for an instant)."""
    def both(a: Filter, b: Filter) -> Filter:
        return all_of(a, b)

    eq = both({lo: {"$gte": low}}, {hi: {"$lte": high}})
    cases: dict[str, Filter] = {
        "eq": eq,
        "ne": {"$nor": [eq]},
        "gt": {hi: {"$gt": high}},
        "lt": {lo: {"$lt": low}},
        "ge": {"$or": [{hi: {"$gt": high}}, {lo: {"$gte": low}}]},
        "le": {"$or": [{lo: {"$lt": low}}, {hi: {"$lte": high}}]},
        "sa": {lo: {"$gt": high}},
        "eb": {hi: {"$lt": low}},
        "ap": both({lo: {"$lte": high}}, {hi: {"$gte": low}}),
    }
    return cases[prefix]


def condition(p: Predicate, x: str = "") -> Filter:
    """The test of one entry subdocument against a simple predicate; `x` prefixes field names
    (a composite's component `k0.`)."""
    match p:
        case StringPredicate(mode="exact"):
            # An entry equal to the text has its normalized value too (indexed with `p`).
            return {f"{x}v": p.value, f"{x}x": p.exact}
        case StringPredicate(mode="contains"):
            return {f"{x}v": {"$regex": re.escape(p.value)}}
        case StringPredicate():
            return starts_with(f"{x}v", p.value)
        case TokenPredicate():
            if p.code is None and p.system is None:
                return FALSE
            code = {f"{x}c": p.code} if p.code is not None else TRUE
            return all_of(code, _system(f"{x}s", p.system))
        case TokenTextPredicate():
            return starts_with(f"{x}tx", p.text)
        case OfTypePredicate():
            return {f"{x}ts": p.type_system, f"{x}tc": p.type_code, f"{x}c": p.value}
        case ReferencePredicate():
            version = {f"{x}v": p.version} if p.version is not None else TRUE
            if p.url is not None:
                return all_of(version, {f"{x}u": p.url})
            kind = {f"{x}t": p.type} if p.type is not None else TRUE
            return all_of(version, {f"{x}u": None, f"{x}i": p.id}, kind)
        case ReferenceIdentifierPredicate():
            return all_of({f"{x}iv": p.value}, _system(f"{x}is", p.system))
        case DatePredicate():
            return date_filter(p.prefix, f"{x}lo", f"{x}hi", p.low, p.high)
        case NumberPredicate():
            return _range(p.prefix, x, p.value, p.low, p.high)
        case QuantityPredicate():
            if p.code is not None and p.system is not None:
                unit: Filter = {f"{x}s": p.system, f"{x}c": p.code}
            elif p.code is not None:
                unit = {"$or": [{f"{x}c": p.code}, {f"{x}un": p.code}]}
            else:
                unit = _system(f"{x}s", p.system)
            return all_of(unit, _range(p.prefix, x, p.value, p.low, p.high))
        case UriPredicate(mode="below"):
            return starts_with(f"{x}v", p.value)
        case UriPredicate(mode="above"):
            # The entry is a prefix of the value: one of its len+1 prefixes, an index lookup.
            return {f"{x}v": {"$in": [p.value[:n] for n in range(len(p.value) + 1)]}}
        case UriPredicate():
            return {f"{x}v": p.value}
        case NearPredicate():
            # A real radius on the sphere search/params/special.distance_km measures on.
            radians = p.distance_km / EARTH_RADIUS_KM
            return {f"{x}pt": {"$geoWithin": {
                "$centerSphere": [[p.longitude, p.latitude], radians]}}}
    raise TypeError(f"not a simple predicate: {type(p).__name__}")


def shard_filter(rtype: str, clauses: tuple[Clause, ...]) -> Filter:
    """The shards that can hold `rtype` matches of `clauses`, when the query confines them to
    given patients; TRUE otherwise. It changes no result (layout.shard_key) but lets a
    sharded cluster send a patient's searches to that patient's shard only.

    A clause of plain references to `Patient/<id>` (`subject=Patient/1`, a compartment search)
    confines matches to those patients' shards and the shared one; `Patient?_id=` to its own.
    """
    for clause in clauses:
        ids = set()
        for p in clause.any_of:
            if rtype == "Patient" and isinstance(p, TokenPredicate) and p.param == "_id" \
                    and p.code is not None and p.system in (None, ""):
                ids.add(p.code)
            elif (rtype != "Patient" and isinstance(p, ReferencePredicate)
                  and p.type == "Patient" and p.id is not None and p.url is None):
                ids.add(p.id)
            else:
                break
        else:
            shards = sorted(key("Patient", id) for id in ids)
            if rtype != "Patient":
                shards.append(SHARED_SHARD)
            return {"shard": shards[0] if len(shards) == 1 else {"$in": shards}}
    return TRUE


class FilterBuilder:
    """Builds the filter of predicates over resource documents of one type."""

    def __init__(self, registry: Registry, resolver: Resolver) -> None:
        self.registry = registry
        self.resolver = resolver

    async def clauses(self, clauses: tuple[Clause, ...], rtype: str) -> Filter:
        """The AND of the clauses, each an OR of its predicates."""
        parts = []
        for clause in clauses:
            part = any_of([await self.predicate(p, rtype) for p in clause.any_of])
            if part == FALSE:
                return FALSE
            parts.append(part)
        return all_of(*parts)

    async def predicate(self, p: Predicate, rtype: str) -> Filter:
        """`p` as a filter over `rtype` resource documents."""
        match p:
            case TokenPredicate(param="_id"):
                # search/params/token.match_token on the id entry, which has no system.
                if p.system not in (None, "") or (p.code is None and p.system is None):
                    return FALSE
                return TRUE if p.code is None else {"_id": key(rtype, p.code)}
            case DatePredicate(param="_lastUpdated"):
                return date_filter(p.prefix, "lu", "lu", p.low, p.high)
            case Missing():
                return self._missing(p, rtype)
            case Not():
                matched = any_of([await self.predicate(inner, rtype) for inner in p.any_of])
                if matched == FALSE:
                    return TRUE
                return FALSE if matched == TRUE else {"$nor": [matched]}
            case CompositePredicate():
                return self._composite(p)
            case Chain():
                return await self._chain(p)
            case Has():
                return await self._has(p, rtype)
        array = _ARRAY_OF_PREDICATE[type(p)]
        test = condition(p)
        if test == FALSE:
            return FALSE
        return {array: {"$elemMatch": all_of({"p": p.param}, test)}}

    def _missing(self, p: Missing, rtype: str) -> Filter:
        if p.param in ("_id", "_lastUpdated"):
            return FALSE if p.missing else TRUE
        param = self.registry.get(rtype, p.param)
        if param is None:
            return TRUE if p.missing else FALSE
        field = f"{ARRAY_OF_PARAM_TYPE[param.type]}.p"
        return {field: {"$ne": p.param}} if p.missing else {field: p.param}

    @staticmethod
    def _composite(p: CompositePredicate) -> Filter:
        parts = []
        for n, part in enumerate(p.parts):
            if part.__class__ not in _ARRAY_OF_PREDICATE:
                return FALSE
            parts.append(condition(part, f"k{n}."))
        test = all_of({"p": p.param}, *parts)
        return FALSE if test == FALSE else {COMPOSITE: {"$elemMatch": test}}

    async def _chain(self, p: Chain) -> Filter:
        options = []
        for target in p.target_types:
            inner = await self.predicate(p.inner, target)
            if inner == FALSE:
                continue
            ids = _bounded(await self.resolver.ids(target, inner))
            if ids:
                options.append({"ref": {"$elemMatch": {
                    "p": p.param, "u": None, "t": target, "i": {"$in": ids}}}})
        return any_of(options)

    async def _has(self, p: Has, rtype: str) -> Filter:
        inner = await self.predicate(p.inner, p.target_type)
        if inner == FALSE:
            return FALSE
        ids = _bounded(await self.resolver.referenced(p.target_type, p.ref_param, rtype, inner))
        return {"_id": {"$in": [key(rtype, id) for id in ids]}} if ids else FALSE


def _bounded(ids: list[str]) -> list[str]:
    if len(ids) > MAX_RESOLVED:
        raise fail(Kind.UNPROCESSABLE, "too-costly",
                   f"A chained or _has parameter matches more than {MAX_RESOLVED} resources; "
                   "narrow it.")
    return sorted(ids)
