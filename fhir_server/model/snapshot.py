"""Snapshot-driven profile validation (profiling.html, elementdefinition.html).

A StructureDefinition's snapshot is read into elements by id; a resource is walked along the
elements the snapshot lists, each checked for cardinality, type (choice elements), fixed and
pattern values, bindings (required → error, extensible → warning) against the value sets we
hold, reference target types, invariants (model/invariants.py), and slicing (value, pattern,
exists, type and profile discriminators; a slicing without discriminator matches a value to the
first slice it conforms to; open or closed). Extensions are checked against their definitions
when we hold them. What the snapshot does not expand (a datatype's own elements) is left to the
R4 schema layer, which already ran. Profiles given as a differential only get their snapshot
generated at load (model/snapshot_gen.py).

Not done: discriminators through `resolve()`, re-slicing. docs/validation.md, "Profiles",
lists what is held and checked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Final

from ..terminology_service import load_catalogue, membership
from . import invariants
from .errors import FhirError, Issue
from .invariants import Invariant
from .platform_codes import PROFILES_DIR
from .snapshot_gen import core_structures, generate

PACKAGES: Final = ("eclaire-0.3.1",)  # folders of profiles/ holding a vendored package
_CORE: Final = "http://hl7.org/fhir/StructureDefinition/"


@dataclass(frozen=True, slots=True)
class Element:
    """One snapshot element, with what the checks need."""

    id: str
    path: str  # without slice names: `Observation.component.value[x]`
    name: str  # last path step: `identifier`, `value[x]`
    slice_name: str | None
    min: int
    max: int | None  # None for *
    types: tuple[str, ...]
    profiles: tuple[str, ...]  # type.profile (an extension's definition)
    targets: tuple[str, ...]  # type.targetProfile
    fixed: Any = None
    pattern: Any = None
    binding: tuple[str, str] | None = None  # (strength, value set url)
    discriminators: tuple[tuple[str, str], ...] = ()  # (type, path)
    sliced: bool = False
    closed: bool = False
    invariants: tuple[Invariant, ...] = ()


def _element(raw: dict[str, Any]) -> Element:
    step = raw["id"].rsplit(".", 1)[-1]
    name, _, slice_name = step.partition(":")
    types = raw.get("type", [])
    fixed = next((v for k, v in raw.items() if k.startswith("fixed")), None)
    pattern = next((v for k, v in raw.items() if k.startswith("pattern")), None)
    binding = raw.get("binding", {})
    slicing = raw.get("slicing")
    return Element(
        id=raw["id"], path=raw.get("path", raw["id"]), name=name, slice_name=slice_name or None, min=int(raw.get("min", 0)),
        max=None if raw.get("max", "*") == "*" else int(raw["max"]),
        types=tuple(t["code"] for t in types),
        profiles=tuple(p for t in types for p in t.get("profile", [])),
        targets=tuple(p for t in types for p in t.get("targetProfile", [])),
        fixed=fixed, pattern=pattern,
        binding=(binding["strength"], binding["valueSet"].partition("|")[0])
        if binding.get("strength") in ("required", "extensible") and "valueSet" in binding else None,
        discriminators=tuple((d["type"], d["path"]) for d in (slicing or {}).get("discriminator", [])),
        sliced=slicing is not None, closed=(slicing or {}).get("rules") == "closed",
        invariants=invariants.of(raw),
    )


@dataclass
class Definition:
    """A StructureDefinition with a snapshot, ready to check resources (or extensions)."""

    url: str
    version: str | None
    type: str
    root: str
    root_invariants: tuple[Invariant, ...] = ()
    children: dict[str, list[Element]] = field(default_factory=dict)  # by parent element id
    slices: dict[str, list[Element]] = field(default_factory=dict)  # by sliced element id

    @classmethod
    def load(cls, sd: dict[str, Any]) -> Definition:
        elements = [_element(e) for e in sd["snapshot"]["element"]]
        definition = cls(sd["url"], sd.get("version"), sd["type"], elements[0].id,
                         elements[0].invariants)
        for e in elements[1:]:
            parent = e.id[: -len(e.id.rsplit(".", 1)[-1]) - 1]
            if e.slice_name:
                definition.slices.setdefault(f"{parent}.{e.name}", []).append(e)
            else:
                definition.children.setdefault(parent, []).append(e)
        return definition

    def check(self, resource: dict[str, Any], prefix: str) -> list[Issue]:
        """What `resource` (at FHIRPath `prefix`) breaks in this profile."""
        return [*invariants.check(self.root_invariants, resource, resource, prefix, self.type),
                *self._node(resource, self.root, prefix, resource)]

    def _node(self, node: dict[str, Any], element_id: str, where: str,
              resource: dict[str, Any]) -> Iterator[Issue]:
        for element in self.children.get(element_id, ()):
            name = element.name
            if name[-1] != "]" and name not in node and f"_{name}" not in node:
                # Absent (most elements of a profile are): only cardinalities can be broken.
                if element.min or element.id in self.slices:
                    yield from _cardinality(element, 0, f"{where}.{name}")
                    for piece in self.slices.get(element.id, ()):
                        yield from _cardinality(piece, 0, f"{where}.{name}", piece.slice_name)
                continue
            values = list(_values(node, name, where))
            yield from _cardinality(element, len(values), f"{where}.{_base(element.name)}")
            slices = self.slices.get(element.id, [])
            chosen = [self._slice_of(key, value, element, slices) if slices else None
                      for key, value, _ in values]
            for (key, value, at), piece in zip(values, chosen):
                if slices and piece is None and element.closed:
                    yield _error("structure", f"{at} matches none of the slices of a closed "
                                 f"slicing ({', '.join(str(s.slice_name) for s in slices)})", at)
                yield from self._value(piece or element, key, value, at, resource)
            for piece in slices:
                count = sum(1 for c in chosen if c is piece)
                label = f"{where}.{_base(element.name)}"
                yield from _cardinality(piece, count, label, piece.slice_name)

    def _value(self, element: Element, key: str, value: Any, at: str,
               resource: dict[str, Any]) -> Iterator[Issue]:
        yield from _type(element, key, at)
        if value is None:
            return  # a primitive's extensions alone: nothing to compare
        if element.invariants:
            yield from invariants.check(element.invariants, value, resource, at,
                                        _fhirpath_type(element, key))
        if element.fixed is not None and value != element.fixed:
            yield _error("value", f"Expected the fixed value {_show(element.fixed)}", at)
        if element.pattern is not None and not _matches(value, element.pattern):
            yield _error("value", f"Expected a value matching {_show(element.pattern)}", at)
        if element.binding is not None:
            yield from _binding(element.binding, value, at)
        if element.targets and isinstance(value, dict):
            yield from _target(element.targets, value, at)
        if not isinstance(value, dict):
            return
        if element.id in self.children:
            yield from self._node(value, element.id, at, resource)
        extension = _extension_definition(element, value)
        if extension is not None and extension is not self:
            yield from invariants.check(extension.root_invariants, value, resource, at, "Extension")
            yield from extension._node(value, extension.root, at, resource)

    def _slice_of(self, key: str, value: Any, sliced: Element, slices: list[Element]) -> Element | None:
        """The slice of `sliced` that `value` (under JSON `key`) belongs to, by the slicing's
        discriminators (or, with none, the first slice it conforms to)."""
        return next((piece for piece in slices if self._in_slice(sliced, piece, key, value)), None)

    def _in_slice(self, sliced: Element, piece: Element, key: str, value: Any) -> bool:
        if not sliced.discriminators:
            return not any(i.severity == "error" for i in self._value(piece, key, value, "", {}))
        for kind, path in sliced.discriminators:
            if "resolve()" in path:
                return False  # a discriminator through a reference: not implemented
            found = _at_path(value, path)
            if kind == "exists":
                child = self._child(piece, path)
                if (found is not None) != (child is not None and child.min >= 1):
                    return False
                continue
            if kind == "type":
                if _type_of(sliced, key, found) not in _type_names(self._typed(piece, path)):
                    return False
                continue
            if kind == "profile":
                if not _conforms(found, self._typed(piece, path)):
                    return False
                continue
            wanted = self._expected(piece, path)
            if wanted is None or found is None:
                return False
            if not (found == wanted if kind == "value" else _matches(found, wanted)):
                return False
        return True

    def _typed(self, piece: Element, path: str) -> Element | None:
        """The element at `path` below `piece` whose type a type or profile discriminator tests."""
        return piece if path == "$this" else self._child(piece, path)

    def _child(self, piece: Element, path: str) -> Element | None:
        if path == "$this":
            return piece
        return next((e for e in self.children.get(piece.id, ()) if e.name == path), None)

    def _expected(self, piece: Element, path: str) -> Any:
        """The value the slice fixes at `path`: its fixed or pattern value, or for `url` the
        canonical of the extension definition it is typed with."""
        child = self._child(piece, path)
        if child is not None and (child.fixed is not None or child.pattern is not None):
            return child.fixed if child.fixed is not None else child.pattern
        if path == "url" and piece.profiles:
            return piece.profiles[0]
        return None


def _fhirpath_type(element: Element, key: str) -> str:
    """What a value of `element` (under JSON `key`) is typed as for FHIRPath: its data type
    (a choice's from the key), or the element's path for a backbone element."""
    if element.name.endswith("[x]") and key:
        return key[len(element.name) - 3:]
    if len(element.types) == 1 and element.types[0][:1].isupper() and element.types[0] not in (
            "BackboneElement", "Element"):
        return element.types[0]
    return element.path.replace("[x]", "")


def _type_of(sliced: Element, key: str, value: Any) -> str | None:
    """The FHIR type of a value: a resource's `resourceType`, a choice's type from its JSON key
    (`valueQuantity`), else the element's one declared type."""
    if isinstance(value, dict) and isinstance(value.get("resourceType"), str):
        return str(value["resourceType"])
    if sliced.name.endswith("[x]") and key:
        return key[len(sliced.name) - 3:].lower()
    return sliced.types[0].lower() if len(sliced.types) == 1 else None


def _type_names(element: Element | None) -> set[str]:
    if element is None:
        return set()
    # Resource types keep their case; data types compare without it (`Quantity` vs `quantity`).
    return {t for t in element.types} | {t.lower() for t in element.types}


def _conforms(value: Any, element: Element | None) -> bool:
    """Whether `value` conforms to one of the profiles the element's type names (profile discriminator)."""
    if element is None or not isinstance(value, dict):
        return False
    held = [definitions().get(p) for p in element.profiles]
    return any(d is not None and not any(i.severity == "error" for i in d.check(value, ""))
               for d in held)


def _base(name: str) -> str:
    return name.removesuffix("[x]")


def _values(node: dict[str, Any], name: str, where: str) -> Iterator[tuple[str, Any, str]]:
    """(JSON key, value, FHIRPath) of each value of element `name` in `node`."""
    if name.endswith("[x]"):
        base = name[:-3]
        keys = [k for k in node if k.startswith(base) and k[len(base):][:1].isupper()]
    else:
        keys = [name] if name in node or f"_{name}" in node else []
    for key in keys:
        # A primitive given by its extensions only (`_status`) counts, with no value to check.
        value = node.get(key)
        if value is None and isinstance(node.get(f"_{key}"), list):
            value = [None] * len(node[f"_{key}"])
        if isinstance(value, list):
            for i, item in enumerate(value):
                yield key, item, f"{where}.{key}[{i}]"
        else:
            yield key, value, f"{where}.{key}"


def _cardinality(element: Element, count: int, where: str, slice_name: str | None = None) -> Iterator[Issue]:
    what = f"slice '{slice_name}' of " if slice_name else ""
    if count < element.min:
        yield _error("required", f"The profile wants at least {element.min} of {what}"
                     f"{where.rsplit('.', 1)[-1]}, found {count}", where)
    if element.max is not None and count > element.max:
        text = "allows none" if element.max == 0 else f"allows at most {element.max}"
        yield _error("structure", f"The profile {text} of {what}{where.rsplit('.', 1)[-1]}, "
                     f"found {count}", where)


def _type(element: Element, key: str, at: str) -> Iterator[Issue]:
    if not element.name.endswith("[x]") or not key:
        return
    suffix = key[len(element.name) - 3:]
    if not any(t[:1].upper() + t[1:] == suffix for t in element.types):
        yield _error("structure", f"Type {suffix} is not allowed here: the profile allows "
                     f"{', '.join(element.types)}", at)


def _matches(value: Any, pattern: Any) -> bool:
    """Whether `value` holds everything `pattern` has (elementdefinition.html#pattern)."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(_matches(value.get(k), v) for k, v in pattern.items())
    if isinstance(pattern, list):
        return isinstance(value, list) and all(any(_matches(v, p) for v in value) for p in pattern)
    return bool(value == pattern)


def _at_path(value: Any, path: str) -> Any:
    if path == "$this":
        return value
    for step in path.split("."):
        value = value.get(step) if isinstance(value, dict) else None
    return value


def _codes(value: Any) -> list[tuple[str | None, str]]:
    """(system, code) pairs of a code, Coding or CodeableConcept value."""
    if isinstance(value, str):
        return [(None, value)]
    if not isinstance(value, dict):
        return []
    codings = value.get("coding") if "coding" in value else [value]
    return [(c.get("system"), c["code"]) for c in codings if isinstance(c, dict)
            and isinstance(c.get("code"), str)]


def _binding(binding: tuple[str, str], value: Any, at: str) -> Iterator[Issue]:
    strength, url = binding
    codes = _codes(value)
    members = _members(url)
    if not codes:
        return
    if members is None:
        if strength == "required":  # never a silent pass on a required binding
            yield Issue(code="not-supported", severity="warning", expression=(at,),
                        diagnostics=f"The value set {url} is not held: the code was not checked")
        return
    if any((system, code) in members or (system is None and any(c == code for _, c in members))
           for system, code in codes):
        return
    shown = ", ".join(f"{s}|{c}" if s else c for s, c in codes)
    yield Issue(code="code-invalid", severity="error" if strength == "required" else "warning",
                diagnostics=f"{shown} is not in the value set {url} ({strength} binding)",
                expression=(at,))


def _members(url: str) -> frozenset[tuple[str, str]] | None:
    """The (system, code) pairs of a value set the terminology catalogue holds, or None when
    it holds none or cannot list them (a code system it lacks)."""
    catalogue = load_catalogue()
    value_set = catalogue.resource("ValueSet", url)
    if value_set is None:
        return None
    try:
        return frozenset(membership(catalogue, value_set))
    except FhirError:
        return None


def _target(targets: tuple[str, ...], value: dict[str, Any], at: str) -> Iterator[Issue]:
    reference = value.get("reference")
    if not isinstance(reference, str) or reference.startswith(("#", "urn:")):
        return
    parts = reference.split("/")
    kind = parts[-4] if len(parts) >= 4 and parts[-2] == "_history" else parts[-2] if len(parts) >= 2 else ""
    allowed = {_target_type(t) for t in targets}
    if None in allowed or kind in allowed:
        return
    yield _error("structure", f"A reference to {kind or reference!r} is not allowed here: the "
                 f"profile wants {', '.join(sorted(str(a) for a in allowed))}", f"{at}.reference")


def _target_type(canonical: str) -> str | None:
    if canonical.startswith(_CORE):
        return canonical[len(_CORE):]
    held = definitions().get(canonical)
    return held.type if held else None


def _extension_definition(element: Element, value: dict[str, Any]) -> Definition | None:
    if "Extension" not in element.types:
        return None
    url = element.profiles[0] if element.profiles else value.get("url")
    return definitions().get(url) if isinstance(url, str) else None


def _error(code: str, diagnostics: str, at: str) -> Issue:
    return Issue(code=code, diagnostics=diagnostics, expression=(at,) if at else ())


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:79] + "…"


# --- what we hold ---------------------------------------------------------------------------


def _structure_files() -> Iterator[dict[str, Any]]:
    """The StructureDefinitions we hold: the vendored packages' and our own (profiles/)."""
    for folder in (*(PROFILES_DIR / p for p in PACKAGES), PROFILES_DIR):
        for path in sorted(folder.glob("StructureDefinition-*.json")):
            yield json.loads(path.read_text())


@cache
def _with_snapshots() -> dict[str, dict[str, Any]]:
    """Every StructureDefinition we hold, by URL, a snapshot generated where it has none."""
    raw = {sd["url"]: sd for sd in _structure_files()}
    done: dict[str, dict[str, Any]] = {}

    def resolve(url: str) -> dict[str, Any] | None:
        if url in done:
            return done[url]
        sd = raw.get(url)
        if sd is None:
            return core_structures().get(url)
        done[url] = sd if "snapshot" in sd else generate(sd, resolve)
        return done[url]

    for url in raw:
        resolve(url)
    return done


@cache
def definitions() -> dict[str, Definition]:
    """Every StructureDefinition we hold, by canonical URL, ready to check."""
    return {url: Definition.load(sd) for url, sd in _with_snapshots().items()}


def vendored() -> list[Definition]:
    """The vendored profiles of resources (extensions are checked where they are used)."""
    return [d for d in definitions().values() if d.type != "Extension"]
