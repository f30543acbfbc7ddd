"""Snapshot-driven profile validation (profiling.html, elementdefinition.html).

A StructureDefinition's snapshot is read into elements by id; a resource is walked along the
elements the snapshot lists, each checked for cardinality, type (choice elements), fixed and
pattern values, bindings (required → error, extensible → warning) against the value sets we
hold, reference target types, invariants (model/invariants.py), and slicing (value, pattern,
exists, type and profile discriminators, on paths of several steps through lists and through
`resolve()`; a slicing without discriminator matches a value to the first slice it conforms
to; open or closed; re-slicing). Extensions are checked against their definitions
when we hold them. What the snapshot does not expand (a datatype's own elements) is left to the
R4 schema layer, which already ran. Profiles given as a differential only get their snapshot
generated at load (model/snapshot_gen.py).

docs/validation.md, "Profiles", lists what is held and checked, and what is not.
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
    # Read from the above once, at load, rather than for every value checked:
    choice: bool = False  # `value[x]`: a value's type is in its JSON key
    extension: bool = False  # typed Extension
    label: str = ""  # the name as FHIRPath says it: `value` for `value[x]`
    suffixes: frozenset[str] = frozenset()  # a choice's JSON key endings: `String` for `valueString`
    shadow: str = ""  # `_name`: where a primitive's id and extensions are (json.html#primitive)
    holds: invariants.Test | None = None  # all `invariants` hold: a quick test, when there is one


def _element(raw: dict[str, Any]) -> Element:
    step = raw["id"].rsplit(".", 1)[-1]
    name, _, slice_name = step.partition(":")
    types = raw.get("type", [])
    fixed = next((v for k, v in raw.items() if k.startswith("fixed")), None)
    pattern = next((v for k, v in raw.items() if k.startswith("pattern")), None)
    binding = raw.get("binding", {})
    slicing = raw.get("slicing")
    declared = invariants.of(raw)
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
        invariants=declared, holds=invariants.quick_test(declared), choice=name.endswith("[x]"),
        extension="Extension" in (t["code"] for t in types), label=_base(name), shadow=f"_{name}",
        suffixes=frozenset(t["code"][:1].upper() + t["code"][1:] for t in types),
    )


@dataclass
class Definition:
    """A StructureDefinition with a snapshot, ready to check resources (or extensions).

    What a slice's discriminators expect (the values a pattern or fixed value gives at the
    discriminator's path, the types, the element) depends on the snapshot only: it is worked
    out on first use and kept in `_discriminating`, with the definition, so that a definition
    loaded again (another snapshot) starts afresh."""

    url: str
    version: str | None
    type: str
    root: str
    root_invariants: tuple[Invariant, ...] = ()
    children: dict[str, list[Element]] = field(default_factory=dict)  # by parent element id
    slices: dict[str, list[Element]] = field(default_factory=dict)  # by sliced element id
    _discriminating: dict[tuple[str, str, str], Any] = field(
        default_factory=dict, init=False, repr=False, compare=False)  # by (slice id, type, path)
    _root_holds: invariants.Test | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._root_holds = invariants.quick_test(self.root_invariants)

    @classmethod
    def load(cls, sd: dict[str, Any]) -> Definition:
        elements = [_element(e) for e in sd["snapshot"]["element"]]
        definition = cls(sd["url"], sd.get("version"), sd["type"], elements[0].id,
                         elements[0].invariants)
        for e in elements[1:]:
            parent = e.id[: -len(e.id.rsplit(".", 1)[-1]) - 1]
            if e.slice_name:
                # A re-slice (`component:bp/systolic`) belongs to its slice (`component:bp`).
                within, _, _ = e.slice_name.rpartition("/")
                sliced = f"{parent}.{e.name}" + (f":{within}" if within else "")
                definition.slices.setdefault(sliced, []).append(e)
            else:
                definition.children.setdefault(parent, []).append(e)
        return definition

    def check(self, resource: dict[str, Any], prefix: str) -> list[Issue]:
        """What `resource` (at FHIRPath `prefix`) breaks in this profile."""
        found = invariants.check(self.root_invariants, resource, resource, prefix, self.type)
        self._node(resource, self.root, prefix, resource, found)
        return found

    # The walk appends what it finds to `out` (no generator per value: a study has ~150).

    def _node(self, node: dict[str, Any], element_id: str, where: str,
              resource: dict[str, Any], out: list[Issue]) -> None:
        for element in self.children.get(element_id, ()):
            name = element.name
            if not element.choice and element.shadow not in node:
                if name not in node:
                    # Absent (most elements of a profile are): only cardinalities can be broken.
                    if element.min or element.id in self.slices:
                        _cardinality(element, 0, f"{where}.{name}", out)
                        for piece in self.slices.get(element.id, ()):
                            _cardinality(piece, 0, f"{where}.{name}", out, piece.slice_name)
                    continue
                if element.id not in self.slices:
                    # Most present elements: what `_values` and `_sliced` do, without their lists.
                    self._unsliced(element, node[name], f"{where}.{name}", resource, out)
                    continue
            values = _values(node, element, where)
            label = f"{where}.{element.label}"
            _cardinality(element, len(values), label, out)
            self._sliced(element, values, label, resource, out)

    def _unsliced(self, element: Element, value: Any, label: str, resource: dict[str, Any],
                  out: list[Issue]) -> None:
        """The value (or list of values) of an element neither sliced nor a choice, given
        without a primitive's extensions (`_name`), at FHIRPath `label`."""
        if isinstance(value, list):
            _cardinality(element, len(value), label, out)
            for i, item in enumerate(value):
                self._value(element, element.name, item, f"{label}[{i}]", resource, out)
        else:
            _cardinality(element, 1, label, out)
            self._value(element, element.name, value, label, resource, out)

    def _sliced(self, element: Element, values: list[tuple[str, Any, str]], label: str,
                resource: dict[str, Any], out: list[Issue]) -> None:
        """The values of `element` (a sliced element, a slice re-sliced, or neither), each
        checked against the slice it belongs to, or `element` when none; each slice's
        cardinality; the values of a re-sliced slice are sliced again among its re-slices."""
        slices = self.slices.get(element.id)
        if not slices:
            for key, value, at in values:
                self._value(element, key, value, at, resource, out)
            return
        members: dict[str, list[tuple[str, Any, str]]] = {piece.id: [] for piece in slices}
        for key, value, at in values:
            piece, decided = self._slice_of(key, value, element, slices, resource)
            if not decided:
                out.append(Issue(code="not-supported", severity="warning", expression=(at,),
                                 diagnostics=f"{at}: which slice it belongs to depends on a resource "
                                 "it references that is not contained: not checked against a slice"))
            elif piece is None and element.closed:
                out.append(_error("structure", f"{at} matches none of the slices of a closed "
                                  f"slicing ({', '.join(str(s.slice_name) for s in slices)})", at))
            if piece is None:
                self._value(element, key, value, at, resource, out)
            else:
                members[piece.id].append((key, value, at))
        for piece in slices:
            _cardinality(piece, len(members[piece.id]), label, out, piece.slice_name)
            if members[piece.id]:
                self._sliced(piece, members[piece.id], label, resource, out)

    def _value(self, element: Element, key: str, value: Any, at: str,
               resource: dict[str, Any], out: list[Issue]) -> None:
        if element.choice and key:
            _type(element, key, at, out)
        if value is None:
            return  # a primitive's extensions alone: nothing to compare
        if element.invariants and (element.holds is None or not element.holds(value, resource)):
            out.extend(invariants.check(element.invariants, value, resource, at,
                                        lambda: _fhirpath_type(element, key)))
        if element.fixed is not None and value != element.fixed:
            out.append(_error("value", f"Expected the fixed value {_show(element.fixed)}", at))
        if element.pattern is not None and not _matches(value, element.pattern):
            out.append(_error("value", f"Expected a value matching {_show(element.pattern)}", at))
        if element.binding is not None and (broken := _binding(element.binding, value, at)) is not None:
            out.append(broken)
        if not isinstance(value, dict):
            return
        if element.targets and (broken := _target(element.targets, value, at)) is not None:
            out.append(broken)
        if element.id in self.children:
            self._node(value, element.id, at, resource, out)
        if not element.extension:
            return
        extension = _extension_definition(element, value)
        if extension is None and _unknown_in_held_namespace(element, value):
            out.append(Issue(code="not-found", severity="warning", expression=(at,),
                             diagnostics=f"{at}: unknown extension {value['url']} (misspelled?): no "
                             "definition of that name among those held for its namespace; not checked"))
        if extension is not None and extension is not self:
            if extension._root_holds is None or not extension._root_holds(value, resource):
                out.extend(invariants.check(extension.root_invariants, value, resource, at, "Extension"))
            extension._node(value, extension.root, at, resource, out)

    def _slice_of(self, key: str, value: Any, sliced: Element, slices: list[Element],
                  resource: dict[str, Any]) -> tuple[Element | None, bool]:
        """The slice of `sliced` that `value` (under JSON `key`) belongs to, by the slicing's
        discriminators (or, with none, the first slice it conforms to); and False when that
        cannot be decided (a discriminator through a reference not contained)."""
        index = self._index(sliced, slices)
        if index is not None:
            kind, path = sliced.discriminators[0]
            if kind == "type":  # at `$this`: the value's own type
                hit = index.get(_type_of(sliced, key, value, _THIS))
                return (None if hit is None else hit[1]), True
            steps = _steps(path)
            if len(steps) == 1 and steps[0].isidentifier() and value.__class__ is dict:
                # One name (`url`, not `$this` or a function): what `_collect` finds when it
                # holds a primitive.
                one = value.get(steps[0])
                if one.__class__ in _PRIMITIVES:
                    hit = index.get(one)
                    return (None if hit is None else hit[1]), True
            return _indexed(index, _collect([(key, value)], steps, resource))
        decided = True
        for piece in slices:
            inside = self._in_slice(sliced, piece, key, value, resource)
            if inside:
                return piece, True
            decided = decided and inside is not None
        return None, decided

    def _in_slice(self, sliced: Element, piece: Element, key: str, value: Any,
                  resource: dict[str, Any]) -> bool | None:
        """Whether `value` is in slice `piece`; None when it cannot be told."""
        if not sliced.discriminators:
            found_issues: list[Issue] = []
            self._value(piece, key, value, "", {}, found_issues)
            return not any(i.severity == "error" for i in found_issues)
        for kind, path in sliced.discriminators:
            steps = _steps(path)
            found = _collect([(key, value)], steps, resource)
            if found is None:
                return None
            wants = self._wants(piece, kind, path)
            if kind == "type":
                if not any(_type_of(sliced, k, v, steps) in wants for k, v in found):
                    return False
                continue
            if any(isinstance(v, _Elsewhere) for _, v in found):
                return None  # only its type is known
            if kind == "exists":
                if bool(found) != wants:
                    return False
                continue
            if kind == "profile":
                if not any(_conforms(v, wants, "resolve()" in steps) for _, v in found):
                    return False
                continue
            if wants is None or not found:
                return False
            wanted, exact = wants
            if not all(any(v == w if exact else _matches(v, w) for _, v in found) for w in wanted):
                return False
        return True

    def _index(self, sliced: Element, slices: list[Element]) -> dict[Any, tuple[int, Element]] | None:
        """For a slicing by one value or pattern discriminator (no `resolve()`) where every
        slice wants one primitive value there (extensions by `url`): each value with the
        first slice that wants it, so that a value finds its slice in one look-up; for one
        by type at `$this` (a choice's types), each type with the first slice allowing it.
        None for any other slicing (each slice is then tried in turn)."""
        memo = (sliced.id, "index", "")
        if memo not in self._discriminating:
            self._discriminating[memo] = self._value_index(sliced, slices)
        index: dict[Any, tuple[int, Element]] | None = self._discriminating[memo]
        return index

    def _value_index(self, sliced: Element, slices: list[Element]) -> dict[Any, tuple[int, Element]] | None:
        if len(sliced.discriminators) != 1:
            return None
        kind, path = sliced.discriminators[0]
        index: dict[Any, tuple[int, Element]] = {}
        if kind == "type" and _steps(path) == _THIS:
            for n, piece in enumerate(slices):
                for wanted in self._wants(piece, kind, path):
                    index.setdefault(wanted, (n, piece))
            return index
        if kind not in ("value", "pattern") or "resolve()" in _steps(path):
            return None
        for n, piece in enumerate(slices):
            wants = self._wants(piece, kind, path)
            if wants is None:
                continue  # it wants nothing there: no value is in it
            wanted, _ = wants
            if len(wanted) != 1 or wanted[0].__class__ not in _PRIMITIVES:
                return None
            index.setdefault(wanted[0], (n, piece))
        return index

    def _wants(self, piece: Element, kind: str, path: str) -> Any:
        """What slice `piece` wants at a discriminator (`kind`, `path`), from the snapshot
        alone, worked out once: the types (type), whether present (exists), the element
        whose profiles a value must conform to (profile), the values and whether exactly
        (value, pattern)."""
        memo = (piece.id, kind, path)
        if memo not in self._discriminating:
            steps = _steps(path)
            if kind == "type":
                wants: Any = self._types_at(piece, steps)
            elif kind == "exists":
                child = self._element_at(piece, steps)
                wants = child is not None and child.min >= 1
            elif kind == "profile":
                wants = self._element_at(piece, steps)
            else:
                wants = self._expected(piece, steps)
            self._discriminating[memo] = wants
        return self._discriminating[memo]

    def _child(self, parent_id: str, step: str) -> Element | None:
        """The element below `parent_id` that a discriminator path's step names: an element
        by name (a choice by its base name), or `extension('url')`, the extension slice typed
        with that definition."""
        if step.startswith("extension(") and step.endswith(")"):
            url = step[len("extension("):-1].strip("'\"")
            return next((e for e in self.slices.get(f"{parent_id}.extension", ()) if url in e.profiles), None)
        return next((e for e in self.children.get(parent_id, ()) if _base(e.name) == step), None)

    def _element_at(self, piece: Element, steps: tuple[str, ...]) -> Element | None:
        """The element of slice `piece` at a discriminator path (up to a `resolve()`: the
        reference's element)."""
        element: Element | None = piece
        for step in steps:
            if step == "resolve()" or element is None:
                break
            if step != "$this" and not step.startswith("ofType("):
                element = self._child(element.id, step)
        return element

    def _types_at(self, piece: Element, steps: tuple[str, ...]) -> set[str | None]:
        """The types a slice allows at a type discriminator's path: through `resolve()`, the
        resource types of the reference's target profiles."""
        element = self._element_at(piece, steps)
        if element is None:
            return set()
        if "resolve()" in steps:
            return {_target_type(t) for t in element.targets} - {None}
        return set(_type_names(element))

    def _expected(self, piece: Element, steps: tuple[str, ...]) -> tuple[list[Any], bool] | None:
        """The values slice `piece` fixes at a discriminator path, and whether exactly (a
        fixed value) or as a pattern: the fixed or pattern value of the element at the path,
        or the part at the path of such a value above it; for `url`, the canonical of the
        extension definition the slice is typed with; through `resolve()`, what the
        reference's target profile fixes."""
        element = piece
        for n, step in enumerate(steps):
            if step == "$this" or step.startswith("ofType("):
                continue
            if element.fixed is not None or element.pattern is not None:
                return _part(element, steps[n:])
            if step == "resolve()":
                target = definitions().get(element.targets[0]) if element.targets else None
                return target._expected_below(steps[n + 1:]) if target is not None else None
            if step == "url" and n == len(steps) - 1 and element.profiles and "Extension" in element.types:
                return [element.profiles[0]], True
            child = self._child(element.id, step)
            if child is None:
                return None
            element = child
        return _part(element, [])

    def _expected_below(self, steps: tuple[str, ...]) -> tuple[list[Any], bool] | None:
        """`_expected` from this profile's root (a reference's target)."""
        root = Element(id=self.root, path=self.root, name=self.root, slice_name=None, min=0,
                       max=None, types=(self.type,), profiles=(), targets=())
        return self._expected(root, steps)


