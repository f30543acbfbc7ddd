"""A small trial catalogue and two patients for the $match tests: seven studies with their
eligibility Groups and sites (Paris, Lyon by postal code only, Bordeaux; one site closed, one
with a stale status), a patient a physician reaches and one nobody does."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server import clock
from fhir_server.trials.catalogue_sites import SITE_RECRUITMENT as SITE_STATUS_URL
from tests.builders import consent
from tests.trials.conftest import served
from tests.http.helpers import send
from tests.trials.eligibility_builders import (ICD10, LOINC, between, coded, condition, criterion,
                                               group, observation, patient, quantity)

GENDER = "http://hl7.org/fhir/administrative-gender"
PHASES = "http://terminology.hl7.org/CodeSystem/research-study-phase"
ECLAIRE_STATUS = "https://interop.esante.gouv.fr/ig/fhir/eclaire/CodeSystem/eclaire-status-recruitment-code-system"
DR = "Practitioner/dr-match"
HER2 = "48676-1"
POSITIVE = "LA6576-8"
# Site statuses confirmed lately, and long ago (stale: more than 90 days).
RECENT = (clock.now().date() - timedelta(days=10)).isoformat()
EARLIER = (clock.now().date() - timedelta(days=60)).isoformat()
STALE = (clock.now().date() - timedelta(days=400)).isoformat()


def location(id: str, *, position: tuple[float, float] | None = None, postal: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Location", "id": id, "status": "active", "name": id}
    if position:
        body["position"] = {"latitude": position[0], "longitude": position[1]}
    if postal:
        body["address"] = {"postalCode": postal, "country": "FR"}
    return body


def site(location_id: str, status: str, confirmed: str) -> dict[str, Any]:
    return {"reference": f"Location/{location_id}", "extension": [{"url": SITE_STATUS_URL, "extension": [
        {"url": "status", "valueCode": status}, {"url": "confirmed", "valueDateTime": confirmed}]}]}


def study(id: str, phase: str, sites: list[dict[str, Any]], status: str = "active") -> dict[str, Any]:
    return {"resourceType": "ResearchStudy", "id": id, "status": status, "title": id,
            "phase": {"coding": [{"system": PHASES, "code": phase}]},
            "enrollment": [{"reference": f"Group/{id}-criteria"}], "site": sites}


FEMALE = criterion("sex", coded(GENDER, "female"), text="Women")
BREAST = criterion("condition", coded(ICD10, "C50"), text="Breast cancer")
ADULT = criterion("age", quantity(18, ">=", "a"), text="18 years or older")
HER2_POSITIVE = criterion("biomarker", coded(LOINC, POSITIVE), measured=HER2, text="HER2 positive")
ECOG = criterion("ecog", between(0, 1), measured="89247-1", text="ECOG 0-1")
BRAIN = criterion("condition", coded(ICD10, "C79.3"), exclude=True, text="Brain metastases")
ORGANS = criterion("free-text", {"valueBoolean": True}, text="Adequate organ function")

CRITERIA = {
    "her2": [FEMALE, BREAST, ADULT, HER2_POSITIVE, ECOG, BRAIN, ORGANS],
    "breast": [BREAST, ADULT],
    "lung": [criterion("condition", coded(ICD10, "C34"), text="Lung cancer"), ADULT],
    "closed": [BREAST],
    "men": [BREAST, criterion("sex", coded(GENDER, "male"), text="Men")],
    # A diagnosis in a system the engine holds no rule for: unknown, with a warning.
    "done": [BREAST],
    "odd": [BREAST, criterion("condition", coded("urn:oid:1.2.3.4.5", "X1"), text="Local diagnosis")],
}
STUDIES = [
    study("her2", "phase-2", [site("lyon", "recruiting", RECENT),
                              site("paris-closed", "closed", RECENT)]),
    study("breast", "phase-1", [site("paris", "recruiting", EARLIER),
                                site("bordeaux", "recruiting", STALE)]),
    study("lung", "phase-3", [site("bordeaux", "recruiting", RECENT)]),
    study("closed", "phase-2", [site("paris", "recruiting", RECENT)], status="closed-to-accrual"),
    study("men", "phase-2", [site("paris", "recruiting", RECENT)]),
    study("odd", "phase-4", [site("paris", "recruiting", RECENT)]),
    # Active, but ECLAIRE says its recruitment is completed: not open.
    {**study("done", "phase-2", [site("paris", "recruiting", RECENT)]), "extension": [
        {"url": "https://interop.esante.gouv.fr/ig/fhir/eclaire/StructureDefinition/eclaire-recruitment-status",
         "valueCodeableConcept": {"coding": [{"system": ECLAIRE_STATUS, "code": "completed-recruiting"}]}}]},
]
LOCATIONS = [location("paris", position=(48.8566, 2.3522)), location("lyon", postal="69003"),
             location("bordeaux", position=(44.8378, -0.5792)),
             location("paris-closed", position=(48.85, 2.35))]


def alice_record() -> list[dict[str, Any]]:
    """Alice's resources (ids as stored)."""
    return [
        {**patient(birth="1970-06-15", id="alice"), "address": [{"postalCode": "75013"}]},
        {**condition("C50.4", id="alice-c"), "subject": {"reference": "Patient/alice"}},
        {**observation(HER2, coded(LOINC, POSITIVE), id="alice-her2"), "subject": {"reference": "Patient/alice"}},
    ]


@dataclass
class World:
    client: TestClient

    def headers(self, who: str) -> dict[str, str]:
        claims: dict[str, Any] = {
            "ehr": dict(subject="ehr", client_id="ehr", scope="system/*.cruds"),
            "physician": dict(subject="dr", client_id="portal", scope="user/*.cruds", fhir_user=DR),
            "alice": dict(subject="alice", client_id="portal", scope="patient/*.rs",
                          patient="alice", fhir_user="Patient/alice"),
        }[who]
        tokens = self.client.app.state.tokens  # type: ignore[attr-defined]
        return {"Authorization": f"Bearer {tokens.issue(**claims)['access_token']}"}

    def match(self, *parameters: dict[str, Any], who: str = "ehr") -> Any:
        body = {"resourceType": "Parameters", "parameter": list(parameters)}
        return send(self.client, "POST", "/fhir/ResearchStudy/$match", body, **self.headers(who))


def build(client: TestClient) -> None:
    def put(resource: dict[str, Any]) -> None:
        body = {k: v for k, v in resource.items() if k != "meta" or "profile" in v}
        if "meta" in body:
            body["meta"] = {"profile": body["meta"]["profile"]}
        response = send(client, "PUT", f"/fhir/{resource['resourceType']}/{resource['id']}", body)
        assert response.status_code in (200, 201), response.text

    put({"resourceType": "Practitioner", "id": "dr-match", "active": True})
    for resource in LOCATIONS:
        put(resource)
    for trial in STUDIES:
        put(group(f"{trial['id']}-criteria", *CRITERIA[trial["id"]]))
        put(trial)
    for resource in alice_record():
        put(resource)
    put({**consent("alice", actor=DR), "id": "alice-privacy"})
    put({**patient(id="bob", gender="male"), "meta": {}})


@pytest.fixture(scope="module", params=["sqlite", "mongodb-double"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          signing_keys: bytes) -> Iterator[World]:
    with served(request.param, tmp_path_factory.mktemp("match"), signing_keys) as client:
        build(client)
        yield World(client)
