"""What the snapshot validator works out once per profile and keeps (model/snapshot.py,
model/invariants.py): what slices' discriminators want, the value index of a slicing by url,
the quick invariant tests. Each gives what working it out again at every value gave."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.model import invariants, snapshot
from fhir_server.model.invariants import Invariant
from tests.model.test_slicing import _blood_pressure, _component, _el, _found, _profile

URL = "http://example.org/StructureDefinition/note"
ELE_1 = Invariant("ele-1", "error", "All FHIR elements must have a @value or children",
                  "hasValue() or (children().count() > id.count())")
EXT_1 = Invariant("ext-1", "error", "Must have either extensions or value[x], not both",
                  "extension.exists() != value.exists()")


def _noted(url: str, *, closed: bool = False) -> list[dict[str, Any]]:
    """Patient.extension sliced by url: `note` (fixed to `url`), required once; `other`
    wanting the same url (never reached: a value goes to the first slice wanting it)."""
    return [
        _el("Patient.extension", slicing={"discriminator": [{"type": "value", "path": "url"}],
                                          "rules": "closed" if closed else "open"}),
        _el("Patient.extension:note", 1, "1", type=[{"code": "Extension"}]),
        _el("Patient.extension:note.url", 1, "1", fixedUri=url),
        _el("Patient.extension:other", 0, "0", type=[{"code": "Extension"}]),
        _el("Patient.extension:other.url", 1, "1", fixedUri=url),
    ]


def _patient(*urls: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "extension": [{"url": u, "valueString": "x"} for u in urls]}


def test_a_definition_loaded_again_from_another_snapshot_checks_with_that_snapshot() -> None:
    """What slices want is kept with the definition: a profile loaded again (changed) starts
    afresh, and the one loaded before keeps checking as its own snapshot says."""
    before = _profile(*_noted("http://example.org/a"), type="Patient")
    assert _found(before, _patient("http://example.org/a")) == []
    after = _profile(*_noted("http://example.org/b"), type="Patient")
    assert _found(after, _patient("http://example.org/a")) == [
        ("error", "required", ("Patient.extension",))]  # note: wanted once, found none
    assert _found(after, _patient("http://example.org/b")) == []
    assert _found(before, _patient("http://example.org/a")) == []


@pytest.mark.parametrize("urls", [
    (), ("http://example.org/a",), ("http://example.org/a", "http://example.org/a"),
    ("http://example.org/z",), ("http://example.org/z", "http://example.org/a"),
])
@pytest.mark.parametrize("closed", [False, True])
def test_the_value_index_finds_the_slice_trying_each_slice_in_turn_finds(
        urls: tuple[str, ...], closed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    resource = _patient(*urls)
    indexed = _found(_profile(*_noted("http://example.org/a", closed=closed), type="Patient"), resource)
    monkeypatch.setattr(snapshot.Definition, "_value_index", lambda self, sliced, slices: None)
    assert indexed == _found(_profile(*_noted("http://example.org/a", closed=closed), type="Patient"), resource)


def test_the_value_index_goes_by_each_value_at_a_path_of_several_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blood pressure components sliced on `code.coding.code` (two codings each): the
    index and the slice-by-slice search agree, the slices' own constraints applied; a
    component with both codes is in the first slice (systolic), whose value it lacks."""
    resources = [
        {"resourceType": "Observation", "component": [
            _component("http://loinc.org", "8480-6", valueQuantity={"value": 120}),
            _component("http://loinc.org", "8462-4")]},
        {"resourceType": "Observation", "component": [
            _component("http://loinc.org", "8480-6"), _component("http://loinc.org", "0000-0")]},
        {"resourceType": "Observation", "component": [  # both codes: the first slice's
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"},
                                 {"system": "http://loinc.org", "code": "8480-6"}]}}]},
    ]
    indexed = [_found(_profile(*_blood_pressure("code.coding.code", closed=True)), r) for r in resources]
    assert indexed[0] == []
    assert ("error", "required", ("Observation.component[0].value",)) in indexed[1]
    assert ("error", "required", ("Observation.component[0].value",)) in indexed[2]
    monkeypatch.setattr(snapshot.Definition, "_value_index", lambda self, sliced, slices: None)
    assert indexed == [_found(_profile(*_blood_pressure("code.coding.code", closed=True)), r) for r in resources]


def _typed_values(*, closed: bool) -> list[dict[str, Any]]:
    """Observation.value[x] sliced by type at `$this`: `amount` (a Quantity, its value
    required), `words` (a string or a CodeableConcept) and `again` (a Quantity too: never
    reached, a value goes to the first slice allowing its type)."""
    return [
        _el("Observation.value[x]", 0, "1", type=[{"code": t} for t in ("Quantity", "string", "CodeableConcept",
                                                                         "boolean")],
            slicing={"discriminator": [{"type": "type", "path": "$this"}], "rules": "closed" if closed else "open"}),
        _el("Observation.value[x]:amount", 0, "1", type=[{"code": "Quantity"}]),
        _el("Observation.value[x]:amount.value", 1, "1", type=[{"code": "decimal"}]),
        _el("Observation.value[x]:words", 0, "1", type=[{"code": "string"}, {"code": "CodeableConcept"}]),
        _el("Observation.value[x]:again", 1, "1", type=[{"code": "Quantity"}]),
    ]


@pytest.mark.parametrize("value", [
    {"valueQuantity": {"value": 1}}, {"valueQuantity": {"unit": "mg"}}, {"valueString": "x"},
    {"valueCodeableConcept": {"text": "x"}}, {"valueBoolean": True}, {"valueInteger": 1}, {},
])
@pytest.mark.parametrize("closed", [False, True])
def test_the_type_index_finds_the_slice_trying_each_slice_in_turn_finds(
        value: dict[str, Any], closed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    resource = {"resourceType": "Observation", **value}
    indexed = _found(_profile(*_typed_values(closed=closed)), resource)
    monkeypatch.setattr(snapshot.Definition, "_value_index", lambda self, sliced, slices: None)
    assert indexed == _found(_profile(*_typed_values(closed=closed)), resource)


def test_a_quick_test_is_given_only_when_every_invariant_is_decided_in_python() -> None:
    assert invariants.quick_test((ELE_1, EXT_1)) is not None
    needs_fhirpath = Invariant("x-1", "error", "", "name.exists()")
    assert invariants.quick_test((ELE_1, needs_fhirpath)) is None


def test_a_value_failing_a_quick_test_is_reported_as_before() -> None:
    """An extension with neither a value nor extensions breaks ext-1, one with only an id
    ele-1: each named at its path, with the invariant's words."""
    checker = _profile(
        _el("Patient.extension", type=[{"code": "Extension"}], constraint=[
            {"key": i.key, "severity": i.severity, "human": i.human, "expression": i.expression}
            for i in (ELE_1, EXT_1)]),
        type="Patient")
    found = checker.check({"resourceType": "Patient", "extension": [
        {"url": URL, "valueString": "fine"}, {"url": URL}, {"id": "only"}]}, "Patient")
    assert [(i.severity, i.diagnostics, i.expression) for i in found] == [
        ("error", f"Invariant ext-1 failed: {EXT_1.human}", ("Patient.extension[1]",)),
        ("error", f"Invariant ele-1 failed: {ELE_1.human}", ("Patient.extension[2]",)),
        ("error", f"Invariant ext-1 failed: {EXT_1.human}", ("Patient.extension[2]",)),
    ]
