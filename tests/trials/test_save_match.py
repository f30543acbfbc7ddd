"""`POST [base]/ResearchStudy/{id}/$save-match` (docs/matching.md, "Saving a result"): a
referring physician keeps a patient as a `potential-candidate` ResearchSubject carrying the
result; once only; never an ineligible patient nor one out of reach; nobody else."""

from __future__ import annotations

from typing import Any

import pytest

from tests.http.helpers import send
from tests.trials.inverse_world import STUDY, InverseWorld, inverse_world  # noqa: F401


def _save(world: InverseWorld, patient: str, who: str = "physician", study: str = STUDY) -> Any:
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "patient", "valueReference": {"reference": f"Patient/{patient}"}}]}
    return send(world.client, "POST", f"/fhir/ResearchStudy/{study}/$save-match", body, **world.headers(who))


def _subjects(world: InverseWorld, patient: str) -> list[dict[str, Any]]:
    found = world.client.get(f"/fhir/ResearchSubject?individual=Patient/{patient}",
                             headers=world.headers("ehr")).json()
    return [e["resource"] for e in found.get("entry", [])]


def test_a_physician_saves_a_potential_candidate_once(inverse_world: InverseWorld) -> None:
    response = _save(inverse_world, "ann")
    assert response.status_code == 201, response.text
    assert response.headers["Location"].startswith("http://testserver/fhir/ResearchSubject/")
    subject = response.json()
    assert subject["status"] == "potential-candidate"
    assert subject["study"] == {"reference": f"ResearchStudy/{STUDY}"}
    assert subject["individual"] == {"reference": "Patient/ann"}
    [result] = subject["extension"]
    assert result["url"].endswith("/StructureDefinition/eligibility-match-result")
    assert result["extension"][0]["url"] == "verdict"
    assert result["extension"][0]["valueCoding"]["code"] == "eligible"
    assert {"url": "criteria", "valueReference": {"reference": f"Group/{STUDY}-criteria/_history/1"}} in result["extension"]
    again = _save(inverse_world, "ann")
    assert again.status_code == 200
    assert again.json()["id"] == subject["id"]
    assert len(_subjects(inverse_world, "ann")) == 1
    events = inverse_world.client.get("/fhir/AuditEvent?patient=Patient/ann&subtype=operation&_count=50",
                                      headers=inverse_world.headers("ehr")).json()["entry"]
    assert any(f"ResearchSubject/{subject['id']}" in {x.get("what", {}).get("reference", "").split("/_history")[0]
                                                      for x in e["resource"]["entity"]} for e in events)


def test_an_ineligible_patient_is_refused_and_nothing_stored(inverse_world: InverseWorld) -> None:
    response = _save(inverse_world, "gus")  # lung cancer
    assert response.status_code == 422
    assert "patient" in response.json()["issue"][0]["expression"][0]
    assert _subjects(inverse_world, "gus") == []


@pytest.mark.parametrize(("who", "patient"), [
    ("physician", "eve"),  # another physician's patient
    ("physician", "nobody"),
])
def test_a_patient_out_of_reach_is_not_found(inverse_world: InverseWorld, who: str, patient: str) -> None:
    response = _save(inverse_world, patient, who)
    assert response.status_code == 404
    assert _subjects(inverse_world, patient) == []


@pytest.mark.parametrize("who", ["investigator", "site", "patient", "admin", "ehr"])
def test_nobody_else_saves(inverse_world: InverseWorld, who: str) -> None:
    existing = _save(inverse_world, "bea", who)
    made_up = _save(inverse_world, "bea", who, study="no-such-study")
    assert existing.status_code == made_up.status_code == 404
    assert _subjects(inverse_world, "bea") == []


@pytest.mark.parametrize("parameters", [
    [], [{"name": "patient", "valueReference": {"reference": "Group/x"}}],
    [{"name": "colour", "valueString": "blue"}],
])
def test_bad_parameters_store_nothing(inverse_world: InverseWorld, parameters: list[dict[str, Any]]) -> None:
    body: dict[str, Any] = {"resourceType": "Parameters", **({"parameter": parameters} if parameters else {})}
    response = send(inverse_world.client, "POST", f"/fhir/ResearchStudy/{STUDY}/$save-match", body,
                    **inverse_world.headers("physician"))
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"
    assert _subjects(inverse_world, "cat") == []
