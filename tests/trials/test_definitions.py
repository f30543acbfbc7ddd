"""The definitions we ship (terminology/, profiles/) are valid, consistent with the code that
uses them, stored at start-up and advertised."""

from __future__ import annotations

from fhir_server.model.platform_codes import OUTCOME_SYSTEM, concepts, definitions
from fhir_server.model.validation import Validator
from fhir_server.trials.referral import ANSWERS
from tests.trials.conftest import Platform

# ResearchSubject.status (R4 research-subject-status, required binding).
SUBJECT_STATUSES = {"candidate", "eligible", "follow-up", "ineligible", "not-registered", "off-study",
                    "on-study", "on-study-intervention", "on-study-observation", "pending-on-study",
                    "potential-candidate", "screening", "withdrawn"}


def test_definitions_are_valid_r4() -> None:
    validator = Validator(use_models=True)
    for resource in definitions():
        validator.validate(resource)
    assert {d["resourceType"] for d in definitions()} == {"CodeSystem", "SearchParameter",
                                                          "OperationDefinition", "ValueSet",
                                                          "ConceptMap", "StructureDefinition"}


def test_outcomes_map_to_research_subject_statuses() -> None:
    outcomes = concepts(OUTCOME_SYSTEM)
    assert set(ANSWERS) < set(outcomes)
    assert {c["research-subject-status"] for c in outcomes.values()} <= SUBJECT_STATUSES
    assert outcomes["not-preselected"]["needs-reason"] and not outcomes["preselected"]["final"]


def test_definitions_are_served_and_advertised(platform: Platform) -> None:
    ehr = platform.headers("ehr")
    for resource in definitions():
        stored = platform.client.get(f"/fhir/{resource['resourceType']}/{resource['id']}", headers=ehr)
        assert stored.status_code == 200
        assert {k: v for k, v in stored.json().items() if k != "meta"} == resource
    found = platform.client.get(f"/fhir/CodeSystem?url={OUTCOME_SYSTEM}", headers=ehr).json()
    assert [e["resource"]["id"] for e in found["entry"]] == ["referral-outcome"]
    statement = platform.client.get("/fhir/metadata").json()
    study = next(r for r in statement["rest"][0]["resource"] if r["type"] == "ResearchStudy")
    assert {o["name"] for o in study["operation"]} == {"match", "refer", "referral-summary", "load", "save-match",
                                                       "draft-criteria", "ask-referral"}
    # Two definitions of `match`: the trials of a patient, and the patients of a trial.
    assert sorted(o["definition"].rsplit("/", 1)[1] for o in study["operation"] if o["name"] == "match") == [
        "ResearchStudy-match", "ResearchStudy-match-patients"]
    communication = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Communication")
    assert {"about", "in-response-to", "payload"} <= {p["name"] for p in communication["searchParam"]}
    assert "Communication:payload" in communication["searchInclude"]