@dataclass(frozen=True, slots=True)
class _Elsewhere:
    """A resource a reference names that is not at hand (not contained): only its type is
    known, from the reference."""

    type: str | None


@cache  # a handful of paths, split for every value sliced
def _steps(path: str) -> tuple[str, ...]:
    """The steps of a discriminator path (a restricted FHIRPath: names, `$this`,
    `resolve()`, `extension('url')`, `ofType(type)`), split on the dots outside parentheses."""
    steps, depth, start = [], 0, 0
    for i, char in enumerate(path):
        depth += char == "("
        depth -= char == ")"
        if char == "." and depth == 0:
            steps.append(path[start:i])
            start = i + 1
    steps.append(path[start:])
    return tuple(step for step in steps if step)


_PRIMITIVES: Final = (str, int, float, bool)
_THIS: Final = ("$this",)


def _indexed(index: dict[Any, tuple[int, Element]],
             found: list[tuple[str, Any]] | None) -> tuple[Element | None, bool]:
    """`Definition._slice_of` by a value index: the first slice (in the profile's order) that
    wants one of the values `found` at the discriminator's path; undecided when the path
    met a local reference to nothing contained."""
    if found is None:
        return None, False
    hits = [index[v] for _, v in found if v.__class__ in _PRIMITIVES and v in index]
    return (min(hits, key=lambda hit: hit[0])[1], True) if hits else (None, True)


