"""Conditional create, update, patch and delete (FHIR R4 http.html#ccreate, #cond-update,
#cond-patch, #cdelete)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from fhir_server.app import create_app
from fhir_server.settings import Settings
from tests.conftest import authorized
from tests.builders import INS_NIR, identified_patient
from tests.http.helpers import create, issue, send

NIR = "262047512345667"
CRITERIA = f"identifier={INS_NIR}|{NIR}"


def test_if_none_exist_creates_once(client: TestClient) -> None:
    first = create(client, identified_patient(NIR), If_None_Exist=CRITERIA)
    assert first.status_code == 201
    second = create(client, identified_patient(NIR), If_None_Exist=CRITERIA)
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    history = client.get("/fhir/Patient/_history").json()
    assert len(history["entry"]) == 1


def test_if_none_exist_several_matches_is_412(client: TestClient) -> None:
    create(client, identified_patient(NIR))
    create(client, identified_patient(NIR))
    response = create(client, identified_patient(NIR), If_None_Exist=CRITERIA)
    assert response.status_code == 412
    assert issue(response)["code"] == "multiple-matches"


def test_if_none_exist_accepts_type_prefixed_form(client: TestClient) -> None:
    create(client, identified_patient(NIR))
    response = create(client, identified_patient(NIR), If_None_Exist=f"Patient?{CRITERIA}")
    assert response.status_code == 200


def test_conditional_criteria_must_be_understood(client: TestClient) -> None:
    response = create(client, identified_patient(NIR), If_None_Exist="banana=1")
    assert response.status_code == 400
    assert issue(response)["expression"] == ["banana"]
    assert client.get("/fhir/Patient/_history").json().get("entry") is None


def test_conditional_update_create_then_update(client: TestClient) -> None:
    url = f"/fhir/Patient?{CRITERIA}"
    created = send(client, "PUT", url, identified_patient(NIR))
    assert created.status_code == 201
    id = created.json()["id"]
    updated = send(client, "PUT", url, identified_patient(NIR, gender="other"))
    assert updated.status_code == 200
    assert updated.json()["id"] == id
    assert updated.json()["meta"]["versionId"] == "2"


def test_conditional_update_id_mismatch_and_ambiguity(client: TestClient) -> None:
    url = f"/fhir/Patient?{CRITERIA}"
    send(client, "PUT", url, identified_patient(NIR))
    mismatch = send(client, "PUT", url, identified_patient(NIR, id="someone-else"))
    assert mismatch.status_code == 400
    create(client, identified_patient(NIR))
    ambiguous = send(client, "PUT", url, identified_patient(NIR))
    assert ambiguous.status_code == 412
    assert send(client, "PUT", "/fhir/Patient", identified_patient(NIR)).status_code == 400


def test_conditional_patch(client: TestClient) -> None:
    id = create(client, identified_patient(NIR)).json()["id"]
    ops = [{"op": "replace", "path": "/gender", "value": "male"}]
    response = send(client, "PATCH", f"/fhir/Patient?{CRITERIA}", ops,
                    content_type="application/json-patch+json")
    assert response.status_code == 200
    assert response.json()["id"] == id
    none = send(client, "PATCH", "/fhir/Patient?identifier=x|y", ops,
                content_type="application/json-patch+json")
    assert none.status_code == 404


def test_conditional_delete_single(client: TestClient) -> None:
    id = create(client, identified_patient(NIR)).json()["id"]
    assert client.delete(f"/fhir/Patient?{CRITERIA}").status_code == 204
    assert client.get(f"/fhir/Patient/{id}").status_code == 410
    assert client.delete(f"/fhir/Patient?{CRITERIA}").status_code == 204  # no match: fine


def test_conditional_delete_several_is_412_by_default(client: TestClient) -> None:
    create(client, identified_patient(NIR))
    create(client, identified_patient(NIR))
    response = client.delete(f"/fhir/Patient?{CRITERIA}")
    assert response.status_code == 412
    assert len(client.get("/fhir/Patient/_history").json()["entry"]) == 2


def test_conditional_delete_multiple_when_enabled(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, base_url="http://testserver/fhir",
                        conditional_delete_multiple=True)
    with authorized(TestClient(create_app(settings))) as client:
        ids = [create(client, identified_patient(NIR)).json()["id"] for _ in range(3)]
        response = client.delete(f"/fhir/Patient?{CRITERIA}", headers={"Prefer": "return=OperationOutcome"})
        assert response.status_code == 200
        assert "3" in issue(response)["diagnostics"]
        assert all(client.get(f"/fhir/Patient/{id}").status_code == 410 for id in ids)
        statement = client.get("/fhir/metadata").json()
        assert statement["rest"][0]["resource"][0]["conditionalDelete"] == "multiple"


def test_conditional_delete_without_criteria_is_400(client: TestClient) -> None:
    assert client.delete("/fhir/Patient").status_code == 400
