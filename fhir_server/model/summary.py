"""`_summary` and `_elements` (FHIR R4 search.html#summary, #elements).

Which top-level elements are "summary" or mandatory comes from the R4 StructureDefinitions
(`isSummary`, `min`), shipped as data/summary-elements.json; tests/model/test_summary.py
regenerates it from the official definitions and fails if it drifts.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
}
_ALWAYS = ("resourceType", "id", "meta")


@cache
def _elements() -> dict[str, dict[str, list[str]]]:
    raw = files("fhir_server.model").joinpath("data/summary-elements.json").read_bytes()
    return json.loads(raw)  # type: ignore[no-any-return]


def _element_name(key: str, names: set[str], choices: tuple[str, ...]) -> str | None:
    """The element a JSON key belongs to (`valueQuantity` -> `value[x]`, `_birthDate` -> birthDate)."""
    key = key.removeprefix("_")
    if key in names:
        return key
    for choice in choices:
        if key.startswith(choice) and key[len(choice):][:1].isupper():
            return f"{choice}[x]"
    return None


def _keep(resource: dict[str, Any], wanted: set[str]) -> dict[str, Any]:
    choices = tuple(name[:-3] for name in wanted if name.endswith("[x]"))
    kept = {}
    for key, value in resource.items():
        if key in _ALWAYS or _element_name(key, wanted, choices) is not None:
            kept[key] = value
    return kept


def mark_subsetted(resource: dict[str, Any]) -> dict[str, Any]:
    meta = dict(resource.get("meta") or {})
    tags = [t for t in meta.get("tag", []) if t.get("code") != "SUBSETTED"]
    meta["tag"] = [*tags, SUBSETTED]
    return {**resource, "meta": meta}


def summarize(resource: dict[str, Any], mode: str) -> dict[str, Any]:
    """The resource as `_summary=mode` (true, text, data) asks; `false` returns it unchanged."""
    if mode == "false":
        return resource
    if mode == "data":
        return mark_subsetted({k: v for k, v in resource.items() if k != "text"})
    known = _elements().get(resource.get("resourceType", ""), {})
    if mode == "text":
        wanted = {"text", *known.get("mandatory", [])}
    else:
        wanted = set(known.get("summary", []))
    return mark_subsetted(_keep(resource, wanted))


def select_elements(resource: dict[str, Any], elements: tuple[str, ...]) -> dict[str, Any]:
    """Only the listed top-level elements (plus mandatory ones), marked SUBSETTED."""
    known = _elements().get(resource.get("resourceType", ""), {})
    choices = set(known.get("choices", []))
    names = {e.split(".", 1)[-1] for e in elements}
    # `value` names the choice element value[x] (valueQuantity, valueString, ...).
    names = {f"{n}[x]" if f"{n}[x]" in choices else n for n in names}
    return mark_subsetted(_keep(resource, names | set(known.get("mandatory", []))))