def _collect(items: list[tuple[str, Any]], steps: tuple[str, ...],
             resource: dict[str, Any]) -> list[tuple[str, Any]] | None:
    """The values (with their JSON keys) at a discriminator path from `items`, every item of
    a list along the way (FHIRPath collections); None when a `resolve()` meets a local
    reference (`#id`) that names nothing contained."""
    for step in steps:
        if step == "$this":
            continue
        found: list[tuple[str, Any]] = []
        for key, value in items:
            if isinstance(value, _Elsewhere):
                found.append((key, value))  # what lies below it is not known
            elif step == "resolve()":
                target = _resolve(value, resource)
                if target is None:
                    return None
                found.append(("", target))
            elif step.startswith("ofType(") and step.endswith(")"):
                wanted = step[len("ofType("):-1]
                if key.endswith(wanted[:1].upper() + wanted[1:]) or (
                        isinstance(value, dict) and value.get("resourceType") == wanted):
                    found.append((key, value))
            elif isinstance(value, dict) and step.startswith("extension("):
                url = step[len("extension("):-1].strip("'\"")
                found += [("extension", e) for e in value.get("extension", [])
                          if isinstance(e, dict) and e.get("url") == url]
            elif isinstance(value, dict):
                keys = [step] if step in value else [
                    k for k in value if k.startswith(step) and k[len(step):][:1].isupper()]
                for k in keys:
                    found += [(k, v) for v in value[k]] if isinstance(value[k], list) else [(k, value[k])]
        items = found
    return items


