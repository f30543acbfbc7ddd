"""The backend-neutral search Query AST (FHIR R4 search.html), with values parsed once.

A `Query` is an AND of `Clause`s; a `Clause` is an OR of `Predicate`s (search.html#combining:
repeated parameters AND, comma-separated values OR). Each predicate names the parameter `param`
it tests against the resource's index entries (`entries.py`) and carries parsed values, so the
SQL and Mongo translators never re-read strings. `match.py` is the reference semantics; the
comparison rules of each type are spelled out in `params/<type>.py` docstrings.

Conventions: a token/identifier `system` of None means "any system", "" means "no system"
(`|code`); a `code` of None means "any code" (`system|`). Date ranges are closed microsecond
intervals, number/quantity search ranges are half-open `[low, high)` (see params/number.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..frozen import fast_init

Prefix = Literal["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]
PREFIXES: tuple[Prefix, ...] = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


@dataclass(frozen=True, slots=True)
class StringPredicate:
    """`mode` start (default: normalized starts-with), exact (`:exact`) or contains (`:contains`)."""

    param: str
    value: str  # normalized (params/string.normalize)
    exact: str  # as given, for `:exact`
    mode: Literal["start", "exact", "contains"] = "start"


@fast_init
@dataclass(frozen=True, slots=True)
class TokenPredicate:
    """`[system]|[code]`: system None = any, "" = none; code None = any."""

    param: str
    system: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class TokenTextPredicate:
    """`:text`: normalized starts-with on the entry's text (display, CodeableConcept.text)."""

    param: str
    text: str  # normalized
    exact: str  # as given


@dataclass(frozen=True, slots=True)
class OfTypePredicate:
    """`:of-type` `[type system]|[type code]|[value]`, all three required."""

    param: str
    type_system: str
    type_code: str
    value: str


@fast_init
@dataclass(frozen=True, slots=True)
class ReferencePredicate:
    """A reference: relative (`type`/`id`, `url` None) or absolute/canonical (`url`).

    `type` None matches any target type; `version` None matches any version.
    """

    param: str
    type: str | None
    id: str | None
    version: str | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class ReferenceIdentifierPredicate:
    """`:identifier` `[system]|[value]`, with the token conventions for `system`."""

    param: str
    system: str | None
    value: str | None


@dataclass(frozen=True, slots=True)
class DatePredicate:
    """`[prefix][date]`: `low`/`high` is the value's precision range (widened for `ap`)."""

    param: str
    prefix: Prefix
    low: int
    high: int
    text: str


@dataclass(frozen=True, slots=True)
class NumberPredicate:
    """`[prefix][number]`: exact `value`, `[low, high)` its implicit precision (widened for ap)."""

    param: str
    prefix: Prefix
    value: float
    low: float
    high: float
    text: str


@dataclass(frozen=True, slots=True)
class QuantityPredicate:
    """`[prefix][number]|[system]|[code]`; system None + code: code or unit equals it."""

    param: str
    prefix: Prefix
    value: float
    low: float
    high: float
    system: str | None
    code: str | None
    text: str


@dataclass(frozen=True, slots=True)
class UriPredicate:
    """`mode` eq, below (entry starts with value) or above (value starts with entry)."""

    param: str
    value: str
    mode: Literal["eq", "above", "below"] = "eq"


@dataclass(frozen=True, slots=True)
class NearPredicate:
    """Location `near=[lat]|[long]|[distance]|[units]`, distance converted to km."""

    param: str
    latitude: float
    longitude: float
    distance_km: float
    text: str


@dataclass(frozen=True, slots=True)
class CompositePredicate:
    """`parts[i]` tests component i; one composite entry must satisfy all parts."""

    param: str
    parts: tuple[Predicate, ...]


@dataclass(frozen=True, slots=True)
class Missing:
    """`:missing=true` (no entry for `param`) or `:missing=false` (at least one)."""

    param: str
    missing: bool


@dataclass(frozen=True, slots=True)
class Not:
    """`:not`: the resource has no entry matching any of `any_of` (also true with no value)."""

    param: str
    any_of: tuple[Predicate, ...]


@dataclass(frozen=True, slots=True)
class Chain:
    """`param[:Type].inner`: some resource of `target_types` referenced by `param` matches."""

    param: str
    target_types: tuple[str, ...]
    inner: Predicate


@dataclass(frozen=True, slots=True)
class Has:
    """`_has:target_type:ref_param:inner`: some `target_type` resource referencing this one
    through `ref_param` matches `inner` (search.html#has)."""

    target_type: str
    ref_param: str
    inner: Predicate


Predicate = (
    StringPredicate
    | TokenPredicate
    | TokenTextPredicate
    | OfTypePredicate
    | ReferencePredicate
    | ReferenceIdentifierPredicate
    | DatePredicate
    | NumberPredicate
    | QuantityPredicate
    | UriPredicate
    | NearPredicate
    | CompositePredicate
    | Missing
    | Not
    | Chain
    | Has
)


@fast_init
@dataclass(frozen=True, slots=True)
class Clause:
    """An OR of predicates (one query parameter with comma-separated values)."""

    any_of: tuple[Predicate, ...]


@dataclass(frozen=True, slots=True)
class Sort:
    param: str
    descending: bool = False


@dataclass(frozen=True, slots=True)
class Include:
    """`_include` / `_revinclude` `source_type:param[:target_type]` (search.html#include).

    `source_type` None is `*` (any type), `param` None is `*` (every reference parameter).
    """

    source_type: str | None
    param: str | None
    target_type: str | None = None
    iterate: bool = False


Total = Literal["none", "estimate", "accurate"]
Summary = Literal["true", "text", "data", "count", "false"]


@fast_init
@dataclass(frozen=True, slots=True)
class Query:
    """A parsed search. `resource_type` None is a system-level search (restricted by `types`)."""

    resource_type: str | None
    clauses: tuple[Clause, ...] = ()
    sort: tuple[Sort, ...] = ()
    count: int | None = None
    include: tuple[Include, ...] = ()
    revinclude: tuple[Include, ...] = ()
    total: Total | None = None
    summary: Summary | None = None
    elements: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    # The caller's access check on included resources (stored versions in, those it may see
    # out), applied at each include round: an `:iterate` include must not walk on through a
    # resource the caller could not see (store/includes.py).
    admit_included: Callable[[Sequence[Any]], list[Any]] | None = field(default=None, compare=False)

    def restrict(self, *clauses: Clause) -> Query:
        """This query with more clauses ANDed (how access adds compartment/consent filters)."""
        return dataclasses.replace(self, clauses=self.clauses + clauses)
