"""Blind indexes of protected search parameters: their entries and the queries on them.

A protected parameter (default: the names, identifiers, contact points and addresses of
Patient, RelatedPerson and Practitioner) is indexed only as keyed digests (crypto/blind.py),
never as plaintext. The stores index and compare the digests as they would the values, so
both stores keep the same code; this module rewrites entries on their way in and the
Query AST on its way to a store:

- string: one entry per value, the chain of its normalized prefixes (search.html#string:
  case and accents folded) up to `prefix_cap` characters: one fixed-width link per prefix
  (crypto/blind.py `chain`), so the chain of a start-with search value is a prefix of the
  chains of the values that start with it, and the stores' start-with match answers it as on
  plaintext, with one row per value. The entry also holds the `x` digest of the value as
  written (`:exact`, sought with the value's chain). `:contains`, and start-with values
  longer than `prefix_cap`, cannot be answered: 400 naming the parameter.
- token: `code` (Identifier.value, ContactPoint.value, ...) becomes its `c` digest, exact and
  case-sensitive as token codes are; system and Identifier.type codings stay (`system|value`,
  `:of-type` work), the text is dropped (`:text` answers 400).
- reference `:identifier` (Reference.identifier, a logical reference): on a reference
  parameter that may point at a type whose `identifier` is protected, the value becomes a `c`
  digest under the reference parameter's own key, so a patient's INS given as
  `subject.identifier` is no more readable than under Patient.identifier.
- `:missing`, `:not`, chains (`subject:Patient.name=`) and `_has` keep working: presence is
  kept and the rewrite follows the parameter into each target type.
- fewer rows (they are most of what blind indexes cost, docs/blind-indexes.md): `phonetic`
  is indexed exactly as `name` (search/params/string.py applies no phonetic algorithm), so
  where both are protected it keeps no rows and its searches go to `name`'s. A `name` value
  that is also a `family` or `given` value (an `address` value that is a city, state, postal
  code or country) keeps no `name` (`address`) rows either: a search on `name` becomes
  `name` OR `family` OR `given`, each on its own tokens; a resource left with no row of its
  own keeps one presence row (an empty chain), so `:missing` is unchanged.

What the digests reveal to a database reader is in docs/blind-indexes.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Sequence
from typing import Any, Final, Protocol

from ..model.errors import FhirError, Kind, fail
from .ast import (
    Chain,
    Clause,
    Has,
    Missing,
    Not,
    OfTypePredicate,
    Predicate,
    Query,
    ReferenceIdentifierPredicate,
    StringPredicate,
    TokenPredicate,
    TokenTextPredicate,
)
from .entries import IndexEntry, ReferenceEntry, StringEntry, TokenEntry
from .registry import Registry


class Digest(Protocol):
    """The keyed digests of a parameter's values (crypto.blind.BlindDigest)."""

    def __call__(self, param: str, domain: str, text: str) -> str:
        """The token of `text` under parameter `param` (`Type.code`) and `domain`."""

    def chain(self, param: str, domain: str, text: str) -> str:
        """The links of `text`'s prefixes not ending in a space; a prefix's chain is a
        prefix of the chain."""


PROTECTED_TYPES: Final = ("Patient", "RelatedPerson", "Practitioner")
PROTECTED_CODES: Final = (
    "name", "given", "family", "phonetic", "identifier", "telecom", "phone", "email",
    "address", "address-city", "address-country", "address-postalcode", "address-state",
    "address-use",
)
# A parameter whose rows would repeat another's, and that other: searched on its rows.
SAME_ROWS: Final = {"phonetic": "name"}
# A string parameter whose values include every value of these (same normalization): the
# values they hold are searched on their rows, not repeated as its own.
COVERED_BY: Final = {"name": ("family", "given"),
                     "address": ("address-city", "address-state", "address-postalcode",
                                 "address-country")}