def _resolve(reference: Any, resource: dict[str, Any]) -> Any:
    """The resource a Reference names: a contained one (`#id`), or for any other an
    `_Elsewhere` of the type the reference gives; None for `#id` naming nothing contained."""
    if not isinstance(reference, dict):
        return _Elsewhere(None)
    literal = reference.get("reference")
    if isinstance(literal, str) and literal.startswith("#"):
        return next((c for c in resource.get("contained", [])
                     if isinstance(c, dict) and c.get("id") == literal[1:]), None)
    kind = _reference_type(literal) if isinstance(literal, str) else None
    return _Elsewhere(kind or reference.get("type"))


def _part(element: Element, steps: tuple[str, ...]) -> tuple[list[Any], bool] | None:
    """What the fixed or pattern value of `element` holds at `steps` below it."""
    value = element.fixed if element.fixed is not None else element.pattern
    if value is None:
        return None
    found = _collect([("", value)], steps, {})
    return ([v for _, v in found], element.fixed is not None) if found else None


def _fhirpath_type(element: Element, key: str) -> str:
    """What a value of `element` (under JSON `key`) is typed as for FHIRPath: its data type
    (a choice's from the key), or the element's path for a backbone element."""
    if element.name.endswith("[x]") and key:
        return key[len(element.name) - 3:]
    if len(element.types) == 1 and element.types[0][:1].isupper() and element.types[0] not in (
            "BackboneElement", "Element"):
        return element.types[0]
    return element.path.replace("[x]", "")


