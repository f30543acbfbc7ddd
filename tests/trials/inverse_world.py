"""A trial and patients in every consent state that matters to the inverse match
(`ResearchStudy/{id}/$match`), and every kind of caller: the referring physician, an
investigator (a user with a PractitionerRole), a site system acting for a care team, a
patient, an administrator, an EHR."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.access.consent import PRESCREENING, PURPOSE_SYSTEM
from fhir_server.auth.users import Users
from fhir_server.services.erase import forget_figures
from fhir_server.trials import inverse_counts
from tests.builders import consent, deny_provision
from tests.http.helpers import send
from tests.trials.conftest import served
from tests.trials.eligibility_builders import ICD10, coded, condition, criterion, group, patient, quantity
from tests.trials.match_world import RECENT, location, site, study

DR = "Practitioner/dr-inv-match"
OTHER_DR = "Practitioner/dr-other"
INVESTIGATOR = "Practitioner/inv-match"
TEAM = "CareTeam/inv-team"
STUDY = "s1"


def prescreening(patient_id: str, study_id: str = STUDY) -> dict[str, Any]:
    """A research Consent whose nested permit allows pre-screening for `study_id`."""
    body = consent(patient_id, "research")
    body["provision"]["provision"] = [{
        "type": "permit", "purpose": [{"system": PURPOSE_SYSTEM, "code": PRESCREENING}],
        "data": [{"meaning": "related", "reference": {"reference": f"ResearchStudy/{study_id}"}}]}]
    return body


# Patient id -> (ICD-10 diagnosis, Consents). Every one is an adult woman in Paris.
PATIENTS: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "ann": ("C50.4", [consent("ann", actor=DR), consent("ann", "research")]),
    "bea": ("C50.9", [consent("bea", actor=DR), prescreening("bea")]),
    "cat": ("C50.1", [consent("cat", actor=DR), prescreening("cat", "s2")]),
    "dot": ("C50.2", [consent("dot", actor=DR), consent("dot", "research", type="deny")]),
    "eve": ("C50.3", [consent("eve", actor=OTHER_DR)]),
    "fay": ("C50.5", []),
    "gus": ("C34.1", [consent("gus", actor=DR), consent("gus", "research")]),
    "hal": ("C50.8", [consent("hal", actor=DR), prescreening("hal"), consent("hal", type="deny")]),
}
# A privacy and a research permit in force, no objection (Eve agreed to privacy only).
COUNTED = ("ann", "bea", "cat", "gus")
CRITERIA = [criterion("condition", coded(ICD10, "C50"), text="Breast cancer"),
            criterion("age", quantity(18, ">=", "a"), text="18 years or older")]


@dataclass
class InverseWorld:
    client: TestClient

    def headers(self, who: str) -> dict[str, str]:
        claims: dict[str, Any] = {
            "physician": dict(subject="dr", client_id="portal", scope="user/*.cruds", fhir_user=DR),
            "investigator": dict(subject="inv", client_id="portal", scope="user/*.cruds",
                                 fhir_user=INVESTIGATOR),
            "site": dict(subject="site", client_id="site", scope="system/*.cruds"),
            "patient": dict(subject="bea", client_id="portal", scope="patient/*.cruds",
                            patient="bea", fhir_user="Patient/bea"),
            "admin": dict(subject="admin", client_id="portal", scope="user/*.cruds",
                          fhir_user="Practitioner/admin"),
            "ehr": dict(subject="ehr", client_id="ehr", scope="system/*.cruds"),
        }[who]
        tokens = self.client.app.state.tokens  # type: ignore[attr-defined]
        return {"Authorization": f"Bearer {tokens.issue(**claims)['access_token']}"}

    def match(self, study_id: str, who: str, *parameters: dict[str, Any]) -> Any:
        body: dict[str, Any] = {"resourceType": "Parameters"}
        if parameters:
            body["parameter"] = list(parameters)
        return send(self.client, "POST", f"/fhir/ResearchStudy/{study_id}/$match", body, **self.headers(who))


def build(client: TestClient) -> None:
    def put(resource: dict[str, Any]) -> None:
        body = {k: v for k, v in resource.items() if k != "meta" or "profile" in v}
        response = send(client, "PUT", f"/fhir/{resource['resourceType']}/{resource['id']}", body)
        assert response.status_code in (200, 201), response.text

    for reference in (DR, OTHER_DR, INVESTIGATOR, "Practitioner/admin", "Practitioner/member"):
        put({"resourceType": "Practitioner", "id": reference.split("/")[1], "active": True})
    put({"resourceType": "Organization", "id": "chu-lyon", "active": True, "name": "CHU Lyon"})
    put({**location("lyon", postal="69003"), "managingOrganization": {"reference": "Organization/chu-lyon"}})
    # The investigator works at the studies' site; the site system's team belongs to the
    # Organization managing it (access/study_match.py `linked`).
    put({"resourceType": "PractitionerRole", "id": "inv-match-role", "active": True,
         "practitioner": {"reference": INVESTIGATOR}, "location": [{"reference": "Location/lyon"}]})
    put({"resourceType": "CareTeam", "id": "inv-team", "status": "active",
         "participant": [{"member": {"reference": "Practitioner/member"}}],
         "managingOrganization": [{"reference": "Organization/chu-lyon"}]})
    for id in (STUDY, "s2"):
        put(group(f"{id}-criteria", *CRITERIA))
        put(study(id, "phase-2", [site("lyon", "recruiting", RECENT)]))
    for id, (code, consents) in PATIENTS.items():
        put({**patient(id=id), "address": [{"postalCode": "75013"}]})
        put({**condition(code, id=f"{id}-c"), "subject": {"reference": f"Patient/{id}"}})
        for n, body in enumerate(consents):
            put({**body, "id": f"{id}-k{n}"})


@pytest.fixture(scope="module", params=["sqlite", "mongodb-double"])
def inverse_world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                  signing_keys: bytes) -> Iterator[InverseWorld]:
    with served(request.param, tmp_path_factory.mktemp("inverse"), signing_keys) as client:
        build(client)
        app = client.app
        app.state.oauth.registry.add_backend_client(  # type: ignore[attr-defined]
            "site", "system/*.rs", jwks={"keys": []}, acts_for=[TEAM])
        Users(app.state.oauth.registry).add(  # type: ignore[attr-defined]
            "admin", "a long enough password", "Practitioner/admin", admin=True)
        yield InverseWorld(client)


def new_day(client: TestClient) -> None:
    """Forget every study's counts of the day, in this process and in the store, as a new
    day would."""
    client.portal.call(forget_figures, client.app.state.context.store)  # type: ignore[union-attr, attr-defined]
    for kept in inverse_counts._SNAPSHOTS.values():
        kept.clear()


@pytest.fixture
def exact_figures(inverse_world: InverseWorld, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Counts not rounded (to check them), computed anew and forgotten after the test."""
    monkeypatch.setattr(inverse_counts, "BASE", 1)
    new_day(inverse_world.client)
    yield
    new_day(inverse_world.client)
