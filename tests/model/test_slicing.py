"""Slicing in the snapshot validator (profiling.html#slicing, #discriminator), on profiles
written here: discriminator paths of several steps through lists (`code.coding.code`,
`code.coding.system`), the slice's value given on the element at the path or by a pattern
above it; discriminators through `resolve()` (contained resources, the type of a literal
reference); re-slicing (`component:bp/extra`)."""

from __future__ import annotations

from typing import Any

from fhir_server.model import snapshot
from fhir_server.model.errors import Issue

LOINC = "http://loinc.org"
LOCAL = "http://example.org/codes"


def _el(id: str, min: int = 0, max: str = "*", **more: Any) -> dict[str, Any]:
    step = id.rsplit(".", 1)[-1]
    path = ".".join(part.split(":")[0] for part in id.split("."))
    slice_name = step.partition(":")[2]
    return {"id": id, "path": path, "min": min, "max": max,
            **({"sliceName": slice_name} if slice_name else {}), **more}


def _profile(*elements: dict[str, Any], type: str = "Observation") -> snapshot.Definition:
    return snapshot.Definition.load({"url": "http://example.org/sd", "type": type, "snapshot": {
        "element": [_el(type), *elements]}})


def _found(checker: snapshot.Definition, resource: dict[str, Any]) -> list[tuple[str, str, tuple[str, ...]]]:
    issues: list[Issue] = checker.check(resource, resource["resourceType"])
    return [(i.severity, i.code, i.expression) for i in issues]


def _component(system: str, code: str, **value: Any) -> dict[str, Any]:
    return {"code": {"coding": [{"system": "http://other.org", "code": "x"},
                                {"system": system, "code": code}]}, **value}


def _blood_pressure(discriminator: str, *, closed: bool = False) -> list[dict[str, Any]]:
    """Observation.component sliced on `discriminator`: systolic (8480-6, a Quantity required)
    and diastolic (8462-4), each exactly once; the codes as a pattern on `code`."""
    slices = []
    for name, code in (("systolic", "8480-6"), ("diastolic", "8462-4")):
        slices += [
            _el(f"Observation.component:{name}", 1, "1"),
            _el(f"Observation.component:{name}.code", 1, "1", type=[{"code": "CodeableConcept"}],
                patternCodeableConcept={"coding": [{"system": LOINC, "code": code}]}),
            _el(f"Observation.component:{name}.value[x]", 1 if name == "systolic" else 0, "1",
                type=[{"code": "Quantity"}]),
        ]
    return [
        _el("Observation.component", slicing={"discriminator": [
            {"type": "value", "path": discriminator}], "rules": "closed" if closed else "open"}),
        _el("Observation.component.code", 1, "1", type=[{"code": "CodeableConcept"}]),
        _el("Observation.component.value[x]", 0, "1", type=[{"code": "Quantity"}, {"code": "string"}]),
        *slices,
    ]


def test_a_path_of_several_steps_picks_the_slice_through_lists() -> None:
    checker = _profile(*_blood_pressure("code.coding.code"))
    good = {"resourceType": "Observation", "component": [
        _component(LOINC, "8480-6", valueQuantity={"value": 120}), _component(LOINC, "8462-4")]}
    assert _found(checker, good) == []
    # The systolic one without its Quantity: the slice's own constraint applies to it.
    missing = {"resourceType": "Observation", "component": [
        _component(LOINC, "8480-6"), _component(LOINC, "8462-4")]}
    assert _found(checker, missing) == [("error", "required", ("Observation.component[0].value",))]
    # Two systolic, no diastolic: each slice's cardinality.
    twice = {"resourceType": "Observation", "component": [
        _component(LOINC, "8480-6", valueQuantity={"value": 1}),
        _component(LOINC, "8480-6", valueQuantity={"value": 2})]}
    found = _found(checker, twice)
    assert ("error", "structure", ("Observation.component",)) in found  # systolic max 1
    assert ("error", "required", ("Observation.component",)) in found  # diastolic min 1