def _type_of(sliced: Element, key: str, value: Any, steps: tuple[str, ...]) -> str | None:
    """The FHIR type of a value at a type discriminator's path: a resource's `resourceType`
    (or the type a reference gives), a choice's type from its JSON key (`valueQuantity`),
    else, at `$this`, the sliced element's one declared type."""
    if isinstance(value, _Elsewhere):
        return value.type
    if isinstance(value, dict) and isinstance(value.get("resourceType"), str):
        return str(value["resourceType"])
    named = [s for s in steps if s != "$this"]
    if named:
        last = named[-1]
        return key[len(last):].lower() if key != last and key.startswith(last) else None
    if sliced.name.endswith("[x]") and key:
        return key[len(sliced.name) - 3:].lower()
    return sliced.types[0].lower() if len(sliced.types) == 1 else None


def _type_names(element: Element | None) -> set[str | None]:
    if element is None:
        return set()
    # Resource types keep their case; data types compare without it (`Quantity` vs `quantity`).
    return {t for t in element.types} | {t.lower() for t in element.types}


def _conforms(value: Any, element: Element | None, referenced: bool = False) -> bool:
    """Whether `value` conforms to one of the profiles the element's type names (profile
    discriminator); `referenced`: the target profiles of a reference's element."""
    if element is None or not isinstance(value, dict):
        return False
    held = [definitions().get(p) for p in (element.targets if referenced else element.profiles)]
    return any(d is not None and not any(i.severity == "error" for i in d.check(value, ""))
               for d in held)


