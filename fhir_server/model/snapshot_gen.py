"""Snapshot generation for StructureDefinitions that carry only a differential (profiling.html).

A constraint profile's snapshot is its base's snapshot with the differential applied, element by
element in differential order:

- an element the base lists (by id) takes the differential's properties: cardinality, types,
  fixed/pattern values (one replaces the other), binding, slicing; constraints are added to the
  base's;
- a new slice (`Extension.extension:verdict`) is a copy of the element it slices, and of what
  lies below it, inserted after that element's last slice;
- an element below one whose type the base does not unfold (`Group.characteristic.code.coding`)
  makes the parent unfold first: the snapshot of the parent's type (its profile when it names
  one we hold, else the R4 type) is copied below it;
- a type-specific name of a choice (`Extension.valueString`) constrains `value[x]` to that type.

The bases come from the profiles we hold and the R4 resource and data type snapshots shipped in
`data/r4-structures.json.gz` (tests/model/structuregen.py). Only `constraint` derivations are
generated: a specialization defines a new type and must come with its snapshot.
"""

from __future__ import annotations

import copy
import gzip
import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, Final

_DATA: Final = Path(__file__).parent / "data" / "r4-structures.json.gz"
_CORE: Final = "http://hl7.org/fhir/StructureDefinition/"

Resolve = Callable[[str], dict[str, Any] | None]


class SnapshotError(ValueError):
    """A differential that cannot be applied to its base (the message says where)."""


@cache
def core_structures() -> dict[str, dict[str, Any]]:
    """The R4 resource and data type StructureDefinitions (pruned snapshots), by URL."""
    structures: dict[str, dict[str, Any]] = json.loads(gzip.decompress(_DATA.read_bytes()))
    return structures


def generate(sd: dict[str, Any], resolve: Resolve) -> dict[str, Any]:
    """A copy of `sd` with a snapshot built from its base's (`resolve` gives a StructureDefinition
    with a snapshot for a canonical URL, or None). Raises SnapshotError."""
    url = sd.get("url", "?")
    if sd.get("derivation", "constraint") != "constraint":
        raise SnapshotError(f"{url}: only constraint profiles can be generated")
    base = resolve(sd.get("baseDefinition", ""))
    if base is None or "snapshot" not in base:
        raise SnapshotError(f"{url}: its base {sd.get('baseDefinition')} is not held")
    builder = _Builder(copy.deepcopy(base["snapshot"]["element"]), resolve, url)
    for element in sd.get("differential", {}).get("element", []):
        builder.apply(element)
    return {**sd, "snapshot": {"element": builder.elements}}


class _Builder:
    def __init__(self, elements: list[dict[str, Any]], resolve: Resolve, url: str) -> None:
        self.elements = elements
        self.resolve = resolve
        self.url = url

    def apply(self, diff: dict[str, Any]) -> None:
        target = self._locate(_id_of(diff))
        for key, value in diff.items():
            if key in ("id", "path"):
                continue
            if key == "constraint":
                target["constraint"] = [*target.get("constraint", []), *value]
                continue
            if key.startswith(("fixed", "pattern")):
                for old in [k for k in target if k.startswith(("fixed", "pattern"))]:
                    del target[old]
            target[key] = copy.deepcopy(value)

    def _index(self, element_id: str) -> int | None:
        return next((i for i, e in enumerate(self.elements) if e["id"] == element_id), None)

    def _locate(self, element_id: str) -> dict[str, Any]:
        at = self._index(element_id)
        if at is not None:
            return self.elements[at]
        if "." not in element_id:
            raise SnapshotError(f"{self.url}: {element_id} is not the base's root")
        parent_id, step = element_id.rsplit(".", 1)
        name, _, slice_name = step.partition(":")
        if slice_name:
            return self._new_slice(f"{parent_id}.{name}", slice_name)
        parent = self._locate(parent_id)
        if not self._has_children(parent_id):
            self._unfold(parent)
        at = self._index(element_id)
        if at is not None:
            return self.elements[at]
        choice = self._choice_for(parent_id, name)
        if choice is None:
            raise SnapshotError(f"{self.url}: {element_id} is not in its base")
        return choice

    def _choice_for(self, parent_id: str, name: str) -> dict[str, Any] | None:
        """`value[x]` narrowed to the type `valueString` names, or None if `name` names none."""
        for element in self.elements:
            step = element["id"].rsplit(".", 1)[-1]
            if not (element["id"].startswith(parent_id + ".") and step.endswith("[x]")):
                continue
            base = step[:-3]
            suffix = name[len(base):] if name.startswith(base) else ""
            types = [t for t in element.get("type", [])
                     if suffix and t["code"][:1].upper() + t["code"][1:] == suffix]
            if element["id"] == f"{parent_id}.{step}" and types:
                element["type"] = types
                return element
        return None

    def _has_children(self, element_id: str) -> bool:
        return any(e["id"].startswith(element_id + ".") for e in self.elements)

    def _end_of(self, at: int) -> int:
        """The index after the element at `at`, its children and its slices (with theirs)."""
        element_id = self.elements[at]["id"]
        end = at + 1
        while end < len(self.elements) and self.elements[end]["id"].startswith(
                (element_id + ".", element_id + ":")):
            end += 1
        return end

    def _new_slice(self, sliced_id: str, slice_name: str) -> dict[str, Any]:
        sliced = self._locate(sliced_id)
        at = self.elements.index(sliced)
        end = self._end_of(at)
        below = [e for e in self.elements[at + 1:end] if e["id"].startswith(sliced_id + ".")]
        new_id = f"{sliced_id}:{slice_name}"
        head = {k: copy.deepcopy(v) for k, v in sliced.items() if k != "slicing"}
        head.update(id=new_id, sliceName=slice_name)
        copies = [head, *(_moved(e, sliced_id, new_id, sliced["path"], sliced["path"])
                          for e in below)]
        self.elements[end:end] = copies
        return head

    def _unfold(self, parent: dict[str, Any]) -> None:
        types = parent.get("type", [])
        if "contentReference" in parent:
            source_id = parent["contentReference"].partition("#")[2]
            source_path = next(e["path"] for e in self.elements if e["id"] == source_id)
            below = [e for e in self.elements if e["id"].startswith(source_id + ".")]
        elif len(types) == 1:
            structure = self._type_structure(types[0])
            root = structure["snapshot"]["element"][0]
            source_id, source_path = root["id"], root["path"]
            below = structure["snapshot"]["element"][1:]
        else:
            raise SnapshotError(f"{self.url}: cannot constrain below {parent['id']}, which has "
                                f"{len(types)} types")
        at = self.elements.index(parent)
        self.elements[at + 1:at + 1] = [
            _moved(e, source_id, parent["id"], source_path, parent["path"]) for e in below]

    def _type_structure(self, type_: dict[str, Any]) -> dict[str, Any]:
        for canonical in [*type_.get("profile", []), _CORE + type_["code"]]:
            structure = self.resolve(canonical)
            if structure is not None and "snapshot" in structure:
                return structure
        raise SnapshotError(f"{self.url}: the type {type_['code']} is not held")


def _moved(element: dict[str, Any], old_id: str, new_id: str, old_path: str, new_path: str) -> dict[str, Any]:
    moved = copy.deepcopy(element)
    moved["id"] = new_id + element["id"][len(old_id):]
    moved["path"] = new_path + element["path"][len(old_path):]
    return moved


def _id_of(diff: dict[str, Any]) -> str:
    if "id" in diff:
        return str(diff["id"])
    path = str(diff["path"])
    return f"{path}:{diff['sliceName']}" if "sliceName" in diff else path
