"""Resource types and ids (FHIR R4 resourcelist.html, datatypes.html#id), the shipped schema,
and which R4 types the fhir.resources R4B models may validate (R4B agreement).

When the agreement test fails after a fhir.resources upgrade, rewrite the shipped list with
`.venv/bin/python -m tests.model.test_types` and review the change.
"""

from __future__ import annotations

import gzip
import importlib
import pkgutil
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server.model.types import (
    R4B_ONLY_TYPES,
    RESOURCE_TYPES,
    is_resource_type,
    is_valid_id,
)

R4 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "fhir-r4"
DATA = Path(__file__).resolve().parents[2] / "fhir_server" / "model" / "data"


@cache
def official_schema() -> dict[str, Any]:
    return orjson.loads((R4 / "fhir.schema.json").read_bytes())  # type: ignore[no-any-return]


def test_shipped_schema_is_the_official_file_unchanged() -> None:
    shipped = gzip.decompress((DATA / "fhir.schema.json.gz").read_bytes())
    assert shipped == (R4 / "fhir.schema.json").read_bytes()


def test_resource_types_are_the_146_of_the_shipped_schema() -> None:
    shipped = orjson.loads(gzip.decompress((DATA / "fhir.schema.json.gz").read_bytes()))
    assert set(shipped["discriminator"]["mapping"]) == RESOURCE_TYPES
    assert len(RESOURCE_TYPES) == 146


def test_r4b_only_types_are_those_r4b_adds() -> None:
    from fhir.resources import R4B
    from fhir_core.fhirabstractmodel import FHIRAbstractModel

    r4b_types = set()
    for module in pkgutil.iter_modules(R4B.__path__):
        for value in vars(importlib.import_module(f"{R4B.__name__}.{module.name}")).values():
            model = isinstance(value, type) and issubclass(value, FHIRAbstractModel)
            if model and value.has_resource_base():
                r4b_types.add(value.get_resource_type())
    abstract = {"Resource", "DomainResource"}
    assert r4b_types - RESOURCE_TYPES - abstract == R4B_ONLY_TYPES


@pytest.mark.parametrize(
    ("name", "known"),
    [
        ("Patient", True),
        ("MedicinalProduct", True),  # R4 only
        ("SubscriptionTopic", False),  # R4B only
        ("patient", False),
        ("Resource", False),  # abstract
        ("", False),
    ],
)
def test_is_resource_type(name: str, known: bool) -> None:
    assert is_resource_type(name) is known


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("example", True),
        ("a.B-9", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("", False),
        ("a b", False),
        ("a_b", False),
        ("abc\n", False),
        ("é", False),
        ("a/b", False),
        ("..", False),  # dot-segments: clients remove them from URLs
        (".", False),
        ("...", True),
    ],
)
def test_is_valid_id(value: str, valid: bool) -> None:
    assert is_valid_id(value) is valid


# --- R4B agreement: which R4 types the R4B models may validate -----------------------------
#
# A type agrees when, over every definition it reaches (datatypes and backbone elements, not
# through contained resources, which are checked one by one at run time):
# - each element both have has the same cardinality and the same type (recursively);
# - R4B requires no element that R4 leaves optional (R4's minimum comes from the
#   StructureDefinitions, since the schema does not mark required primitives);
# - each R4 element exists in R4B, except two tolerated kinds: `_x` siblings (R4B has none for
#   Extension.value[x] and Extension.url; the model layer drops those errors), and a
#   `modifierExtension` the schema allows where R4 itself defines none (R4B is right there).
# Elements only R4B has are ignored: the schema layer rejects them before the models run.


class R4Structure:
    """R4 elements from the official schema, minimum cardinalities from the definitions."""

    def __init__(self) -> None:
        self.defs: dict[str, Any] = official_schema()["definitions"]
        self.primitives = {n for n, d in self.defs.items() if "properties" not in d}
        self.min: dict[str, int] = {}
        self.content_ref: dict[str, str] = {}  # Bundle.entry.link -> Bundle.link
        for bundle in ("profiles-resources.json", "profiles-types.json"):
            for entry in orjson.loads((R4 / bundle).read_bytes())["entry"]:
                definition = entry["resource"]
                if definition["resourceType"] == "StructureDefinition":
                    for element in definition["snapshot"]["element"]:
                        self.min[element["path"]] = element["min"]
                        if "contentReference" in element:
                            self.content_ref[element["path"]] = element["contentReference"][1:]

    def element(self, name: str, node: dict[str, Any]) -> tuple[bool, str]:
        """(repeats, type name) of one schema property."""
        many = node.get("type") == "array"
        item = node["items"] if many else node
        if "$ref" in item:
            return many, item["$ref"].rsplit("/", 1)[1]
        if "enum" in item:
            return many, "code"
        # Primitive choice elements are inlined: valueDateTime is a dateTime.
        suffixes = (p for p in self.primitives if name.endswith(p[0].upper() + p[1:]))
        return many, max(suffixes, key=len)


def r4b_element(annotation: Any) -> tuple[bool, Any]:
    """(repeats, model class or primitive name) of one R4B model field."""
    from fhir_core.types import FHIR_PRIMITIVES_MAPS, FhirBase  # type: ignore[attr-defined]

    many, inner = False, annotation
    while True:
        origin, args = typing.get_origin(inner), typing.get_args(inner)
        if origin in (typing.Union, types.UnionType):
            (inner,) = [a for a in args if a is not type(None)]
        elif origin is list:
            many, inner = True, args[0]
        else:
            break
    if isinstance(inner, type) and issubclass(inner, FhirBase):
        return many, inner.get_model_klass()
    if inner in FHIR_PRIMITIVES_MAPS:
        return many, FHIR_PRIMITIVES_MAPS[inner]
    metadata = (type(m) for m in typing.get_args(inner)[1:])
    return many, next(FHIR_PRIMITIVES_MAPS[m] for m in metadata if m in FHIR_PRIMITIVES_MAPS)


