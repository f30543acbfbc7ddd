"""One CodeSystem held in memory, indexed by code, with its hierarchy (FHIR R4
codesystem.html: nested `concept`, the `parent`/`child` properties, concept-properties.html).

A concept is inactive when its `inactive` property is true or its `status` property is
`retired` (`deprecated` concepts are still active: concept-properties.html); abstract when
`notSelectable` (or the older `abstract`) is true.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

# The value[x] names a concept property may use (CodeSystem.concept.property.value[x]).
_VALUE_KEYS = ("valueCode", "valueCoding", "valueString", "valueInteger", "valueBoolean",
               "valueDateTime", "valueDecimal")


def property_value(prop: dict[str, Any]) -> Any:
    """The value of a concept property, whatever its type (None when it has none)."""
    return next((prop[key] for key in _VALUE_KEYS if key in prop), None)


@dataclass(slots=True)
class Concept:
    """One concept of a CodeSystem, its parents and children by code."""

    code: str
    display: str | None
    definition: str | None
    designations: tuple[dict[str, Any], ...]
    properties: tuple[dict[str, Any], ...]
    parents: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)

    @property
    def inactive(self) -> bool:
        return any((p["code"] == "inactive" and property_value(p) is True)
                   or (p["code"] == "status" and property_value(p) == "retired")
                   for p in self.properties)

    @property
    def abstract(self) -> bool:
        return any(p["code"] in ("notSelectable", "abstract") and property_value(p) is True
                   for p in self.properties)

    def display_in(self, language: str | None) -> str | None:
        """The display in `language` (`fr` matches `fr-FR`), else the concept's own."""
        if language:
            wanted = language.lower()
            for designation in self.designations:
                tag = str(designation.get("language", "")).lower()
                if tag == wanted or tag.split("-")[0] == wanted.split("-")[0]:
                    return str(designation["value"])
        return self.display

    def has_display(self, display: str) -> bool:
        """Whether `display` is this concept's display or one of its designations."""
        return display == self.display or any(d.get("value") == display for d in self.designations)


class CodeSystem:
    """A CodeSystem resource and its concepts indexed by code."""

    def __init__(self, resource: dict[str, Any]) -> None:
        self.resource = resource
        self.url: str = resource["url"]
        self.version: str | None = resource.get("version")
        self.case_sensitive: bool = resource.get("caseSensitive", True) is not False
        self.concepts: dict[str, Concept] = {}
        self.roots: list[str] = []
        self._folded: dict[str, str] = {}
        for concept in resource.get("concept", []):
            self.roots.append(concept["code"])
            self._add(concept, None)
        self._link_properties()
        if not self.case_sensitive:
            self._folded = {code.casefold(): code for code in self.concepts}

    @cached_property
    def ordered(self) -> list[Concept]:
        """The concepts depth first from the roots, each once (the order of expansions)."""
        out: list[Concept] = []
        seen: set[str] = set()
        for root in self.roots:
            for concept in (self.concepts[root], *self.descendants(root)):
                if concept.code not in seen:
                    seen.add(concept.code)
                    out.append(concept)
        return out

    def _add(self, raw: dict[str, Any], parent: str | None) -> None:
        code = raw["code"]
        concept = self.concepts.get(code)
        if concept is None:
            concept = self.concepts[code] = Concept(
                code, raw.get("display"), raw.get("definition"),
                tuple(raw.get("designation", ())), tuple(raw.get("property", ())))
        if parent is not None:
            _link(self.concepts[parent], concept)
        for child in raw.get("concept", []):
            self._add(child, code)

    def _link_properties(self) -> None:
        """Parents and children declared by the `parent` and `child` properties."""
        for concept in list(self.concepts.values()):
            for prop in concept.properties:
                other = self.concepts.get(str(property_value(prop)))
                if other is None:
                    continue
                if prop["code"] == "parent":
                    _link(other, concept)
                elif prop["code"] == "child":
                    _link(concept, other)
        self.roots = [code for code in self.concepts if not self.concepts[code].parents]

    def find(self, code: str) -> Concept | None:
        """The concept of `code` (case-insensitively if the system says so), or None."""
        found = self.concepts.get(code)
        if found is None and self._folded:
            folded = self._folded.get(code.casefold())
            found = self.concepts.get(folded) if folded else None
        return found

    def descendants(self, code: str) -> Iterator[Concept]:
        """Every concept below `code` (itself excluded), each once, depth first."""
        seen = {code}
        stack = list(reversed(self.concepts[code].children)) if code in self.concepts else []
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            concept = self.concepts[current]
            yield concept
            stack.extend(reversed(concept.children))

    def ancestors(self, code: str) -> set[str]:
        """Every code above `code` (itself excluded)."""
        seen: set[str] = set()
        stack = list(self.concepts[code].parents) if code in self.concepts else []
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(self.concepts[current].parents)
        return seen

    def subsumes(self, ancestor: str, code: str) -> bool:
        """Whether `code` is `ancestor` or lies below it."""
        return code == ancestor or ancestor in self.ancestors(code)


def _link(parent: Concept, child: Concept) -> None:
    if child.code not in parent.children:
        parent.children.append(child.code)
    if parent.code not in child.parents:
        child.parents.append(parent.code)
