"""A platform with every kind of actor of the referral workflow, in-process (TestClient):
patients in each consent state, a referring physician, investigators (a user with a
PractitionerRole, a site system acting for a CareTeam), a representative, an administrator."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.app import create_app
from fhir_server.auth.users import Users
from fhir_server.settings import Settings
from tests.builders import condition, consent, deny_provision, observation, patient
from tests.conftest import authorized
from tests.http.helpers import send

DR = "Practitioner/dr-martin"
INVESTIGATOR = "Practitioner/dr-inv"
ROLE = "PractitionerRole/inv-bordeaux"
TEAM = "CareTeam/onco-bordeaux"
ADMIN = "Practitioner/admin"
STUDY = "ResearchStudy/study-1"
REPRESENTATIVE = "RelatedPerson/mother"
OUTCOMES = "https://oncotrials.example.org/fhir/CodeSystem/referral-outcome"

# Patients, by the state of their consents (all with the physician named unless said).
STATES: dict[str, list[dict[str, Any]]] = {
    "shared": [consent("shared", actor=DR), consent("shared", "research")],
    "unshared": [consent("unshared", actor=DR)],
    "objected": [consent("objected", actor=DR), consent("objected", "research"),
                 consent("objected", "research", type="deny")],
    "denied": [consent("denied", actor=DR, deny=[deny_provision(DR)]), consent("denied", "research")],
    "restricted": [consent("restricted", actor=DR), consent("restricted", "research"),
                   consent("restricted", type="deny")],
    "withdrawn": [consent("withdrawn", actor=DR, status="inactive"), consent("withdrawn", "research")],
    "stranger": [],
    "minor": [consent("minor", actor=DR), consent("minor", "research")],
    "leaving": [consent("leaving", actor=DR), consent("leaving", "research")],
}


@dataclass
class Platform:
    client: TestClient

    def headers(self, actor: str, patient: str | None = None) -> dict[str, str]:
        """Bearer headers of `actor`: patient, representative, physician, investigator,
        site, admin, ehr."""
        tokens = self.client.app.state.tokens  # type: ignore[attr-defined]
        claims: dict[str, Any] = {
            "patient": dict(subject="patient", client_id="portal", scope="patient/*.cruds",
                            patient=patient, fhir_user=f"Patient/{patient}"),
            "representative": dict(subject="mother", client_id="portal", scope="patient/*.cruds",
                                   patient=patient, fhir_user=REPRESENTATIVE),
            "physician": dict(subject="dr", client_id="portal", scope="user/*.cruds", fhir_user=DR),
            "investigator": dict(subject="inv", client_id="portal", scope="user/*.cruds",
                                 fhir_user=INVESTIGATOR),
            "site": dict(subject="site", client_id="site", scope="system/*.cruds"),
            "admin": dict(subject="admin", client_id="portal", scope="user/*.cruds", fhir_user=ADMIN),
            "ehr": dict(subject="ehr", client_id="ehr", scope="system/*.cruds"),
        }[actor]
        return {"Authorization": f"Bearer {tokens.issue(**claims)['access_token']}"}

    def refer(self, patient: str, actor: str = "physician", recipients: tuple[str, ...] = (ROLE, TEAM),
              headers: dict[str, str] | None = None) -> Any:
        """POST $refer as `actor` (or with `headers`)."""
        body = {"resourceType": "Parameters", "parameter": [
            {"name": "patient", "valueReference": {"reference": f"Patient/{patient}"}},
            *({"name": "recipient", "valueReference": {"reference": r}} for r in recipients),
            {"name": "note", "valueString": "HER2+ metastatic, ECOG 1."}]}
        return send(self.client, "POST", f"/fhir/{STUDY}/$refer", body,
                    **(headers if headers is not None else self.headers(actor, patient)))

    def answer(self, referral: str, outcome: str, actor: str = "investigator", reason: str | None = None) -> Any:
        body: dict[str, Any] = {
            "resourceType": "Communication", "status": "completed",
            "inResponseTo": [{"reference": f"Communication/{referral}"}],
            "reasonCode": [{"coding": [{"system": OUTCOMES, "code": outcome}]}]}
        if reason:
            body["payload"] = [{"contentString": reason}]
        return send(self.client, "POST", "/fhir/Communication", body, **self.headers(actor))


def build(client: TestClient) -> None:
    """Store the world (as the EHR: system scopes)."""
    def put(resource: dict[str, Any]) -> None:
        response = send(client, "PUT", f"/fhir/{resource['resourceType']}/{resource['id']}", resource)
        assert response.status_code in (200, 201), response.text

    for reference in (DR, INVESTIGATOR, ADMIN, "Practitioner/dr-team"):
        put({"resourceType": "Practitioner", "id": reference.split("/")[1], "active": True})
    put({"resourceType": "PractitionerRole", "id": "inv-bordeaux", "active": True,
         "practitioner": {"reference": INVESTIGATOR}})
    put({"resourceType": "CareTeam", "id": "onco-bordeaux", "status": "active",
         "participant": [{"member": {"reference": "Practitioner/dr-team"}}]})
    put({"resourceType": "ResearchStudy", "id": "study-1", "status": "active",
         "title": "HER2+ metastatic breast cancer, phase II"})
    for id, consents in STATES.items():
        put({**patient(given=id.capitalize()), "id": id})
        put({**observation(f"Patient/{id}"), "id": f"{id}-obs"})
        put({**condition(f"Patient/{id}"), "id": f"{id}-cond"})
        for n, body in enumerate(consents):
            if body["status"] == "inactive":  # withdrawn: it was in force first
                put({**body, "id": f"{id}-c{n}", "status": "active"})
            put({**body, "id": f"{id}-c{n}"})
    put({"resourceType": "RelatedPerson", "id": "mother", "active": True,
         "patient": {"reference": "Patient/minor"},
         "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                                       "code": "GUARD"}]}]})


@contextmanager
def served(store: str, data: Path, signing_keys: bytes) -> Iterator[TestClient]:
    """A started app on `store` ("sqlite", or a double of tests/store/conftest.py) in `data`,
    its client sending a token with system scopes."""
    from tests.store.conftest import STORES

    (data / "signing-keys.json").write_bytes(signing_keys)
    settings = Settings(data_dir=data, base_url="http://testserver/fhir")
    app = create_app(settings, None if store == "sqlite" else STORES[store](data))
    with authorized(TestClient(app)) as client:
        yield client


@pytest.fixture(scope="module", params=["sqlite", "mongodb-double"])
def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
             signing_keys: bytes) -> Iterator[Platform]:
    """The world on each store (the MongoDB one over its in-process double)."""
    with served(request.param, tmp_path_factory.mktemp("platform"), signing_keys) as client:
        app = client.app
        build(client)
        app.state.oauth.registry.add_backend_client("site", "system/*.rs", jwks={"keys": []},
                                                    acts_for=[TEAM])
        Users(app.state.oauth.registry).add("admin", "a long enough password", ADMIN, admin=True)
        yield Platform(client)