# `_x` is typed Element in the R4 schema; fhir.resources names that model differently.
_R4B_NAMES = {"Element": "FHIRPrimitiveExtension"}


class Agreement:
    """Differences between R4 (schema) and R4B (fhir.resources models), per resource type."""

    def __init__(self) -> None:
        self.r4 = R4Structure()
        self.local: dict[tuple[str, type], list[str]] = {}
        self.deps: dict[tuple[str, type], set[tuple[str, type]]] = {}

    def differences(self, resource_type: str) -> list[str]:
        from fhir.resources.R4B import get_fhir_model_class

        try:
            model = get_fhir_model_class(resource_type)
        except ValueError:
            return ["no such type in R4B"]
        self._compare(resource_type, model, resource_type)
        found, seen, todo = set(), set(), [(resource_type, model)]
        while todo:
            key = todo.pop()
            if key not in seen:
                seen.add(key)
                found.update(self.local[key])
                todo.extend(self.deps[key])
        return sorted(found)

    def _compare(self, name: str, model: Any, path: str) -> None:
        key = (name, model)
        if key in self.local:
            return
        self.local[key], self.deps[key] = out, deps = [], set()
        props = {p: n for p, n in self.r4.defs[name]["properties"].items() if p != "resourceType"}
        fields = {f.alias or n: f for n, f in model.model_fields.items() if n != "fhir_comments"}
        for p in sorted(props.keys() - fields.keys()):
            tolerated = p.startswith("_") or (
                p == "modifierExtension" and f"{path}.{p}" not in self.r4.min
            )
            if not tolerated:
                out.append(f"{path}.{p}: not in R4B")
        out.extend(self._required_in_r4b_only(model, path))
        for p in sorted(props.keys() & fields.keys()):
            many, r4_type = self.r4.element(p, props[p])
            r4b_many, r4b_type = r4b_element(fields[p].annotation)
            where = f"{path}.{p}"
            if many != r4b_many:
                out.append(f"{where}: {'repeats' if many else 'single'} in R4, not in R4B")
            elif r4_type == "ResourceList":
                if r4b_type.__name__ != "Resource":
                    out.append(f"{where}: any resource in R4, {r4b_type.__name__} in R4B")
            elif r4_type in self.r4.primitives or isinstance(r4b_type, str):
                if r4_type != r4b_type:
                    out.append(f"{where}: {r4_type} in R4, {r4b_type} in R4B")
            elif "_" in r4_type:  # a backbone element (Patient_Contact): compare in place
                deps.add((r4_type, r4b_type))
                self._compare(r4_type, r4b_type, self.r4.content_ref.get(where, where))
            elif r4b_type.__name__ not in (r4_type, _R4B_NAMES.get(r4_type)):
                out.append(f"{where}: {r4_type} in R4, {r4b_type.__name__} in R4B")
            else:
                deps.add((r4_type, r4b_type))
                self._compare(r4_type, r4b_type, r4_type)

    def _required_in_r4b_only(self, model: Any, path: str) -> list[str]:
        blank = model.model_construct()
        required = {f.alias for f in model.model_fields.values() if f.is_required()}
        required |= {model.model_fields[n].alias for n, _ in blank.get_required_fields()}
        found = [f"{path}.{p}" for p in required if self.r4.min.get(f"{path}.{p}", 0) < 1]
        for base, names in blank.get_one_of_many_fields().items():
            extra = model.model_fields[names[0]].json_schema_extra
            if extra["one_of_many_required"] and self.r4.min.get(f"{path}.{base}[x]", 0) < 1:
                found.append(f"{path}.{base}[x]")
        return [f"{p}: required in R4B only" for p in sorted(found)]


def computed_agreement() -> dict[str, Any]:
    agreement = Agreement()
    differences = {t: agreement.differences(t) for t in sorted(RESOURCE_TYPES)}
    return {
        "about": "R4 types validated by both layers; see docs/validation.md (R4B agreement)",
        "types": [t for t, d in differences.items() if not d],
        "schema_only": {t: d[:3] for t, d in differences.items() if d},
    }


def test_shipped_r4b_agreement_is_current() -> None:
    shipped = orjson.loads((DATA / "r4b-agreement.json").read_bytes())
    assert shipped == computed_agreement(), (
        "fhir.resources or the R4 data changed: run "
        "`.venv/bin/python -m tests.model.test_types` and review the new list"
    )


def test_r4b_agreement_matches_the_known_result() -> None:
    shipped = orjson.loads((DATA / "r4b-agreement.json").read_bytes())
    assert len(shipped["types"]) == 126
    assert set(shipped["schema_only"]) == (RESOURCE_TYPES - set(shipped["types"]))
    # 18 types R4B lacks, and two that R4B rebuilt.
    assert {"Evidence", "EvidenceVariable", "MedicinalProduct"} <= set(shipped["schema_only"])


if __name__ == "__main__":
    (DATA / "r4b-agreement.json").write_bytes(
        orjson.dumps(computed_agreement(), option=orjson.OPT_INDENT_2) + b"\n"
    )
    print(f"wrote {DATA / 'r4b-agreement.json'}")
