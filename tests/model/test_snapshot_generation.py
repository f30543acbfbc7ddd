"""Snapshot generation from a differential (model/snapshot_gen.py) and the discriminators and
profiles it makes checkable: our own eligibility profiles, shipped as differentials, are now
validated like the vendored ECLAIRE ones."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from fhir_server.model import snapshot
from fhir_server.model.snapshot_gen import SnapshotError, core_structures, generate
from fhir_server.model.validation import Validator

ROOT = Path(__file__).resolve().parents[2]
OURS = "https://oncotrials.example.org/fhir/StructureDefinition"
CRITERIA = f"{OURS}/eligibility-criteria"
MINIMUM = f"{OURS}/eligibility-minimum"
CORE = "http://hl7.org/fhir/StructureDefinition"
VALIDATOR = Validator(use_models=False)
NARRATIVE = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'}


def resolve(url: str) -> dict[str, Any] | None:
    return snapshot._with_snapshots().get(url) or core_structures().get(url)


def ids(sd: dict[str, Any]) -> list[str]:
    return [e["id"] for e in sd["snapshot"]["element"]]


def profile(type_: str, *elements: dict[str, Any], base: str | None = None) -> dict[str, Any]:
    return {"resourceType": "StructureDefinition", "url": f"http://example.org/sd/{type_}",
            "type": type_, "derivation": "constraint", "baseDefinition": base or f"{CORE}/{type_}",
            "differential": {"element": [{"id": type_, "path": type_}, *elements]}}


def eligibility_group() -> dict[str, Any]:
    bundle = json.loads((ROOT / "tests/trials/eval_data/trials/t01.json").read_text())
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Group")


def test_our_differential_profiles_get_a_snapshot_with_slices_and_unfolded_types() -> None:
    generated = snapshot._with_snapshots()[CRITERIA]
    elements = ids(generated)
    # the base (eclaire-group) elements, our slices after the sliced element, and the
    # CodeableConcept and Coding unfolded below the elements the differential dives into
    for wanted in ("Group.characteristic.extension:comparator", "Group.characteristic.code.coding",
                   "Group.characteristic.code.coding:criterionType.system", "Group.member.entity"):
        assert wanted in elements
    assert elements.index("Group.characteristic.extension") < elements.index(
        "Group.characteristic.extension:onlyIf") < elements.index("Group.characteristic.modifierExtension")
    by_id = {e["id"]: e for e in generated["snapshot"]["element"]}
    assert by_id["Group.member"]["max"] == "0"
    assert by_id["Group.type"]["fixedCode"] == "person"
    system = by_id["Group.characteristic.code.coding:criterionType.system"]
    assert system["min"] == 1 and system["fixedUri"].endswith("/CodeSystem/eligibility-criterion")
    assert "mustSupport" not in system or isinstance(system["mustSupport"], bool)
    for url in (CRITERIA, MINIMUM, f"{OURS}/eligibility-match-result"):
        assert url in snapshot.definitions()


def test_an_eligibility_group_claiming_our_profile_is_checked_against_it() -> None:
    group = {**eligibility_group(), "meta": {"profile": [CRITERIA]}}
    assert [i for i in VALIDATOR.outcome(group) if i.severity == "error"] == []
    broken = copy.deepcopy(group)
    broken["characteristic"][0]["code"]["coding"][0]["code"] = "nonsense"  # required binding
    broken["characteristic"][0]["extension"] = [{"url": MINIMUM, "valueString": "2"}]  # positiveInt
    broken["type"] = "animal"  # fixed person
    errors = sorted((i.code, i.expression[0]) for i in VALIDATOR.outcome(broken) if i.severity == "error")
    assert errors == sorted([
        ("code-invalid", "Group.characteristic[0].code.coding[0].code"),
        ("structure", "Group.characteristic[0].extension[0].valueString"),
        ("value", "Group.type"),
    ])


def test_a_type_specific_choice_name_narrows_value_x() -> None:
    sd = generate(profile("Observation", {"id": "Observation.valueQuantity", "path": "Observation.valueQuantity",
                                          "min": 1}), resolve)
    [value] = [e for e in sd["snapshot"]["element"] if e["id"] == "Observation.value[x]"]
    assert [t["code"] for t in value["type"]] == ["Quantity"] and value["min"] == 1
    checker = snapshot.Definition.load(sd)
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "text": NARRATIVE}
    assert [i.code for i in checker.check({**observation, "valueString": "a"}, "Observation")] == [
        "structure"]
    assert checker.check({**observation, "valueQuantity": {"value": 1}}, "Observation") == []


def test_a_type_discriminator_picks_the_slice_by_the_choice_type() -> None:
    sd = generate(profile(
        "Observation",
        {"id": "Observation.component.value[x]", "path": "Observation.component.value[x]",
         "slicing": {"discriminator": [{"type": "type", "path": "$this"}], "rules": "closed"}},
        {"id": "Observation.component.value[x]:valueQuantity", "path": "Observation.component.value[x]",
         "sliceName": "valueQuantity", "min": 0, "max": "1", "type": [{"code": "Quantity"}]},
        {"id": "Observation.component.value[x]:valueQuantity.system", "path":
         "Observation.component.value[x].system", "min": 1, "fixedUri": "http://unitsofmeasure.org"},
    ), resolve)
    checker = snapshot.Definition.load(sd)
    base = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "text": NARRATIVE}
    quantity = {**base, "component": [{"code": {"text": "c"}, "valueQuantity": {"value": 1}}]}
    string = {**base, "component": [{"code": {"text": "c"}, "valueString": "s"}]}
    good = {**base, "component": [{"code": {"text": "c"}, "valueQuantity": {
        "value": 1, "system": "http://unitsofmeasure.org"}}]}
    assert checker.check(good, "Observation") == []
    # the Quantity is in the slice, so its fixed system applies
    assert [i.expression for i in checker.check(quantity, "Observation")] == [
        ("Observation.component[0].valueQuantity.system",)]
    # a string matches no slice of a closed slicing
    assert [i.code for i in checker.check(string, "Observation")] == ["structure"]


def test_a_profile_discriminator_picks_the_slice_by_conformance() -> None:
    sd = generate(profile(
        "Patient",
        {"id": "Patient.extension", "path": "Patient.extension",
         "slicing": {"discriminator": [{"type": "profile", "path": "$this"}], "rules": "open"}},
        {"id": "Patient.extension:minimum", "path": "Patient.extension", "sliceName": "minimum",
         "min": 1, "max": "1", "type": [{"code": "Extension", "profile": [MINIMUM]}]},
    ), resolve)
    checker = snapshot.Definition.load(sd)
    conforming = {"url": MINIMUM, "valuePositiveInt": 2}
    patient = {"resourceType": "Patient", "text": NARRATIVE}
    assert checker.check({**patient, "extension": [conforming]}, "Patient") == []
    found = checker.check({**patient, "extension": [{"url": MINIMUM, "valueString": "2"}]}, "Patient")
    # the extension is still checked by its definition, and the required slice is empty
    assert sorted((i.code, i.expression) for i in found) == [
        ("required", ("Patient.extension",)), ("structure", ("Patient.extension[0].valueString",))]


@pytest.mark.parametrize("bad, message", [
    (profile("Patient", {"id": "Patient.nonsense", "path": "Patient.nonsense"}), "Patient.nonsense is not in its base"),
    ({**profile("Patient"), "baseDefinition": "http://example.org/unknown"}, "is not held"),
    ({**profile("Patient"), "derivation": "specialization"}, "only constraint profiles"),
    (profile("Observation", {"id": "Observation.value[x].value", "path": "Observation.value[x].value"}),
     "11 types"),
])
def test_a_differential_that_cannot_apply_is_refused_with_where(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(SnapshotError, match=message.replace("[", r"\[").replace("]", r"\]")):
        generate(bad, resolve)


def test_the_shipped_core_structures_are_current() -> None:
    import subprocess
    import sys
    source = ROOT.parent / "shared" / "data" / "fhir-r4"
    done = subprocess.run([sys.executable, str(ROOT / "tests/model/structuregen.py"), str(source), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
