"""The R4 SearchParameter registry (FHIR R4 searchparameter-registry.html, search.html).

Holds every official R4 search parameter, the Patient compartment
(compartmentdefinition-patient.html) and the element types the FHIRPath compiler needs to
read choice types and data types exactly (`Observation.value[x]` -> `valueQuantity`, ...).

The data ship in `data/`:
- `search-parameters.json.gz`: `{"fhirVersion", "resourceTypes": {type: "Resource" |
  "DomainResource"}, "baseTypes": {"Age": "Quantity", ...}, "params": [...], "elements":
  {path: [type, ...]}}`. `params` keep only what search needs (id, url, code, type, base,
  expression, target, component, multipleOr/And, comparator, modifier, chain, description);
  `elements` keep only the element paths the compiler looks up (choice elements end in `[x]`,
  a `#Path` type is a contentReference).
- `compartment-patient.json`: `{resourceType: [param code, ...]}`.

Regenerate both from the official definitions in /work/shared/data/fhir-r4/
(search-parameters.json, compartmentdefinition-patient.json, profiles-resources.json,
profiles-types.json) with::

    .venv/bin/python tests/search/datagen.py [/work/shared/data/fhir-r4]

`tests/search/test_registry.py` rebuilds the data and fails if the shipped files drift.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast

ParamType = Literal[
    "string", "token", "reference", "date", "number", "quantity", "uri", "composite", "special"
]

DATA_DIR = Path(__file__).parent / "data"
PARAMS_FILE = DATA_DIR / "search-parameters.json.gz"
COMPARTMENT_FILE = DATA_DIR / "compartment-patient.json"
# SearchParameters this server defines (the trial referral workflow), as published resources.
OWN_PARAMS_DIR = Path(__file__).resolve().parents[1] / "profiles"


# Official parameters this server neither indexes nor offers (`Type`, code). AuditEvent's
# network address, agent name and entity role: every request leaves an AuditEvent per patient
# it touched (21 for a 20-hit search) and each indexed value is a row of each of them; the
# trail is searched by patient, entity, entity-name, agent, altid, date, type, subtype,
# action and outcome (docs/audit.md, "Searching the trail").
NOT_OFFERED: frozenset[tuple[str, str]] = frozenset(
    {("AuditEvent", "address"), ("AuditEvent", "agent-name"), ("AuditEvent", "entity-role")})


@dataclass(frozen=True, slots=True)
class Component:
    """One part of a composite parameter: the component parameter and its relative expression."""

    code: str
    type: ParamType
    definition: str
    expression: str


@dataclass(frozen=True, slots=True)
class SearchParam:
    """One SearchParameter definition, reduced to what search needs."""

    code: str
    type: ParamType
    base: tuple[str, ...]
    expression: str | None
    url: str
    id: str = ""
    targets: tuple[str, ...] = ()
    components: tuple[Component, ...] = ()
    multiple_or: bool = True
    multiple_and: bool = True
    comparators: tuple[str, ...] = ()
    modifiers: tuple[str, ...] = ()
    chains: tuple[str, ...] = ()
    description: str = field(default="", compare=False)


class Registry:
    """Search parameters by resource type and code, plus the Patient compartment."""

    def __init__(
        self,
        params: Iterable[SearchParam],
        *,
        resource_types: Mapping[str, str],
        elements: Mapping[str, tuple[str, ...]],
        base_types: Mapping[str, str] | None = None,
        patient_compartment: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        self._params = tuple(params)
        self.resource_types: Mapping[str, str] = MappingProxyType(dict(resource_types))
        self.elements: Mapping[str, tuple[str, ...]] = MappingProxyType(dict(elements))
        self.base_types: Mapping[str, str] = MappingProxyType(dict(base_types or {}))
        self._compartment = dict(patient_compartment or {})
        self._by_url = {p.url: p for p in self._params}
        self._by_base: dict[str, dict[str, SearchParam]] = {}
        for p in self._params:
            for base in p.base:
                self._by_base.setdefault(base, {})[p.code] = p
        self._for_type: dict[str, Mapping[str, SearchParam]] = {}

    @property
    def params(self) -> tuple[SearchParam, ...]:
        return self._params

    def get(self, resource_type: str, code: str) -> SearchParam | None:
        """The parameter `code` as it applies to `resource_type`, or None."""
        return self.for_type(resource_type).get(code)

    def common(self, code: str) -> SearchParam | None:
        """A parameter every resource type has (base Resource), for system-level search."""
        return self._by_base.get("Resource", {}).get(code)

    def by_url(self, url: str) -> SearchParam | None:
        return self._by_url.get(url)

    def for_type(self, resource_type: str) -> Mapping[str, SearchParam]:
        """Every parameter applying to `resource_type`, including Resource/DomainResource ones.

        Unknown types get an empty mapping. `_text`, `_content` and `_query` are present but have
        no expression: nothing is indexed for them.
        """
        cached = self._for_type.get(resource_type)
        if cached is not None:
            return cached
        kind = self.resource_types.get(resource_type)
        merged: dict[str, SearchParam] = {}
        if kind is not None:
            merged.update(self._by_base.get("Resource", {}))
            if kind == "DomainResource":
                merged.update(self._by_base.get("DomainResource", {}))
            merged.update(self._by_base.get(resource_type, {}))
        view: Mapping[str, SearchParam] = MappingProxyType(merged)
        self._for_type[resource_type] = view
        return view

    def patient_compartment(self, resource_type: str) -> tuple[str, ...]:
        """Codes of the parameters that put a `resource_type` in a Patient's compartment."""
        if resource_type == "Patient":
            # compartmentdefinition-patient: a Patient is in its own compartment via `{def}` (_id);
            # the link parameter list for Patient itself is `link`.
            return self._compartment.get("Patient", ())
        return self._compartment.get(resource_type, ())

    def is_subtype(self, type_name: str, of: str) -> bool:
        """True when `type_name` is `of` or derives from it (Age -> Quantity)."""
        while True:
            if type_name == of:
                return True
            parent = self.base_types.get(type_name)
            if parent is None:
                return False
            type_name = parent