def test_the_value_at_the_path_may_be_fixed_on_the_element_itself() -> None:
    elements = [{k: v for k, v in e.items() if k != "patternCodeableConcept"}
                for e in _blood_pressure("code.coding.system")]
    elements = [{**e, "max": "*", "min": 0} if e["id"].endswith(("systolic", "diastolic")) else e
                for e in elements]
    for name, system in (("systolic", LOINC), ("diastolic", LOCAL)):
        elements.append(_el(f"Observation.component:{name}.code.coding", 1, "*"))
        elements.append(_el(f"Observation.component:{name}.code.coding.system", 1, "1",
                            fixedUri=system))
    checker = _profile(*elements)
    resource = {"resourceType": "Observation", "component": [
        {"code": {"coding": [{"system": LOCAL, "code": "dia"}]}},
        {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]}}]}
    assert _found(checker, resource) == [("error", "required", ("Observation.component[1].value",))]


def test_a_closed_slicing_on_a_deep_path_refuses_what_matches_no_slice() -> None:
    checker = _profile(*_blood_pressure("code.coding.code", closed=True))
    resource = {"resourceType": "Observation", "component": [
        _component(LOINC, "8480-6", valueQuantity={"value": 120}), _component(LOINC, "8462-4"),
        _component(LOINC, "9999-9")]}
    [issue] = _found(checker, resource)
    assert issue == ("error", "structure", ("Observation.component[2]",))


def test_a_pattern_discriminator_on_a_deep_path() -> None:
    elements = _blood_pressure("code.coding")
    elements[0]["slicing"]["discriminator"] = [{"type": "pattern", "path": "code.coding"}]
    checker = _profile(*elements)
    resource = {"resourceType": "Observation", "component": [
        _component(LOINC, "8462-4"), _component(LOINC, "8480-6", valueQuantity={"value": 1})]}
    assert _found(checker, resource) == []


def _members(discriminator: dict[str, str]) -> list[dict[str, Any]]:
    """Observation.hasMember sliced through `resolve()`: `vital`, a member Observation
    (at most one), and `answers`, QuestionnaireResponses."""
    return [
        _el("Observation.hasMember", slicing={"discriminator": [discriminator], "rules": "closed"}),
        _el("Observation.hasMember:vital", 0, "1", type=[{"code": "Reference", "targetProfile": [
            "http://hl7.org/fhir/StructureDefinition/Observation"]}]),
        _el("Observation.hasMember:answers", 0, "*", type=[{"code": "Reference", "targetProfile": [
            "http://hl7.org/fhir/StructureDefinition/QuestionnaireResponse"]}]),
    ]


def test_a_type_discriminator_through_resolve_reads_the_reference() -> None:
    checker = _profile(*_members({"type": "type", "path": "resolve()"}))
    resource = {"resourceType": "Observation", "contained": [
        {"resourceType": "QuestionnaireResponse", "id": "qr", "status": "completed"}],
        "hasMember": [{"reference": "Observation/o1"}, {"reference": "#qr"},
                      {"reference": "https://example.org/fhir/QuestionnaireResponse/2/_history/1"}]}
    assert _found(checker, resource) == []
    twice = {"resourceType": "Observation", "hasMember": [
        {"reference": "Observation/o1"}, {"reference": "Observation/o2"}, {"reference": "Patient/p"}]}
    found = _found(checker, twice)
    assert ("error", "structure", ("Observation.hasMember",)) in found  # vital: at most 1
    assert ("error", "structure", ("Observation.hasMember[2]",)) in found  # closed: a Patient


