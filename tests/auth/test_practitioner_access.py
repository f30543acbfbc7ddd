"""A referring physician's `user/` scopes reach the records of the patients whose privacy
consent in force names them, nothing else; withdrawing the consent removes access at once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.app import create_app
from fhir_server.settings import Settings
from tests.builders import consent, observation, patient
from tests.conftest import authorized, token
from tests.http.helpers import send

DOCTOR = "Practitioner/dr-martin"


@pytest.fixture
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("consents"), base_url="http://testserver/fhir")
    with authorized(TestClient(create_app(settings))) as client:
        for id in ("consented", "stranger", "expired"):
            assert send(client, "PUT", f"/fhir/Patient/{id}", {**patient(), "id": id}).status_code == 201
            body = {**observation(f"Patient/{id}"), "id": f"{id}-obs"}
            assert send(client, "PUT", f"/fhir/Observation/{id}-obs", body).status_code == 201
        consents = {"c-ok": consent("consented", actor=DOCTOR, start="2020-01-01"),
                    "c-old": consent("expired", actor=DOCTOR, start="2020-01-01", end="2021-01-01"),
                    "c-other": consent("stranger", actor="Practitioner/someone-else", start="2020-01-01")}
        for id, body in consents.items():
            assert send(client, "PUT", f"/fhir/Consent/{id}", {**body, "id": id}).status_code == 201
        yield client


def _doctor(client: TestClient, scope: str = "user/*.rs") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(client, scope, fhir_user=DOCTOR)}"}


def _ids(response: Any) -> set[str]:
    assert response.status_code == 200, response.text
    return {e["resource"]["id"] for e in response.json().get("entry", [])
            if e["search"]["mode"] == "match"}


def test_reach_follows_the_consents_in_force(world: TestClient) -> None:
    headers = _doctor(world)
    assert world.get("/fhir/Patient/consented", headers=headers).status_code == 200
    for other in ("stranger", "expired"):
        assert world.get(f"/fhir/Patient/{other}", headers=headers).status_code == 404
        assert world.get(f"/fhir/Observation/{other}-obs", headers=headers).status_code == 404
    assert _ids(world.get("/fhir/Observation", headers=headers)) == {"consented-obs"}
    assert _ids(world.get("/fhir/Patient", headers=headers)) == {"consented"}


def test_writes_need_the_consent_too(world: TestClient) -> None:
    writer = _doctor(world, "user/*.cruds")
    assert send(world, "POST", "/fhir/Observation", observation("Patient/consented"), **writer).status_code == 201
    assert send(world, "POST", "/fhir/Observation", observation("Patient/stranger"), **writer).status_code == 403


def test_withdrawing_consent_removes_access_at_once(world: TestClient) -> None:
    headers = _doctor(world)
    assert world.get("/fhir/Patient/consented", headers=headers).status_code == 200
    withdrawn = {**consent("consented", actor=DOCTOR, start="2020-01-01"), "id": "c-ok", "status": "inactive"}
    assert send(world, "PUT", "/fhir/Consent/c-ok", withdrawn).status_code == 200
    assert world.get("/fhir/Patient/consented", headers=headers).status_code == 404
    assert _ids(world.get("/fhir/Observation", headers=headers)) == set()


def test_a_user_without_consents_or_identity_reaches_nothing(world: TestClient) -> None:
    nobody = {"Authorization": f"Bearer {token(world, 'user/*.rs', fhir_user='Practitioner/new')}"}
    assert _ids(world.get("/fhir/Observation", headers=nobody)) == set()
    anonymous = {"Authorization": f"Bearer {token(world, 'user/*.rs')}"}
    assert world.get("/fhir/Observation", headers=anonymous).status_code == 403
