"""A relative signs in (SMART App Launch, standalone, docs/privacy.md "Relatives"): the patient
picker offers the patient who delegates to them, and the token (patient/ scopes, that patient
in context) reaches what the delegation grants and nothing more."""

from __future__ import annotations

import secrets

from fastapi.testclient import TestClient

from fhir_server.auth.users import Users
from tests.auth.live import PASSWORD, REDIRECT, authorize, code_of, pending_of, second_factor
from tests.builders import observation, patient
from tests.conftest import token as system_token
from tests.http.helpers import send
from tests.privacy.test_relatives import delegation, related_person

SCOPE = "openid fhirUser launch/patient patient/*.rs"


def test_a_relative_signs_in_picks_the_patient_and_gets_the_grant(app_client: TestClient) -> None:
    client = app_client
    admin = {"Authorization": f"Bearer {system_token(client, 'system/*.cruds')}"}
    for resource in ({**patient(), "id": "a"}, {**patient(family="Autre"), "id": "b"},
                     {**observation("Patient/a"), "id": "a-obs"}, related_person("a")):
        url = f"/fhir/{resource['resourceType']}/{resource['id']}"
        assert send(client, "PUT", url, resource, **admin).status_code == 201
    assert send(client, "POST", "/fhir/Consent", delegation(["Observation"]), **admin).status_code == 201
    registry = client.app.state.oauth.registry  # type: ignore[attr-defined]
    registry.add_app("family-app", SCOPE, [REDIRECT])
    Users(registry).add("daughter", PASSWORD, "RelatedPerson/daughter")
    verifier = secrets.token_urlsafe(48)
    pending = pending_of(authorize(client, verifier, "family-app", SCOPE).text)
    password = client.post("/auth/login", data={"pending": pending, "username": "daughter",
                                                "password": PASSWORD})
    picker = second_factor(client, pending, "daughter", password.text)
    assert picker.status_code == 200 and 'value="a"' in picker.text and 'value="b"' not in picker.text
    assert client.post("/auth/pick", data={"pending": pending, "patient": "a"}).status_code == 200
    code = code_of(client.post("/auth/consent", data={"pending": pending, "decision": "approve"},
                               follow_redirects=False))
    issued = client.post("/auth/token", data={"grant_type": "authorization_code", "code": code,
                                              "redirect_uri": REDIRECT, "client_id": "family-app",
                                              "code_verifier": verifier})
    assert issued.status_code == 200 and issued.json()["patient"] == "a", issued.text
    headers = {"Authorization": f"Bearer {issued.json()['access_token']}"}
    found = client.get("/fhir/Observation", headers=headers).json()
    assert [e["resource"]["id"] for e in found["entry"]] == ["a-obs"]
    assert client.get("/fhir/Condition", headers=headers).status_code == 403
    assert client.get("/fhir/Patient/b", headers=headers).status_code == 404