def test_a_value_discriminator_through_resolve_reads_a_contained_resource() -> None:
    checker = _profile(
        _el("Observation.hasMember", slicing={"discriminator": [
            {"type": "value", "path": "resolve().status"}], "rules": "closed"}),
        _el("Observation.hasMember:final", 0, "1", type=[{"code": "Reference", "targetProfile": [
            "http://example.org/sd-final"]}]),
    )
    final = snapshot.Definition.load({"url": "http://example.org/sd-final", "type": "Observation",
                                      "snapshot": {"element": [
                                          _el("Observation"),
                                          _el("Observation.status", 1, "1", fixedCode="final")]}})
    held = snapshot.definitions()
    held["http://example.org/sd-final"] = final
    try:
        resource = {"resourceType": "Observation", "contained": [
            {"resourceType": "Observation", "id": "a", "status": "final"},
            {"resourceType": "Observation", "id": "b", "status": "preliminary"}],
            "hasMember": [{"reference": "#a"}, {"reference": "#b"}, {"reference": "Observation/x"}]}
        found = checker.check(resource, "Observation")
    finally:
        del held["http://example.org/sd-final"]
    brief = [(i.severity, i.code, i.expression) for i in found]
    assert ("error", "structure", ("Observation.hasMember[1]",)) in brief  # preliminary: no slice
    # Not contained: its status cannot be read here; said, never passed silently.
    [unknown] = [i for i in found if i.expression == ("Observation.hasMember[2]",)]
    assert unknown.severity == "warning" and unknown.code == "not-supported"
    assert ("error", "structure", ("Observation.hasMember[0]",)) not in brief


def test_re_slicing_picks_a_slice_within_a_slice() -> None:
    """`component:bp` (LOINC codes) re-sliced by code into `bp/systolic` (exactly one) and
    `bp/diastolic`; values of the slice are counted in its re-slices only."""
    checker = _profile(
        _el("Observation.component", slicing={"discriminator": [
            {"type": "value", "path": "code.coding.system"}], "rules": "open"}),
        _el("Observation.component.code", 1, "1", type=[{"code": "CodeableConcept"}]),
        _el("Observation.component:bp", 0, "*", slicing={"discriminator": [
            {"type": "value", "path": "code.coding.code"}], "rules": "closed"}),
        _el("Observation.component:bp.code", 1, "1", type=[{"code": "CodeableConcept"}],
            patternCodeableConcept={"coding": [{"system": LOINC}]}),
        _el("Observation.component:bp/systolic", 1, "1"),
        _el("Observation.component:bp/systolic.code", 1, "1", type=[{"code": "CodeableConcept"}],
            patternCodeableConcept={"coding": [{"system": LOINC, "code": "8480-6"}]}),
        _el("Observation.component:bp/diastolic", 0, "1"),
        _el("Observation.component:bp/diastolic.code", 1, "1", type=[{"code": "CodeableConcept"}],
            patternCodeableConcept={"coding": [{"system": LOINC, "code": "8462-4"}]}),
    )
    good = {"resourceType": "Observation", "component": [
        _component(LOINC, "8462-4"), _component(LOCAL, "other"), _component(LOINC, "8480-6")]}
    assert _found(checker, good) == []
    # A LOINC component that is neither: in `bp`, whose re-slicing is closed.
    odd = {"resourceType": "Observation", "component": [
        _component(LOINC, "8480-6"), _component(LOINC, "1234-5")]}
    assert _found(checker, odd) == [("error", "structure", ("Observation.component[1]",))]
    # No systolic among the LOINC ones: the re-slice's minimum.
    none = {"resourceType": "Observation", "component": [_component(LOINC, "8462-4")]}
    assert _found(checker, none) == [("error", "required", ("Observation.component",))]


def test_of_type_in_a_path_keeps_the_values_of_that_type() -> None:
    checker = _profile(
        _el("Observation.component", slicing={"discriminator": [
            {"type": "exists", "path": "value.ofType(Quantity)"}], "rules": "closed"}),
        _el("Observation.component.value[x]", 0, "1", type=[{"code": "Quantity"}, {"code": "string"}]),
        _el("Observation.component:measured", 0, "1"),
        _el("Observation.component:measured.value[x]", 1, "1", type=[{"code": "Quantity"}]),
        _el("Observation.component:said", 0, "*"),
        _el("Observation.component:said.value[x]", 0, "1", type=[{"code": "string"}]),
    )
    resource = {"resourceType": "Observation", "component": [
        {"valueString": "a"}, {"valueQuantity": {"value": 1}}, {"valueString": "b"}]}
    assert _found(checker, resource) == []
    twice = {"resourceType": "Observation", "component": [
        {"valueQuantity": {"value": 1}}, {"valueQuantity": {"value": 2}}]}
    assert _found(checker, twice) == [("error", "structure", ("Observation.component",))]
