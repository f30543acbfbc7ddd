"""The codes a ValueSet holds, from its `compose` (FHIR R4 valueset.html#compositions):
includes and excludes by whole system, concept list, filters (is-a, descendent-of, is-not-a,
generalizes, =, in, not-in, regex, exists) and imported value sets; or from a stored
`expansion` when the ValueSet has no compose.

A system or value set the server does not hold makes the value set impossible to compute:
UNPROCESSABLE with code `not-supported`, never a partial answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..model.errors import Kind, fail
from .catalogue import Catalogue
from .codesystems import CodeSystem, Concept, property_value

_MAX_DEPTH = 10  # value sets importing value sets: deeper is taken for a cycle
MAX_PARTS = 100  # includes and excludes of one compose (the R4 core has 12 at most)


@dataclass(frozen=True, slots=True)
class Member:
    """One code of a value set."""

    system: str
    version: str | None
    code: str
    concept: Concept | None  # None: listed by a stored expansion of a system not held
    display: str | None

    @property
    def key(self) -> tuple[str, str]:
        return self.system, self.code

    @property
    def inactive(self) -> bool:
        return self.concept is not None and self.concept.inactive

    @property
    def abstract(self) -> bool:
        return self.concept is not None and self.concept.abstract

    def display_in(self, language: str | None) -> str | None:
        if self.concept is None:
            return self.display
        return self.concept.display_in(language) or self.display


def members(catalogue: Catalogue, value_set: dict[str, Any], *, depth: int = 0) -> list[Member]:
    """Every code of `value_set`, in order, each once (inactive codes included unless the
    compose says `inactive: false`)."""
    if depth > _MAX_DEPTH:
        raise _unprocessable(f"ValueSet {value_set.get('url')} imports value sets more than "
                             f"{_MAX_DEPTH} levels deep (a cycle?).")
    compose = value_set.get("compose")
    if compose is None:
        return list(_stored_expansion(catalogue, value_set.get("expansion", {}).get("contains", [])))
    parts = len(compose.get("include", [])) + len(compose.get("exclude", []))
    if parts > MAX_PARTS:
        # Each part may walk a whole system: a value set a client sends is bounded here.
        raise fail(Kind.UNPROCESSABLE, "too-costly", f"The compose has {parts} includes and "
                   f"excludes; this server computes at most {MAX_PARTS}.")
    excluded = {m.key for part in compose.get("exclude", [])
                for m in _part(catalogue, part, depth)}
    out: dict[tuple[str, str], Member] = {}
    for part in compose.get("include", []):
        for member in _part(catalogue, part, depth):
            if member.key not in excluded:
                out.setdefault(member.key, member)
    if compose.get("inactive") is False:
        return [m for m in out.values() if not m.inactive]
    return list(out.values())


def _stored_expansion(catalogue: Catalogue, contains: list[dict[str, Any]]) -> Iterator[Member]:
    for item in contains:
        if "code" in item and "system" in item:
            system = catalogue.code_system(item["system"], item.get("version"))
            concept = system.find(item["code"]) if system is not None else None
            yield Member(item["system"], item.get("version"), item["code"], concept,
                         item.get("display"))
        yield from _stored_expansion(catalogue, item.get("contains", []))


def _part(catalogue: Catalogue, part: dict[str, Any], depth: int) -> list[Member]:
    """The codes of one include or exclude: its system part, intersected with each value set
    it names."""
    imported = [members(catalogue, _value_set(catalogue, url), depth=depth + 1)
                for url in part.get("valueSet", [])]
    if "system" in part:
        found = list(_system_part(catalogue, part))
    elif imported:
        found = imported[0]
    else:
        raise _unprocessable("A compose include or exclude names neither a system nor a value set.")
    keys = [{m.key for m in listed} for listed in imported]
    return [m for m in found if all(m.key in k for k in keys)]


def _value_set(catalogue: Catalogue, canonical: str) -> dict[str, Any]:
    found = catalogue.resource("ValueSet", canonical)
    if found is None:
        raise _unprocessable(f"The server does not hold ValueSet {canonical}, which this value "
                             "set imports: it cannot be computed.")
    return found


def held_system(catalogue: Catalogue, url: str, version: str | None = None) -> CodeSystem:
    """The CodeSystem `url` (and version), or UNPROCESSABLE `not-supported` naming it."""
    system = catalogue.code_system(url, version)
    if system is None or system.resource.get("content") == "not-present":
        held = catalogue.versions("CodeSystem", url)
        which = f"version {version} of " if version and held else ""
        raise _unprocessable(f"The server does not hold {which}code system {url}: codes of it "
                             "cannot be checked.")
    return system


def _system_part(catalogue: Catalogue, part: dict[str, Any]) -> Iterator[Member]:
    system = held_system(catalogue, part["system"], part.get("version"))
    version = system.version

    def member(concept: Concept, display: str | None = None) -> Member:
        return Member(system.url, version, concept.code, concept, display or concept.display)

    if "concept" in part:
        for listed in part["concept"]:
            concept = system.find(listed["code"])
            if concept is None:
                raise _unprocessable(f"Code {listed['code']} listed by the value set is not in "
                                     f"code system {system.url}.")
            yield member(concept, listed.get("display"))
        return
    tests = [_filter(system, f) for f in part.get("filter", [])]
    for concept in system.ordered:
        if all(test(concept) for test in tests):
            yield member(concept)


Test = Callable[[Concept], bool]


def _filter(system: CodeSystem, spec: dict[str, Any]) -> Test:
    """A compose filter as a test on concepts (valueset.html, filter operators)."""
    op, prop, value = spec.get("op"), spec.get("property"), spec.get("value")
    if not isinstance(prop, str) or not isinstance(value, str):
        raise _unprocessable("A compose filter needs a property and a value.")
    if op in ("is-a", "descendent-of", "is-not-a", "generalizes"):
        found = system.find(value)
        if prop not in ("concept", "code") or found is None:
            raise _unprocessable(f"Filter {prop} {op} {value}: not a concept of {system.url}.")
        code = found.code
        below = {c.code for c in system.descendants(code)}
        above = system.ancestors(code)
        return {
            "is-a": lambda c: c.code == code or c.code in below,
            "descendent-of": lambda c: c.code in below,
            "is-not-a": lambda c: c.code != code and c.code not in below,
            "generalizes": lambda c: c.code == code or c.code in above,
        }[op]
    if op == "=":
        return lambda c: value in _values(c, prop)
    if op in ("in", "not-in"):
        wanted = {v.strip() for v in value.split(",")}
        return ((lambda c: not wanted.isdisjoint(_values(c, prop))) if op == "in"
                else (lambda c: wanted.isdisjoint(_values(c, prop))))
    if op == "regex":
        return _regex(value, prop)
    if op == "exists":
        present = value == "true"
        return lambda c: bool(_values(c, prop)) == present
    raise _unprocessable(f"Filter operator {op!r} is not supported.")


# A group holding a quantifier, itself quantified ("(a+)+", "(x|y*){2,}"): the shape whose
# backtracking can take exponential time. A value set a client sends may hold any pattern.
_NESTED_QUANTIFIER = re.compile(r"\([^()]*[*+?}][^()]*\)\s*[*+?{]")
_MAX_PATTERN = 200


def _regex(value: str, prop: str) -> Test:
    if len(value) > _MAX_PATTERN or _NESTED_QUANTIFIER.search(value):
        raise _unprocessable(f"Filter regex {value[:_MAX_PATTERN]!r} is refused: longer than "
                             f"{_MAX_PATTERN} characters or a quantified group holding a "
                             "quantifier.")
    try:
        pattern = re.compile(value)
    except re.error:
        raise _unprocessable(f"Filter regex {value!r} is not a regular expression.") from None
    return lambda c: any(pattern.fullmatch(v) for v in _values(c, prop))


def _values(concept: Concept, prop: str) -> set[str]:
    """The values of a property of a concept, as strings (`code`/`concept`, `display`,
    `parent` and `child` are the concept's own)."""
    if prop in ("code", "concept"):
        return {concept.code}
    if prop == "display":
        return {concept.display} if concept.display else set()
    if prop == "parent":
        return set(concept.parents)
    if prop == "child":
        return set(concept.children)
    out = set()
    for p in concept.properties:
        if p["code"] == prop:
            value = property_value(p)
            if isinstance(value, dict):
                value = value.get("code")
            out.add(str(value).lower() if isinstance(value, bool) else str(value))
    return out


def _unprocessable(message: str) -> Exception:
    return fail(Kind.UNPROCESSABLE, "not-supported", message)
