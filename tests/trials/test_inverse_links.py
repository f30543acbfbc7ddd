"""Only the investigators of a study see its inverse match and ask for its candidates
(access/study_match.py `linked`): any other investigator is answered as for a missing study."""

from __future__ import annotations

from typing import Any

from tests.http.helpers import send
from tests.trials.eligibility_builders import group
from tests.trials.inverse_world import CRITERIA, STUDY, InverseWorld, inverse_world  # noqa: F401
from tests.trials.match_world import RECENT, location, site, study

OUTSIDER = "Practitioner/outsider"


def _outsider(world: InverseWorld) -> dict[str, str]:
    """An investigator working at a Nantes site only, principal investigator of study `s3`."""
    client = world.client
    for resource in ({"resourceType": "Practitioner", "id": "outsider", "active": True},
                     {"resourceType": "Organization", "id": "chu-nantes", "active": True},
                     {**location("nantes", postal="44000"),
                      "managingOrganization": {"reference": "Organization/chu-nantes"}},
                     {"resourceType": "PractitionerRole", "id": "outsider-role", "active": True,
                      "practitioner": {"reference": OUTSIDER}, "location": [{"reference": "Location/nantes"}]},
                     group("s3-criteria", *CRITERIA),
                     {**study("s3", "phase-2", [site("lyon", "recruiting", RECENT)]),
                      "principalInvestigator": {"reference": OUTSIDER}}):
        r = send(client, "PUT", f"/fhir/{resource['resourceType']}/{resource['id']}", resource)
        assert r.status_code in (200, 201), r.text
    tokens = client.app.state.tokens  # type: ignore[attr-defined]
    token = tokens.issue(subject="out", client_id="portal", scope="user/*.cruds", fhir_user=OUTSIDER)
    return {"Authorization": f"Bearer {token['access_token']}"}


def _post(world: InverseWorld, path: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    return send(world.client, "POST", path, body, **headers)


def test_an_investigator_of_another_site_is_answered_as_for_a_missing_study(inverse_world: InverseWorld) -> None:
    headers = _outsider(inverse_world)
    linked = inverse_world.match(STUDY, "investigator").json()
    [alias] = [p["part"][0]["valueString"] for p in linked["parameter"] if p["name"] == "candidate"]
    missing = _post(inverse_world, "/fhir/ResearchStudy/nothing/$match", {"resourceType": "Parameters"}, headers)
    for path, body in ((f"/fhir/ResearchStudy/{STUDY}/$match", {"resourceType": "Parameters"}),
                       (f"/fhir/ResearchStudy/{STUDY}/$ask-referral", {"resourceType": "Parameters", "parameter": [
                           {"name": "candidate", "valueString": alias}]})):
        r = _post(inverse_world, path, body, headers)
        assert r.status_code == 404, r.text
        assert r.json()["issue"][0]["code"] == missing.json()["issue"][0]["code"] == "not-found"
    found = inverse_world.client.get("/fhir/Communication?subject=Patient/bea",
                                     headers=inverse_world.headers("ehr")).json()
    assert not any("outsider" in p.get("contentString", "") for e in found.get("entry", [])
                   for p in e["resource"].get("payload", []))


def test_the_principal_investigator_named_by_the_study_sees_its_counts(inverse_world: InverseWorld) -> None:
    headers = _outsider(inverse_world)
    r = _post(inverse_world, "/fhir/ResearchStudy/s3/$match", {"resourceType": "Parameters"}, headers)
    assert r.status_code == 200, r.text
    assert r.json()["resourceType"] == "Parameters"