DEFAULT_PREFIX_CAP: Final = 32
STRING_CACHE: Final = 1 << 14  # values whose string entries are kept (names, cities repeat)
DEFAULT_SORT_LIMIT: Final = 10_000
# Digest domains: the links of a normalized value's chain, the exact value, a token code.
# `p` (one token per prefix, before chains) is retired: a link under it would be the head of
# the old token of its prefix, so a store not rebuilt would answer one-letter searches only.
CHAIN, EXACT, CODE = "l", "x", "c"
# The domain of a key's check value (a digest of a fixed text, never of a value), and the
# version of the rows a protected value gets: raised whenever they change, so that a store
# written under other rows is refused until re-indexed (store/index_layout.py).
KEY_CHECK, ROWS = "k", "chains-1"


def default_protected(registry: Registry) -> tuple[str, ...]:
    """`Type.code` of every default protected parameter the registry defines."""
    return tuple(f"{t}.{c}" for t in PROTECTED_TYPES for c in PROTECTED_CODES
                 if registry.get(t, c) is not None)


class BlindIndex:
    """Which parameters are protected, and the rewrite of their entries and searches."""

    def __init__(self, protected: Iterable[str], digest: Digest, registry: Registry, *,
                 prefix_cap: int = DEFAULT_PREFIX_CAP, sort_limit: int = DEFAULT_SORT_LIMIT) -> None:
        """ValueError for a parameter that is unknown or neither string nor token: dates,
        references and numbers stay range-searchable, so they are never blinded."""
        if prefix_cap < 1:
            raise ValueError("the prefix cap of blind indexes must be at least 1")
        self.digest = digest
        self.prefix_cap = prefix_cap
        self.sort_limit = sort_limit
        self._codes: dict[str, frozenset[str]] = {}
        self._strings: dict[tuple[str, str, str, str], StringEntry] = {}
        for name in protected:
            rtype, _, code = name.partition(".")
            param = registry.get(rtype, code)
            if param is None or rtype in ("", "Resource", "DomainResource"):
                raise ValueError(f"{name!r} is not a search parameter of a resource type")
            if param.type not in ("string", "token"):
                raise ValueError(f"{name!r} is a {param.type} parameter: only string and token "
                                 "parameters can be blind-indexed")
            self._codes[rtype] = self._codes.get(rtype, frozenset()) | {code}
        self._same_rows = {rtype: {code: other for code, other in SAME_ROWS.items()
                                   if {code, other} <= codes}
                           for rtype, codes in self._codes.items()}
        self._covered_by = {rtype: {code: cover for code, others in COVERED_BY.items()
                                    if code in codes and (cover := tuple(c for c in others if c in codes))}
                            for rtype, codes in self._codes.items()}
        # Reference parameters whose target may be a type with a protected identifier: the
        # identifier of a logical reference to it is that same protected value.
        holders = {t for t, codes in self._codes.items() if "identifier" in codes}
        self._references: dict[str, frozenset[str]] = {}
        for ref in registry.params if holders else ():
            if ref.type == "reference" and holders.intersection(ref.targets):
                for base in ref.base:
                    self._references[base] = self._references.get(base, frozenset()) | {ref.code}

    @classmethod
    def nothing(cls, registry: Registry) -> BlindIndex:
        """A blind index of no parameter: entries and queries go through unchanged."""
        return cls((), _NoDigest(), registry)

    def layout(self) -> dict[str, Any]:
        """What decides the index rows this writes, as a store records it: with nothing
        protected, the rows are plaintext; else the rows' version, the protected parameters,
        the prefix cap, and a check of their keys (it tells keys apart, reveals none)."""
        protected = sorted(f"{t}.{c}" for t, codes in self._codes.items() for c in codes)
        if not protected:
            return {"protected": []}
        checks = "".join(self.digest(param, KEY_CHECK, "index layout") for param in protected)
        return {"rows": ROWS, "protected": protected, "prefix_cap": self.prefix_cap,
                "keys": hashlib.sha256(checks.encode()).hexdigest()[:16]}

    def protects(self, resource_type: str | None, code: str) -> bool:
        return resource_type is not None and code in self._codes.get(resource_type, ())

    # -- entries -------------------------------------------------------------------------

    def entries(self, resource_type: str, entries: Sequence[IndexEntry]) -> Sequence[IndexEntry]:
        """The entries a store may keep: those of protected parameters as digests."""
        codes = self._codes.get(resource_type, frozenset())
        references = self._references.get(resource_type, frozenset())
        if not codes and not references:
            return entries
        same_rows = self._same_rows.get(resource_type, {})
        covered_by = self._covered_by.get(resource_type, {})
        covering = _covering(covered_by, entries) if covered_by else {}
        out: list[IndexEntry] = []
        kept: set[str] = set()  # string parameters with rows of their own
        for entry in entries:
            if entry.param in same_rows:
                continue
            if type(entry) is ReferenceEntry and entry.param in references and entry.identifier_value:
                value = self.digest(f"{resource_type}.{entry.param}", CODE, entry.identifier_value)
                out.append(dataclasses.replace(entry, identifier_value=value))
            elif entry.param not in codes:
                out.append(entry)
            elif type(entry) is StringEntry:
                if (entry.value, entry.exact) in covering.get(entry.param, ()):
                    continue
                out.append(self._string_entry(resource_type, entry))
                kept.add(entry.param)
            elif type(entry) is TokenEntry:
                code = self.digest(f"{resource_type}.{entry.param}", CODE, entry.code) if entry.code else None
                out.append(TokenEntry(entry.param, entry.system, code, None, entry.type_system, entry.type_code))
            # A string or token parameter indexes no other kind; were one to, it is not kept.
        for param in covering.keys() - kept:  # every value covered: still present
            out.append(StringEntry(param, "", ""))
        return out

    def _string_entry(self, resource_type: str, entry: StringEntry) -> StringEntry:
        """The value's entry: the chain of its prefixes up to the cap, and its exact digest.

        A value with no character at all keeps its entry (an empty chain): `:missing` and
        `:exact` see it. Entries are remembered: names, given names and cities repeat.
        """
        cached = (resource_type, entry.param, entry.value, entry.exact)
        found = self._strings.get(cached)
        if found is not None:
            return found
        key = f"{resource_type}.{entry.param}"
        found = StringEntry(entry.param, self.digest.chain(key, CHAIN, entry.value[: self.prefix_cap]),
                            self.digest(key, EXACT, entry.exact))
        if len(self._strings) >= STRING_CACHE:
            self._strings.clear()  # bounded; refilled by the values that repeat
        self._strings[cached] = found
        return found

    # -- queries -------------------------------------------------------------------------

    def query(self, query: Query) -> Query:
        """`query` with every predicate on a protected parameter rewritten to digests.

        INVALID (400, naming the parameter) for what digests cannot answer: `:contains`,
        `:text`, a start-with value longer than the prefix cap. `_sort` is left as it is: the
        store sorts protected values itself, after decryption (see `sorts_protected`).
        """
        if query.resource_type is None or not self._codes:
            return query  # a system-level search is rewritten per type (`clauses`)
        return dataclasses.replace(query, clauses=self.clauses(query.clauses, query.resource_type))

    def clauses(self, clauses: tuple[Clause, ...], resource_type: str) -> tuple[Clause, ...]:
        """`clauses` applied to resources of `resource_type`, on digests (a system-level
        search `_type=Patient,Practitioner&name=…` gets them once per type)."""
        if not self._codes:
            return clauses
        return tuple(Clause(tuple(q for p in c.any_of for q in self._predicate(p, resource_type)))
                     for c in clauses)

    def sorts_protected(self, query: Query) -> bool:
        """True when a `_sort` key is a protected parameter (its digests have no order) and
        the search returns matches: a count (`_summary=count`, `_count=0`) needs no order, so
        the store answers it as any search, whatever the sort limit."""
        if query.summary == "count" or query.count == 0:
            return False
        return any(self.protects(query.resource_type, s.param) for s in query.sort)

    def _predicate(self, p: Predicate, rtype: str) -> tuple[Predicate, ...]:
        """The predicates whose OR is `p` on digests (a chain may split per target type)."""
        if isinstance(p, Chain):
            return self._chain(p)
        if isinstance(p, Has):
            return tuple(Has(p.target_type, p.ref_param, inner)
                         for inner in self._predicate(p.inner, p.target_type))
        if isinstance(p, ReferenceIdentifierPredicate):
            if p.value is None or p.param not in self._references.get(rtype, ()):
                return (p,)
            return (dataclasses.replace(p, value=self.digest(f"{rtype}.{p.param}", CODE, p.value)),)
        same = self._same_rows.get(rtype, {}).get(p.param)
        if same is not None:
            return self._predicate(dataclasses.replace(p, param=same), rtype)
        if isinstance(p, Missing) or not self.protects(rtype, p.param):
            return (p,)
        key = f"{rtype}.{p.param}"
        if isinstance(p, Not):
            return (Not(p.param, tuple(q for inner in p.any_of for q in self._predicate(inner, rtype))),)
        if isinstance(p, StringPredicate):
            own = self._string(p, key)
            if isinstance(own, Missing):  # a blank value: presence, which its own rows keep
                return (own,)
            cover = self._covered_by.get(rtype, {}).get(p.param, ())
            return (own, *(self._string(dataclasses.replace(p, param=c), f"{rtype}.{c}") for c in cover))
        if isinstance(p, TokenPredicate):
            code = None if p.code is None else self.digest(key, CODE, p.code)
            return (dataclasses.replace(p, code=code),)
        if isinstance(p, OfTypePredicate):
            return (dataclasses.replace(p, value=self.digest(key, CODE, p.value)),)
        if isinstance(p, TokenTextPredicate):
            raise unsupported(p.param, rtype, '":text"')
        raise unsupported(p.param, rtype, "this kind of search")

    def _chain(self, p: Chain) -> tuple[Predicate, ...]:
        rewritten = {t: self._predicate(p.inner, t) for t in p.target_types}
        if all(inner == (p.inner,) for inner in rewritten.values()):
            return (p,)
        # Each target type has its own digests: one chain per type, ORed (a chain matches when
        # some referenced resource of some target type matches).
        return tuple(Chain(p.param, (t,), inner) for t, inners in rewritten.items() for inner in inners)

    def _string(self, p: StringPredicate, key: str) -> Predicate:
        rtype = key.partition(".")[0]
        if p.mode == "contains":
            raise unsupported(p.param, rtype, '":contains"')
        if p.mode == "exact":
            # The exact digest is on the value's row: naming its chain too lets the stores
            # seek the row by its indexed value.
            return dataclasses.replace(p, value=self.digest.chain(key, CHAIN, p.value[: self.prefix_cap]),
                                       exact=self.digest(key, EXACT, p.exact))
        if not p.value:
            return Missing(p.param, False)  # every value starts with the empty string
        if len(p.value) > self.prefix_cap:
            raise unsupported(p.param, rtype, f"a value longer than {self.prefix_cap} characters "
                                              "(without :exact)")
        return dataclasses.replace(p, value=self.digest.chain(key, CHAIN, p.value), exact="")


def _covering(covered_by: dict[str, tuple[str, ...]],
              entries: Sequence[IndexEntry]) -> dict[str, set[tuple[str, str]]]:
    """Per covered parameter with entries, the (value, exact) its covering parameters hold."""
    held: dict[str, set[tuple[str, str]]] = {}
    for entry in entries:
        if type(entry) is StringEntry:
            held.setdefault(entry.param, set()).add((entry.value, entry.exact))
    return {param: set().union(*(held.get(c, ()) for c in cover))
            for param, cover in covered_by.items() if param in held}


class _NoDigest:
    """The digest of a blind index that protects nothing: never asked for one."""

    def __call__(self, param: str, domain: str, text: str) -> str:
        raise AssertionError(f"{param} is not protected: nothing to digest")

    chain = __call__


def unsupported(code: str, resource_type: str, what: str) -> FhirError:
    """The 400 of a search a protected parameter's blind index cannot answer."""
    return fail(Kind.INVALID, "not-supported",
                f'Parameter "{code}" of {resource_type} is protected (blind-indexed): '
                f"{what} is not supported on it.",
                expression=code, details_code="MSG_PARAM_MODIFIER_INVALID")