def params_from_json(raw: list[dict[str, Any]]) -> list[SearchParam]:
    """SearchParam objects from the stripped JSON (components resolved by url)."""
    by_url = {p["url"]: p for p in raw}
    out: list[SearchParam] = []
    for p in raw:
        components = tuple(
            Component(
                code=by_url[c["definition"]]["code"],
                type=cast(ParamType, by_url[c["definition"]]["type"]),
                definition=c["definition"],
                expression=c["expression"],
            )
            for c in p.get("component", ())
            if c["definition"] in by_url
        )
        out.append(
            SearchParam(
                code=p["code"],
                type=cast(ParamType, p["type"]),
                base=tuple(p["base"]),
                expression=p.get("expression"),
                url=p["url"],
                id=p.get("id", ""),
                targets=tuple(p.get("target", ())),
                components=components,
                multiple_or=p.get("multipleOr", True),
                multiple_and=p.get("multipleAnd", True),
                comparators=tuple(p.get("comparator", ())),
                modifiers=tuple(p.get("modifier", ())),
                chains=tuple(p.get("chain", ())),
                description=p.get("description", ""),
            )
        )
    return out


def own_params(directory: Path = OWN_PARAMS_DIR) -> list[dict[str, Any]]:
    """This server's SearchParameter resources (`SearchParameter-*.json` in `directory`)."""
    return [json.loads(path.read_text()) for path in sorted(directory.glob("SearchParameter-*.json"))]


def load_registry(params_file: Path = PARAMS_FILE, compartment_file: Path = COMPARTMENT_FILE,
                  own_params_dir: Path = OWN_PARAMS_DIR) -> Registry:
    """Build a Registry from the shipped data files and this server's own parameters."""
    with gzip.open(params_file, "rb") as fh:
        data = json.loads(fh.read())
    compartment = json.loads(compartment_file.read_text())
    offered = [p for p in data["params"] if not (len(p["base"]) == 1 and (p["base"][0], p["code"]) in NOT_OFFERED)]
    return Registry(
        params_from_json(offered + own_params(own_params_dir)),
        resource_types=data["resourceTypes"],
        elements={k: tuple(v) for k, v in data["elements"].items()},
        base_types=data["baseTypes"],
        patient_compartment={k: tuple(v) for k, v in compartment.items()},
    )


@cache
def default_registry() -> Registry:
    """The registry of the official R4 parameters, built on first use (~20 ms) and shared."""
    return load_registry()
