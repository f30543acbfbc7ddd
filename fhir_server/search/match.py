"""The reference evaluator: does a resource, given its index entries, match a Query?
(FHIR R4 search.html; the rules of each type are in `params/<type>.py`.)

Brute force and exact: it is the oracle the property-based tests hold the SQL and Mongo
translators to, so it answers True or False exactly as the spec reads, or raises
`Unsupported` -- never an approximation. Chains and `_has` need a `Resolver` to reach the
entries of other resources.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from .ast import (
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
    Query,
    ReferenceIdentifierPredicate,
    ReferencePredicate,
    StringPredicate,
    TokenPredicate,
    TokenTextPredicate,
    UriPredicate,
)
from .entries import (
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
from .params import date, number, reference, special, string, token, uri


class Unsupported(Exception):
    """The evaluator cannot answer exactly (the reason is in the message)."""


class Resolver(Protocol):
    """Access to other resources' entries, for chains and `_has`."""

    def entries(self, resource_type: str, resource_id: str) -> Sequence[IndexEntry] | None:
        """The current entries of `resource_type/resource_id`, None if it does not exist."""

    def referencing(
        self, source_type: str, param: str, target_type: str, target_id: str
    ) -> Iterable[Sequence[IndexEntry]]:
        """The entries of every `source_type` resource whose `param` references the target."""


# Predicate type -> (entry type it applies to, single-entry test).
_SIMPLE: dict[type, tuple[type, Callable[[Any, Any], bool]]] = {
    StringPredicate: (StringEntry, string.match_string),
    TokenPredicate: (TokenEntry, token.match_token),
    TokenTextPredicate: (TokenEntry, token.match_token_text),
    OfTypePredicate: (TokenEntry, token.match_of_type),
    ReferencePredicate: (ReferenceEntry, reference.match_reference),
    ReferenceIdentifierPredicate: (ReferenceEntry, reference.match_identifier),
    DatePredicate: (DateEntry, date.match_date),
    NumberPredicate: (NumberEntry, number.match_number),
    QuantityPredicate: (QuantityEntry, number.match_quantity),
    UriPredicate: (UriEntry, uri.match_uri),
    NearPredicate: (PositionEntry, special.match_near),
}


def entry_matches(predicate: Predicate, entry: IndexEntry) -> bool:
    """One predicate against one entry of the same parameter (composite parts use this)."""
    found = _SIMPLE.get(type(predicate))
    if found is None:
        raise Unsupported(f"{type(predicate).__name__} cannot be tested against a single entry")
    entry_type, test = found
    return type(entry) is entry_type and test(predicate, entry)


class _Evaluator:
    def __init__(self, entries: Sequence[IndexEntry], resolver: Resolver | None, resource_type: str | None) -> None:
        self.by_param: dict[str, list[IndexEntry]] = {}
        for e in entries:
            self.by_param.setdefault(e.param, []).append(e)
        self.resolver = resolver
        self.resource_type = resource_type

    def clause(self, clause: Clause) -> bool:
        return any(self.predicate(p) for p in clause.any_of)

    def predicate(self, p: Predicate) -> bool:
        if isinstance(p, Missing):
            return (not self.by_param.get(p.param)) == p.missing
        if isinstance(p, Not):
            return not any(self.predicate(inner) for inner in p.any_of)
        if isinstance(p, CompositePredicate):
            return any(self._composite(p, e) for e in self.by_param.get(p.param, ()))
        if isinstance(p, Chain):
            return self._chain(p)
        if isinstance(p, Has):
            return self._has(p)
        return any(entry_matches(p, e) for e in self.by_param.get(p.param, ()))

    @staticmethod
    def _composite(p: CompositePredicate, e: IndexEntry) -> bool:
        components = getattr(e, "components", None)
        if components is None or len(components) != len(p.parts):
            return False
        return all(entry_matches(part, c) for part, c in zip(p.parts, components))

    def _chain(self, p: Chain) -> bool:
        if self.resolver is None:
            raise Unsupported("chained parameters need a resolver")
        for e in self.by_param.get(p.param, ()):
            # Only local references can be followed; absolute ones point to other servers.
            if type(e) is ReferenceEntry and e.url is None and e.type in p.target_types and e.id:
                target = self.resolver.entries(e.type, e.id)
                if target is not None and _Evaluator(target, self.resolver, e.type).predicate(p.inner):
                    return True
        return False

    def _has(self, p: Has) -> bool:
        if self.resolver is None:
            raise Unsupported("_has needs a resolver")
        if self.resource_type is None:
            raise Unsupported("_has needs the type of the resource being tested")
        ids = [e.code for e in self.by_param.get("_id", ()) if type(e) is TokenEntry and e.code]
        if len(ids) != 1:
            raise Unsupported("_has needs the resource's _id entry")
        for source in self.resolver.referencing(p.target_type, p.ref_param, self.resource_type, ids[0]):
            if _Evaluator(source, self.resolver, p.target_type).predicate(p.inner):
                return True
        return False


def matches(
    query: Query | Clause | Predicate,
    entries: Sequence[IndexEntry],
    resolver: Resolver | None = None,
    *,
    resource_type: str | None = None,
) -> bool:
    """Whether the resource with these `entries` satisfies every clause of `query`.

    Raises `Unsupported` when the answer cannot be given exactly (e.g. a chain without a
    resolver). Result parameters (`_sort`, `_count`, `_include`, ...) do not filter and are
    ignored.
    """
    if isinstance(query, Query):
        resource_type = resource_type or query.resource_type
        evaluator = _Evaluator(entries, resolver, resource_type)
        return all(evaluator.clause(c) for c in query.clauses)
    evaluator = _Evaluator(entries, resolver, resource_type)
    if isinstance(query, Clause):
        return evaluator.clause(query)
    return evaluator.predicate(query)
