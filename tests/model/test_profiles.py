"""Profile validation: the registry (model/profiles.py) and the snapshot-driven validator
(model/snapshot.py) on the vendored ECLAIRE 0.3.1 profiles (profiling.html,
elementdefinition.html: cardinality, choice types, fixed/pattern, slicing, bindings,
reference targets, extensions by definition)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from fhir_server.model import profiles, snapshot
from fhir_server.model.errors import Issue
from fhir_server.model.validation import Validator

BASE = "https://interop.esante.gouv.fr/ig/fhir/eclaire"
STUDY = f"{BASE}/StructureDefinition/eclaire-researchstudy"
GROUP = f"{BASE}/StructureDefinition/eclaire-group"
LOCATION = f"{BASE}/StructureDefinition/eclaire-location"
RECRUITMENT = f"{BASE}/CodeSystem/eclaire-status-recruitment-code-system"
VALIDATOR = Validator(use_models=False)
NARRATIVE = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Essai</div>'}


def ext(name: str, **value: Any) -> dict[str, Any]:
    return {"url": f"{BASE}/StructureDefinition/eclaire-{name}", **value}


def study() -> dict[str, Any]:
    """An ECLAIRE ResearchStudy using each kind of constraint the profile has."""
    return {
        "resourceType": "ResearchStudy",
        "meta": {"profile": [STUDY]},
        "text": NARRATIVE,
        "extension": [
            ext("review-date", valueInstant="2024-03-01T10:00:00Z"),
            ext("recruitment-status", valueCodeableConcept={
                "coding": [{"system": RECRUITMENT, "code": "recruiting"}]}),
            {"url": "http://hl7.org/fhir/5.0/StructureDefinition/extension-ResearchStudy.label",
             "extension": [{"url": "value", "valueString": "Étude ALPHA"}]},
        ],
        "identifier": [
            {"use": "official", "system": "https://euclinicaltrials.eu", "value": "2024-500001-10-00"},
            {"use": "secondary", "system": "https://clinicaltrials.gov", "value": "NCT01234567"},
        ],
        "title": "Essai ALPHA",
        "status": "active",
        "condition": [{"id": "disease-condition", "text": "Cancer du sein"}],
        "contact": [{"extension": [ext("contact-name", valueHumanName={"family": "Martin"})],
                     "name": "Centre"}],
        "enrollment": [{"reference": "Group/g1"}],
        "site": [{"reference": "Location/l1"}],
        "arm": [{"name": "A", "extension": [ext("arm-intervention", extension=[
            {"url": "name", "valueString": "Bras A"}])]}],
    }


def brief(found: list[Issue]) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(i.severity, i.code, i.expression) for i in found]


def test_the_registry_holds_the_eclaire_profiles_and_fr_core_patient_ins() -> None:
    assert {STUDY, GROUP, LOCATION, profiles.FR_CORE_PATIENT_INS} <= set(profiles.held())
    assert profiles.find(f"{STUDY}|0.3.1") is not None
    assert profiles.find(f"{STUDY}|9.9") is None
    assert profiles.find("http://example.org/x") is None


def test_a_valid_eclaire_study_passes() -> None:
    assert VALIDATOR.outcome(study()) == []
    # Without narrative: dom-6, a best-practice invariant of DomainResource, warns only.
    bare = {k: v for k, v in study().items() if k != "text"}
    assert brief(VALIDATOR.outcome(bare)) == [("warning", "invariant", ("ResearchStudy",))]


def test_a_broken_copy_fails_with_element_paths() -> None:
    broken = copy.deepcopy(study())
    broken["sponsor"] = {"reference": "Organization/o1"}  # 0..0
    broken["identifier"].append({"use": "official", "value": "again"})  # idPrimary 0..1
    broken["enrollment"] = [{"reference": "Patient/p1"}]  # targetProfile eclaire-group
    broken["extension"][0] = ext("review-date", valueDate="2024-03-01")  # instant only
    broken["extension"][1]["valueCodeableConcept"]["coding"][0]["code"] = "paused"  # extensible
    broken["condition"] = [{"id": "disease-condition"}, {"id": "x", "text": "ok"}]
    broken["arm"][0]["extension"][0]["extension"].append({"url": "name", "valueString": "B"})
    assert sorted(brief(VALIDATOR.outcome(broken))) == sorted([
        ("error", "structure", ("ResearchStudy.extension[0].valueDate",)),
        ("warning", "code-invalid", ("ResearchStudy.extension[1].valueCodeableConcept",)),
        ("error", "structure", ("ResearchStudy.identifier",)),
        ("error", "invariant", ("ResearchStudy.condition[0]",)),  # ele-1: an id alone is no content
        ("error", "structure", ("ResearchStudy.enrollment[0].reference",)),
        ("error", "structure", ("ResearchStudy.sponsor",)),
        ("error", "structure", ("ResearchStudy.arm[0].extension[0].extension",)),
    ])


def test_pattern_on_a_slice_is_what_picks_it() -> None:
    # `use` picks the slice (value discriminator): an `official` identifier is idPrimary, so a
    # second one exceeds its 0..1; a `usual` one matches no slice and is allowed (open).
    resource = study()
    resource["identifier"].append({"use": "usual", "value": "local-1"})
    assert VALIDATOR.outcome(resource) == []


def test_slicing_without_discriminator_matches_by_conformance() -> None:
    # condition:diseaseCondition (id pattern "disease-condition") needs text 1..1: a condition
    # with that id but no text conforms to no slice, and the slicing is open.
    resource = study()
    resource["condition"] = [{"id": "disease-condition", "coding": [{"code": "x"}]}]
    assert VALIDATOR.outcome(resource) == []


def test_required_cardinality_inside_a_backbone() -> None:
    resource = study()
    resource["arm"] = [{"description": "no name"}]
    # the R4 schema already requires arm.name: the schema layer reports it first
    assert brief(VALIDATOR.outcome(resource)) == [("error", "required", ("ResearchStudy.arm[0].name",))]


def test_extension_by_definition_wherever_it_is_used() -> None:
    resource = study()
    resource["contact"][0]["extension"][0] = ext("contact-name", valueString="Martin")
    assert brief(VALIDATOR.outcome(resource)) == [
        ("error", "structure", ("ResearchStudy.contact[0].extension[0].valueString",))]


def test_profile_of_another_type_is_an_error() -> None:
    group = {"resourceType": "Group", "type": "person", "actual": True,
             "meta": {"profile": [STUDY]}}
    assert brief(VALIDATOR.outcome(group)) == [("error", "invalid", ("Group.meta.profile",))]


def test_asked_profile_applies_without_meta_profile() -> None:
    resource = study()
    del resource["meta"]
    resource["sponsor"] = {"reference": "Organization/o1"}
    assert VALIDATOR.outcome(resource) == []
    assert brief(VALIDATOR.outcome(resource, [STUDY])) == [("error", "structure", ("ResearchStudy.sponsor",))]


@pytest.mark.parametrize(("value", "pattern", "ok"), [
    ({"coding": [{"system": "s", "code": "c"}, {"code": "d"}]}, {"coding": [{"code": "d"}]}, True),
    ({"coding": [{"system": "s", "code": "c"}]}, {"coding": [{"system": "t"}]}, False),
    ("official", "official", True),
    ({"a": 1}, {"a": 1, "b": 2}, False),
])
def test_pattern_matching(value: Any, pattern: Any, ok: bool) -> None:
    assert snapshot._matches(value, pattern) is ok


def test_bindings_read_the_terminology_catalogue() -> None:
    pairs, codes = snapshot._members(f"{BASE}/ValueSet/eclaire-status-recruitment-vs") or ((), ())
    assert (RECRUITMENT, "recruiting") in pairs
    assert "recruiting" in codes
    assert snapshot._members("http://example.org/vs") is None


def test_a_required_binding_to_a_value_set_not_held_is_a_warning() -> None:
    found = snapshot._binding(("required", "http://example.org/vs"), "x", "X.code")
    assert found is not None and brief([found]) == [("warning", "not-supported", ("X.code",))]
    assert snapshot._binding(("extensible", "http://example.org/vs"), "x", "X.code") is None


def test_vendored_package_is_named_with_version_and_licence() -> None:
    package = snapshot.PROFILES_DIR / "eclaire-0.3.1"
    meta = (package / "package.json").read_text()
    assert '"version" : "0.3.1"' in meta and '"license" : "CC0-1.0"' in meta
    assert (package / "README.md").exists()


def test_a_resource_inside_a_bundle_is_checked_against_the_profile_it_claims() -> None:
    inner = study()
    inner["sponsor"] = {"reference": "Organization/o1"}
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": inner}]}
    assert brief(VALIDATOR.outcome(bundle)) == [
        ("error", "structure", ("Bundle.entry[0].resource.sponsor",))]


def test_a_primitive_given_by_its_extensions_only_counts_and_is_not_compared() -> None:
    resource = study()
    del resource["status"]
    resource["_status"] = {"extension": [{"url": "http://example.org/why", "valueString": "x"}]}
    resource["identifier"][1] = {"_use": {"extension": [{"url": "http://example.org/u",
                                                         "valueString": "y"}]}, "value": "z"}
    assert VALIDATOR.outcome(resource) == []


def test_the_vendored_eclaire_resources_are_valid_r4() -> None:
    # Only warnings, if any: a meta.profile naming a profile we do not hold.
    package = snapshot.PROFILES_DIR / "eclaire-0.3.1"
    checked = 0
    for path in sorted(package.glob("*-*.json")):
        resource = json.loads(path.read_text())
        found = VALIDATOR.outcome(resource)
        assert all(i.severity == "warning" and i.code == "not-supported" for i in found), path
        checked += 1
    assert checked == 18


def test_absent_elements_are_checked_for_cardinality_only() -> None:
    """An element absent from the resource (most of a profile's are: the check skips them)
    still breaks its profile when required, itself or through a required slice."""
    sd = {"url": "http://example.org/sd", "type": "Patient", "snapshot": {"element": [
        {"id": "Patient", "path": "Patient", "min": 0, "max": "*"},
        {"id": "Patient.gender", "path": "Patient.gender", "min": 1, "max": "1", "type": [{"code": "code"}]},
        {"id": "Patient.identifier", "path": "Patient.identifier", "min": 0, "max": "*",
         "slicing": {"discriminator": [{"type": "value", "path": "system"}], "rules": "open"}},
        {"id": "Patient.identifier:nir", "path": "Patient.identifier", "sliceName": "nir", "min": 1, "max": "1"},
        {"id": "Patient.identifier:nir.system", "path": "Patient.identifier.system", "min": 1, "max": "1",
         "fixedUri": "urn:oid:1.2.250.1.213.1.4.8"},
        {"id": "Patient.birthDate", "path": "Patient.birthDate", "min": 0, "max": "0"},
    ]}}
    checker = snapshot.Definition.load(sd)
    found = [(i.code, i.expression) for i in checker.check({"resourceType": "Patient"}, "Patient")]
    assert found == [("required", ("Patient.gender",)), ("required", ("Patient.identifier",))]
    assert checker.check({"resourceType": "Patient", "gender": "female", "identifier": [
        {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "1"}]}, "Patient") == []
    # `_gender` (a primitive given by its extensions) is there: not absent
    assert checker.check({"resourceType": "Patient", "_gender": {"extension": [
        {"url": "http://example.org/x", "valueString": "y"}]}, "identifier": [
        {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "1"}]}, "Patient") == []


@pytest.mark.parametrize(("canonical", "held"), [
    (profiles.FR_CORE_PATIENT_INS, True),
    (f"{profiles.FR_CORE_PATIENT_INS}|2.2.0", True),
    (f"{profiles.FR_CORE_PATIENT_INS}|2.1.0", True),
    (f"{profiles.FR_CORE_PATIENT_INS}|2.0.1", True),
    (f"{profiles.FR_CORE_PATIENT_INS}|2.2.0-ballot-2", True),
    (f"{profiles.FR_CORE_PATIENT_INS}|9.9.9", False),  # rules not written for it: not held
    (f"{profiles.FR_CORE_PATIENT_INS}|1.1.0", False),
    (f"{STUDY}|0.3.1", True),
    (f"{STUDY}|0.3.2", False),
])
def test_a_profile_is_held_in_the_versions_its_rules_follow(canonical: str, held: bool) -> None:
    """The INS rules follow FR Core 2.0 to 2.2; a claim of another version is not checked as
    if it were one of those (a `$validate` `profile` of it is a 400, a `meta.profile` a warning)."""
    assert (profiles.find(canonical) is not None) is held


def test_a_reference_to_any_resource_takes_every_type() -> None:
    """R4's Reference(Any) names `…/StructureDefinition/Resource`: every type conforms
    (the referral's payload refers to its frozen record, a Bundle)."""
    referral = {
        "resourceType": "Communication", "status": "in-progress",
        "category": [{"coding": [{"system": "https://oncotrials.example.org/fhir/CodeSystem/referral-message",
                                  "code": "referral"}]}],
        "subject": {"reference": "Patient/p1"}, "about": [{"reference": "ResearchStudy/s1"}],
        "sent": "2026-12-06T10:00:00Z", "sender": {"reference": "Practitioner/dr"},
        "recipient": [{"reference": "CareTeam/t1"}],
        "payload": [{"contentReference": {"reference": "Bundle/frozen-1"}},
                    {"contentReference": {"reference": "http://example.org/fhir/Binary/b1/_history/2"}}]}
    profile = "https://oncotrials.example.org/fhir/StructureDefinition/referral-communication"
    found = Validator(use_models=False).outcome(referral, [profile])
    assert [i for i in found if i.severity == "error"] == []
    referral["subject"] = {"reference": "Group/g1"}  # a typed reference still is
    assert [i.expression for i in Validator(use_models=False).outcome(referral, [profile])
            if i.severity == "error"] == [("Communication.subject.reference",)]
