"""Write-time index extraction (FHIR R4 search.html, searchparameter-registry.html).

`extract(resource)` returns every index entry of every search parameter that applies to the
resource's type, computed from the official SearchParameter expressions. Expressions are
compiled once per (resource type, parameter) into typed getters (`compile.py`) feeding one
indexer per (parameter type, FHIR type) from `params/`; the few the compiler does not handle
run on fhirpathpy (`fallback.py`). `_lastUpdated` is read from meta.lastUpdated, so callers
set meta (versionId, lastUpdated) before extracting.

Entries may repeat within a parameter (e.g. the same coding twice); stores treat the entries
of a parameter as a set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from itertools import product
from typing import Any

from . import content
from .codegen import Extract, Step, generate
from .compile import Branch, CompileError, Compiler
from .entries import CompositeEntry, IndexEntry, TokenEntry
from .fallback import fallback_runner
from .params import date, number, reference, special, string, token, uri
from .registry import Component, Registry, SearchParam, default_registry

Indexer = Callable[[str, Any, list[Any]], None]
Getter = Callable[[list[Any], dict[str, Any]], list[Any]]
# A component getter: (getter, indexer, JSON key it first reads or None).
Part = tuple[Getter, Indexer, str | None]


def _with_root(fn: Getter) -> Getter:
    """Pairs each element with the resource: composite components may read `%resource`."""

    def getter(items: list[Any], root: dict[str, Any]) -> list[Any]:
        return [(element, root) for element in fn(items, root)]

    return getter


def _fallback_getter(items: list[Any], root: dict[str, Any]) -> list[Any]:
    return [root]


class Extractor:
    """Compiled extraction plans per resource type for one registry (and server base URL)."""

    def __init__(self, registry: Registry, base: str | None = None) -> None:
        self.registry = registry
        self.compiler = Compiler(registry)
        self.indexers: dict[str, Mapping[str, Indexer]] = {
            # A string parameter whose expression is the resource itself: `_content` (content.py).
            "string": {**string.INDEXERS, **dict.fromkeys(registry.resource_types, content.index_text)},
            "token": token.INDEXERS,
            "reference": reference.reference_indexers(base),
            "date": date.INDEXERS,
            "number": number.NUMBER_INDEXERS,
            "quantity": number.QUANTITY_INDEXERS,
            "uri": uri.INDEXERS,
            "special": {"Location.position": special.index_position},
        }
        self._plans: dict[str, Extract] = {}
        # Parameter id -> why the compiler refused it (these run on fhirpathpy).
        self.fallbacks: dict[str, str] = {}
        # (resource type, parameter code, FHIR type) an expression reaches but nothing indexes.
        self.unindexed: set[tuple[str, str, str]] = set()

    def extract(self, resource: dict[str, Any]) -> list[IndexEntry]:
        """All index entries of `resource` (a FHIR JSON dict); [] for unknown types."""
        rtype = resource.get("resourceType", "")
        run = self._plans.get(rtype) or self.plan(rtype)
        out: list[Any] = []
        run(resource, out)
        return out

    def plan(self, resource_type: str) -> Extract:
        """The generated extraction function of `resource_type` (built on first use)."""
        run = self._plans.get(resource_type)
        if run is None:
            run = self._plans[resource_type] = generate(resource_type, self.steps(resource_type))
        return run

    def steps(self, resource_type: str) -> list[Step]:
        """Every (parameter, branch) step of `resource_type`, before code generation."""
        return [
            step
            for sp in self.registry.for_type(resource_type).values()
            if sp.expression
            for step in self._steps(resource_type, sp)
        ]

    def _steps(self, resource_type: str, sp: SearchParam) -> list[Step]:
        assert sp.expression
        try:
            branches = self.compiler.compile(sp.expression, resource_type)
        except CompileError as exc:
            self.fallbacks[sp.id or sp.code] = str(exc)
            run = fallback_runner(sp.type, sp.expression, self.indexers.get(sp.type, {}))
            return [Step(sp.code, run, None, _fallback_getter)]
        steps: list[Step] = []
        for branch in branches:
            if sp.type == "composite":
                found_composite = self._composite(resource_type, sp, branch)
                if found_composite is not None:
                    index, needs = found_composite
                    getter = _with_root(branch.fn)
                    steps.append(Step(sp.code, index, branch.ops, getter, with_root=True, needs=needs))
                continue
            found = self.indexers.get(sp.type, {}).get(branch.type)
            if found is None:
                self.unindexed.add((resource_type, sp.code, branch.type))
            else:
                steps.append(Step(sp.code, found, branch.ops, branch.fn))
        return steps

    def _composite(
        self, resource_type: str, sp: SearchParam, branch: Branch
    ) -> tuple[Indexer, tuple[tuple[str, ...], ...]] | None:
        """An indexer of every combination of component values within one element, and the
        properties the element needs (one per group) for every component to have a value."""
        parts: list[list[Part]] = []
        for comp in sp.components:
            found = self._component(resource_type, sp, comp, branch.type)
            if not found:
                return None  # a component that can never have a value: no combination exists
            parts.append(found)
        if not parts:
            return None
        codes = [c.code for c in sp.components]
        # Per component, the properties of the element it reads (unless one cannot tell).
        needs = tuple(
            tuple(sorted({k for _, _, k in p if k is not None}))
            for p in parts
            if all(k is not None for _, _, k in p)
        )

        def index_composite(param: str, element_and_root: Any, out: list[Any]) -> None:
            element, root = element_and_root
            items = [element]
            values: list[list[Any]] = []
            for code, getters in zip(codes, parts):
                found: list[Any] = []
                for getter, index, key in getters:
                    if key is None or key in element:
                        for v in getter(items, root):
                            index(code, v, found)
                # A text-only token (CodeableConcept.text) can never satisfy a composite's
                # `system|code` part: leaving it out avoids useless combinations.
                found = [e for e in found if e.__class__ is not TokenEntry or e.code or e.system]
                if not found:
                    return
                values.append(found)
            for combo in product(*values):
                out.append(CompositeEntry(param, combo))

        return index_composite, needs

    def _component(self, resource_type: str, sp: SearchParam, comp: Component, context: str) -> list[Part]:
        try:
            branches = self.compiler.compile(comp.expression, context, resource_type)
        except CompileError:
            # No R4 component needs it; a custom one the compiler refuses indexes nothing.
            self.unindexed.add((resource_type, f"{sp.code}${comp.code}", "(not compiled)"))
            return []
        out: list[Part] = []
        for b in branches:
            index = self.indexers.get(comp.type, {}).get(b.type)
            if index is None:
                self.unindexed.add((resource_type, f"{sp.code}${comp.code}", b.type))
            else:
                out.append((b.fn, index, b.key))
        return out


_extractors: dict[tuple[int, str | None], Extractor] = {}


def extractor(registry: Registry | None = None, base: str | None = None) -> Extractor:
    """The shared Extractor of `registry` (default: the R4 registry) and base URL."""
    registry = registry or default_registry()
    key = (id(registry), base)
    found = _extractors.get(key)
    if found is None or found.registry is not registry:
        found = _extractors[key] = Extractor(registry, base)
    return found


def extract(
    resource: dict[str, Any], *, registry: Registry | None = None, base: str | None = None
) -> list[IndexEntry]:
    """Every index entry of `resource`. `base`: this server's base URL, for absolute references."""
    return extractor(registry, base).extract(resource)
