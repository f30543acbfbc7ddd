"""SMART on FHIR scopes: what an access token lets a client do.

The model follows SMART App Launch 2.x, page "Scopes and Launch Context"
(https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html):

- "Scopes for requesting FHIR resources": `level/Type.perms`, where level is `patient`, `user`
  or `system`, Type a resource type or `*`, and perms a non-empty in-order subset of `cruds`.
  The SMART 1.0 suffixes `.read`, `.write` and `.*` are read as `rs`, `cud` and `cruds`.
- "Finer-grained resource constraints using search parameters": a v2 scope may end in
  `?name=value&...`; it then only covers what that search selects (parameters ANDed).
- "Scope equivalence": `Observation.rs` means the same as `Observation.r Observation.s`, so
  coverage is decided letter by letter across all granted scopes.
- "Scopes for requesting context data", "... identity data", "... a refresh token":
  `launch`, `launch/patient`, `launch/encounter`, `openid`, `fhirUser`, `profile`,
  `offline_access`, `online_access`, kept as a set of names.

Scopes only delegate: the caller still confines `patient/` scopes to the patient compartment,
`user/` scopes to what the user may see and `system/` scopes to the client's policy. Levels
are never mixed here: a `patient/` scope grants nothing at `user/` level. Parsing never raises;
a scope this module does not model lands in `Grant.ignored` for the token endpoint to drop.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from itertools import product
from dataclasses import dataclass
from typing import Final, Literal, TypeVar, get_args
from urllib.parse import unquote

from ..model.types import is_resource_type

Level = Literal["patient", "user", "system"]
ContextScope = Literal[
    "openid",
    "fhirUser",
    "profile",
    "launch",
    "launch/patient",
    "launch/encounter",
    "offline_access",
    "online_access",
]
Interaction = Literal[
    "read", "vread", "search", "create", "update", "patch", "delete", "history", "operation"
]
# The search parameters of a granular scope as (name, value) pairs, percent-decoded.
Restriction = tuple[tuple[str, str], ...]
C = TypeVar("C")
# Past this many clauses the union of granular scopes is refused rather than searched.
MAX_UNION_CLAUSES: Final = 64

LEVELS: Final[tuple[Level, ...]] = get_args(Level)
# Also the order in which `Grant.text()` lists them.
CONTEXT_SCOPES: Final[tuple[ContextScope, ...]] = get_args(ContextScope)

_LEVEL: Final[dict[str, Level]] = {name: name for name in LEVELS}
_CONTEXT: Final[dict[str, ContextScope]] = {name: name for name in CONTEXT_SCOPES}
_V1: Final[dict[str, str]] = {"read": "rs", "write": "cud", "*": "cruds"}
# Letters must keep the order of "cruds": the spec lets servers refuse `.sr` or `.dus` so that
# no other convention (say `.rd` for read) is ever guessed at.
_V2: Final[re.Pattern[str]] = re.compile(r"c?r?u?d?s?")

_PERMISSION: Final[dict[Interaction, str]] = {
    "read": "r",
    "vread": "r",
    "search": "s",
    "create": "c",
    "update": "u",
    "patch": "u",
    "delete": "d",
    "operation": "r",
}


def required_permission(interaction: Interaction, *, instance: bool = False) -> str:
    """The permission letter (`c`, `r`, `u`, `d` or `s`) that `interaction` needs.

    `instance` only matters for history: the spec's permission table puts the history of one
    resource under `r` (with read and vread) and the history of a type or of the whole system
    under `s` (with search). Every operation needs `r` for now: a placeholder until operations
    are mapped one by one, since what they do varies (`$validate` reads nothing, `$everything`
    searches a compartment, `$process-message` writes).
    """
    if interaction == "history":
        return "r" if instance else "s"
    return _PERMISSION[interaction]


@dataclass(frozen=True)
class ResourceScope:
    """One resource scope, `level/resource_type.permissions[?query]`, as written in `text`."""

    level: Level
    resource_type: str  # "*" for any type
    permissions: frozenset[str]  # of "c", "r", "u", "d", "s"
    query: Restriction  # () unless the scope is granular
    text: str


def parse_scope(text: str) -> ResourceScope | None:
    """The resource scope `text` spells in SMART v1 or v2 syntax, or None if it is not one."""
    head, question, raw_query = text.partition("?")
    level, slash, rest = head.partition("/")
    resource_type, dot, suffix = rest.partition(".")
    if level not in _LEVEL or not slash or not dot:
        return None
    if resource_type != "*" and not is_resource_type(resource_type):
        return None
    if suffix in _V1 and not question:  # granular scopes exist only in v2
        letters = _V1[suffix]
    elif suffix and _V2.fullmatch(suffix):
        letters = suffix
    else:
        return None
    query = _parse_query(raw_query) if question else ()
    if query is None:
        return None
    return ResourceScope(_LEVEL[level], resource_type, frozenset(letters), query, text)


def _parse_query(raw: str) -> Restriction | None:
    """The `name=value&...` pairs of a granular scope, or None if any pair is incomplete."""
    pairs: list[tuple[str, str]] = []
    for part in raw.split("&"):
        name, equals, value = part.partition("=")
        if not (name and equals and value):
            return None
        # Split before decoding so that an encoded `&` or `=` stays inside its value.
        pairs.append((unquote(name), unquote(value)))
    return tuple(pairs)


def parse_scopes(text: str) -> Grant:
    """The grant a space-separated scope string asks for; duplicates are dropped."""
    scopes: list[ResourceScope] = []
    context: set[ContextScope] = set()
    ignored: list[str] = []
    for token in dict.fromkeys(text.split()):
        if token in _CONTEXT:
            context.add(_CONTEXT[token])
        elif (scope := parse_scope(token)) is not None:
            scopes.append(scope)
        else:
            ignored.append(token)
    return Grant(tuple(scopes), frozenset(context), tuple(ignored))


def _applies(scope: ResourceScope, resource_type: str, levels: Collection[str] | None) -> bool:
    # A request on "*" (system-wide search or history) is only matched by wildcard scopes.
    in_level = levels is None or scope.level in levels
    return in_level and scope.resource_type in ("*", resource_type)


@dataclass(frozen=True)
class Grant:
    """The scopes of a token or request: resource scopes, context scopes, and ignored ones."""

    scopes: tuple[ResourceScope, ...] = ()
    context: frozenset[ContextScope] = frozenset()
    ignored: tuple[str, ...] = ()

    def text(self) -> str:
        """The normalised scope string: context scopes in a fixed order, then the resource
        scopes as written (v1 stays v1, as the spec asks of servers); ignored ones left out."""
        names = [name for name in CONTEXT_SCOPES if name in self.context]
        return " ".join(names + [scope.text for scope in self.scopes])

    def has_level(self, level: Level) -> bool:
        """True if some resource scope is at `level`."""
        return any(scope.level == level for scope in self.scopes)

    def allows(
        self,
        interaction: Interaction,
        resource_type: str,
        levels: Collection[str] | None = None,
        *,
        instance: bool = False,
    ) -> list[ResourceScope]:
        """The scopes that permit `interaction` on `resource_type` (empty: denied).

        `levels` limits the scopes considered (None: all); the caller applies each returned
        scope's level. Granular scopes are returned too: see `restrictions` for what they add.
        `instance` tells instance history from type or system history.
        """
        letter = required_permission(interaction, instance=instance)
        return [
            scope
            for scope in self.scopes
            if letter in scope.permissions and _applies(scope, resource_type, levels)
        ]

    def restrictions(
        self,
        interaction: Interaction,
        resource_type: str,
        levels: Collection[str] | None = None,
        *,
        instance: bool = False,
    ) -> list[Restriction] | None:
        """What the caller must add to the request: None if some permitting scope is
        unrestricted, else the queries of the granular ones, to be ORed (each one's parameters
        ANDed). An empty list means no scope permits the interaction."""
        permitting = self.allows(interaction, resource_type, levels, instance=instance)
        if any(not scope.query for scope in permitting):
            return None
        return list(dict.fromkeys(scope.query for scope in permitting))

    def narrow(self, requested: Grant) -> Grant:
        """The part of `requested` this grant covers; the rest is moved to `ignored`.

        For refresh and down-scoping, which may never add access (RFC 6749 section 6). A
        requested scope is covered when each of its letters is held by a granted scope of the
        same level, of its type or `*`, whose query parameters are all in the requested query:
        extra requested parameters only select less, a dropped one would select more.
        """
        kept = tuple(scope for scope in requested.scopes if self._covers(scope))
        refused = [scope.text for scope in requested.scopes if scope not in kept]
        refused += [name for name in CONTEXT_SCOPES if name in requested.context - self.context]
        return Grant(kept, requested.context & self.context, requested.ignored + tuple(refused))

    def _covers(self, wanted: ResourceScope) -> bool:
        held: set[str] = set()
        for scope in self.scopes:
            if (
                _applies(scope, wanted.resource_type, (wanted.level,))
                and set(scope.query) <= set(wanted.query)
            ):
                held |= scope.permissions
        return wanted.permissions <= held


def scopes_union(alternatives: Sequence[Sequence[C]],
                 any_of: Callable[[Sequence[C]], C]) -> tuple[C, ...] | None:
    """The union of granular scopes as an AND of OR-clauses (conjunctive normal form).

    Each alternative is one scope's clauses, ANDed; `any_of` ORs clauses into one. By
    distribution, (a AND b) OR c is (a OR c) AND (b OR c): one clause per way of picking a
    clause in every alternative. None when that makes more than MAX_UNION_CLAUSES clauses.
    """
    count = 1
    for clauses in alternatives:
        count *= len(clauses)
    if count > MAX_UNION_CLAUSES:
        return None
    if len(alternatives) == 1:
        return tuple(alternatives[0])
    return tuple(any_of(chosen) for chosen in product(*alternatives))
