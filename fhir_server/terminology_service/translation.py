"""`ConceptMap/$translate` (FHIR R4 conceptmap-operation-translate) over the ConceptMaps the
server holds: ours, ECLAIRE's and those shipped under `mappings/`.

A group's `source` or `target` that is not an absolute URI (ECLAIRE writes the CodeSystem's id)
is read as `<map's base>/CodeSystem/<id>`, the canonical its publisher gives that CodeSystem.
`group.unmapped` is not applied: a code without an element has no match.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .catalogue import Catalogue
from .lookup import CODED
from .parameters import Inputs, param, parameters

TRANSLATE = {**CODED, "url": "text", "conceptMapVersion": "text", "system": "text",
             "version": "text", "source": "text", "codeableConcept": "valueCodeableConcept",
             "target": "text", "targetsystem": "text", "reverse": "boolean"}
_NO_MATCH = ("unmatched", "disjoint")


def translate(catalogue: Catalogue, inputs: Inputs,
              concept_map: dict[str, Any] | None = None) -> dict[str, Any]:
    """Parameters with `result`, `message` and a `match` per target found, in `concept_map`
    (the one the caller named) or in every map held."""
    codings = inputs.codings()
    reverse = inputs.boolean("reverse") is True
    wanted = inputs.string("targetsystem")
    maps = [concept_map] if concept_map is not None else _maps(catalogue, inputs)
    matches = [m for coding in codings for cm in maps
               for m in _matches(catalogue, cm, coding, reverse, wanted)]
    found = any(m["equivalence"] not in _NO_MATCH for m in matches)
    if found:
        message = None
    elif not maps:
        message = "No ConceptMap held matches the source and target given."
    else:
        message = ("No mapping for " + ", ".join(f"{c.get('system')}|{c.get('code')}" for c in codings)
                   + " in " + ", ".join(str(cm.get("url")) for cm in maps) + ".")
    return parameters(
        param("result", "valueBoolean", found),
        param("message", "valueString", message),
        *({"name": "match", "part": [
            {"name": "equivalence", "valueCode": m["equivalence"]},
            {"name": "concept", "valueCoding": m["concept"]},
            {"name": "source", "valueUri": m["source"]}]} for m in matches))


def _maps(catalogue: Catalogue, inputs: Inputs) -> list[dict[str, Any]]:
    """The maps held that go from `source` to `target` (value set canonicals) when given."""
    source, target = inputs.string("source"), inputs.string("target")
    return [cm for cm in catalogue.concept_maps()
            if (source is None or _canonical(cm, "source") == source)
            and (target is None or _canonical(cm, "target") == target)]


def _canonical(concept_map: dict[str, Any], side: str) -> str | None:
    value = concept_map.get(f"{side}Canonical", concept_map.get(f"{side}Uri"))
    return value if isinstance(value, str) else None


def _absolute(concept_map: dict[str, Any], reference: str | None) -> str | None:
    if reference is None or "://" in reference or reference.startswith("urn:"):
        return reference
    base = str(concept_map.get("url", "")).rpartition("/ConceptMap/")[0]
    return f"{base}/CodeSystem/{reference}"


def _matches(catalogue: Catalogue, concept_map: dict[str, Any], coding: dict[str, Any],
             reverse: bool, wanted: str | None) -> Iterator[dict[str, Any]]:
    for group in concept_map.get("group", []):
        source = _absolute(concept_map, group.get("source"))
        target = _absolute(concept_map, group.get("target"))
        version = group.get("targetVersion")
        if reverse:
            source, target, version = target, source, group.get("sourceVersion")
        if source != coding.get("system") or (wanted is not None and target != wanted):
            continue
        for element in group.get("element", []):
            for mapped in element.get("target", []):
                there, back = (mapped, element) if not reverse else (element, mapped)
                if back.get("code") != coding.get("code") or "code" not in there:
                    continue
                yield {"equivalence": mapped.get("equivalence", "equivalent"),
                       "concept": _coding(catalogue, target, version, there),
                       "source": concept_map.get("url")}


def _coding(catalogue: Catalogue, system: str | None, version: str | None,
            item: dict[str, Any]) -> dict[str, Any]:
    """The target as a Coding, with the display its code system gives when held."""
    coding = {k: v for k, v in (("system", system), ("version", version),
                                ("code", item["code"])) if v is not None}
    held = catalogue.code_system(system, version) if system else None
    concept = held.find(item["code"]) if held is not None else None
    display = concept.display if concept is not None else item.get("display")
    if display is not None:
        coding["display"] = display
    return coding