def _base(name: str) -> str:
    return name.removesuffix("[x]")


def _values(node: dict[str, Any], element: Element, where: str) -> list[tuple[str, Any, str]]:
    """(JSON key, value, FHIRPath) of each value of `element` in `node`."""
    name = element.name
    if element.choice:
        base, cut = element.label, len(element.label)
        keys = [k for k in node if k.startswith(base) and k[cut:cut + 1].isupper()]
    else:
        keys = [name] if name in node or f"_{name}" in node else []
    found = []
    for key in keys:
        # A primitive given by its extensions only (`_status`) counts, with no value to check.
        value = node.get(key)
        if value is None and isinstance(node.get(f"_{key}"), list):
            value = [None] * len(node[f"_{key}"])
        if isinstance(value, list):
            found += [(key, item, f"{where}.{key}[{i}]") for i, item in enumerate(value)]
        else:
            found.append((key, value, f"{where}.{key}"))
    return found


def _cardinality(element: Element, count: int, where: str, out: list[Issue],
                 slice_name: str | None = None) -> None:
    if element.min <= count and (element.max is None or count <= element.max):
        return
    what = f"slice '{slice_name}' of " if slice_name else ""
    if count < element.min:
        out.append(_error("required", f"The profile wants at least {element.min} of {what}"
                          f"{where.rsplit('.', 1)[-1]}, found {count}", where))
    if element.max is not None and count > element.max:
        text = "allows none" if element.max == 0 else f"allows at most {element.max}"
        out.append(_error("structure", f"The profile {text} of {what}{where.rsplit('.', 1)[-1]}, "
                          f"found {count}", where))


def _type(element: Element, key: str, at: str, out: list[Issue]) -> None:
    """Whether the type a choice element's value has (by its key) is one the element allows."""
    suffix = key[len(element.label):]
    if suffix not in element.suffixes:
        out.append(_error("structure", f"Type {suffix} is not allowed here: the profile allows "
                          f"{', '.join(element.types)}", at))


def _matches(value: Any, pattern: Any) -> bool:
    """Whether `value` holds everything `pattern` has (elementdefinition.html#pattern)."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(_matches(value.get(k), v) for k, v in pattern.items())
    if isinstance(pattern, list):
        return isinstance(value, list) and all(any(_matches(v, p) for v in value) for p in pattern)
    return bool(value == pattern)


def _codes(value: Any) -> list[tuple[str | None, str]]:
    """(system, code) pairs of a code, Coding or CodeableConcept value."""
    if isinstance(value, str):
        return [(None, value)]
    if not isinstance(value, dict):
        return []
    codings = value.get("coding") if "coding" in value else [value]
    return [(c.get("system"), c["code"]) for c in codings if isinstance(c, dict)
            and isinstance(c.get("code"), str)]


def _binding(binding: tuple[str, str], value: Any, at: str) -> Issue | None:
    strength, url = binding
    codes = _codes(value)
    if not codes:
        return None
    members = _members(url)
    if members is None:
        if strength == "required":  # never a silent pass on a required binding
            return Issue(code="not-supported", severity="warning", expression=(at,),
                         diagnostics=f"The value set {url} is not held: the code was not checked")
        return None
    pairs, bare = members
    for system, code in codes:  # a loop, not any(): bindings are checked at every coded value
        if (system, code) in pairs or (system is None and code in bare):
            return None
    shown = ", ".join(f"{s}|{c}" if s else c for s, c in codes)
    return Issue(code="code-invalid", severity="error" if strength == "required" else "warning",
                 diagnostics=f"{shown} is not in the value set {url} ({strength} binding)",
                 expression=(at,))


@cache  # the catalogue does not change while serving (load_catalogue): once per value set
def _members(url: str) -> tuple[frozenset[tuple[str, str]], frozenset[str]] | None:
    """The (system, code) pairs of a value set the terminology catalogue holds, and their
    codes alone (what a bare `code` is looked up in); None when it holds none or cannot list
    them (a code system it lacks)."""
    catalogue = load_catalogue()
    value_set = catalogue.resource("ValueSet", url)
    if value_set is None:
        return None
    try:
        pairs = frozenset(membership(catalogue, value_set))
    except FhirError:
        return None
    return pairs, frozenset(code for _, code in pairs)


def _target(targets: tuple[str, ...], value: dict[str, Any], at: str) -> Issue | None:
    reference = value.get("reference")
    if not isinstance(reference, str) or reference.startswith(("#", "urn:")):
        return None
    kind = _reference_type(reference) or ""
    allowed = _target_types(targets)
    if None in allowed or kind in allowed or "Resource" in allowed:  # Reference(Any)
        return None
    return _error("structure", f"A reference to {kind or reference!r} is not allowed here: the "
                 f"profile wants {', '.join(sorted(str(a) for a in allowed))}", f"{at}.reference")


def _reference_type(reference: str) -> str | None:
    """The resource type a literal reference names (`Type/id`, absolute, versioned)."""
    if reference.startswith(("#", "urn:")):
        return None
    parts = reference.split("/")
    return parts[-4] if len(parts) >= 4 and parts[-2] == "_history" else parts[-2] if len(parts) >= 2 else None


@cache  # the definitions held do not change while serving: once per element's targets
def _target_types(targets: tuple[str, ...]) -> frozenset[str | None]:
    return frozenset(_target_type(t) for t in targets)


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


def _unknown_in_held_namespace(element: Element, value: dict[str, Any]) -> bool:
    """An extension no slice types, whose URL names no definition held but lies where some
    held extensions do (ECLAIRE's, the R5 cross-version ones): a misspelling, most likely."""
    url = value.get("url")
    return ("Extension" in element.types and not element.profiles and isinstance(url, str)
            and url.rpartition("/")[0] in _extension_namespaces())


@cache
def _extension_namespaces() -> frozenset[str]:
    return frozenset(url.rpartition("/")[0] for url, d in definitions().items()
                     if d.type == "Extension")


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
