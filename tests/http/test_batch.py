"""Batch Bundles over HTTP (FHIR R4 http.html#transaction, bundle.html#batch-response).

Each entry succeeds or fails on its own and gets its own response (status, location, etag,
lastModified, or an OperationOutcome), in request order.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fhir_server.app import create_app
from fhir_server.settings import Settings
from tests.conftest import authorized
from tests.builders import INS_NIR, identified_patient, observation, patient
from tests.http.bundle_helpers import entry, json_patch, located_id, post_bundle, responses
from tests.http.helpers import FHIR_JSON, issue, send
from tests.http.test_errors import _store_digest

NIR = "275039912345627"


@pytest.mark.parametrize("path", ["/fhir", "/fhir/"])
@pytest.mark.parametrize("content_type", [FHIR_JSON, "application/json"])
def test_batch_is_accepted_at_base_with_json_types(client: TestClient, path: str, content_type: str) -> None:
    response = post_bundle(client, "batch", [entry("POST", "Patient", patient())],
                           path=path, content_type=content_type)
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "batch-response"
    assert responses(response)[0]["status"] == "201 Created"


def test_entries_succeed_or_fail_independently(client: TestClient) -> None:
    send(client, "PUT", "/fhir/Patient/a", patient(id="a"))
    response = post_bundle(client, "batch", [
        entry("POST", "Patient", patient(family="Valid")),
        entry("POST", "Patient", patient(gender="x")),
        entry("PUT", "Patient/a", patient(family="Stale", id="a"), ifMatch='W/"4"'),
        entry("GET", "Patient/missing"),
        entry("DELETE", "Patient/a"),
        entry("PUT", "Patient/b", patient(id="b")),
    ])
    assert response.status_code == 200, response.text
    created, invalid, stale, missing, deleted, put = responses(response)
    assert created["status"] == "201 Created"
    assert created["location"].startswith("Patient/") and created["etag"] == 'W/"1"'
    assert created["lastModified"]
    assert invalid["status"].startswith("422")
    assert invalid["outcome"]["resourceType"] == "OperationOutcome"
    assert "Patient.gender" in invalid["outcome"]["issue"][0]["expression"]
    assert stale["status"].startswith("412") and stale["outcome"]["issue"][0]["diagnostics"]
    assert missing["status"].startswith("404")
    assert deleted["status"].startswith("204")
    assert put["status"] == "201 Created" and put["location"] == "Patient/b/_history/1"
    assert client.get(f"/fhir/Patient/{located_id(created)}").status_code == 200
    assert client.get("/fhir/Patient/a").status_code == 410
    assert client.get("/fhir/Patient/b").status_code == 200


def test_entries_run_in_request_order(client: TestClient) -> None:
    """Unlike a transaction, a batch does not reorder: the GET before the PUT sees no resource."""
    response = post_bundle(client, "batch", [
        entry("GET", "Patient/a"),
        entry("PUT", "Patient/a", patient(id="a")),
        entry("GET", "Patient/a"),
    ])
    before, put, after = responses(response)
    assert before["status"].startswith("404")
    assert put["status"] == "201 Created"
    assert after["status"] == "200 OK" and response.json()["entry"][2]["resource"]["id"] == "a"


def test_if_none_exist_matches_an_earlier_entry_of_the_same_batch(client: TestClient) -> None:
    criteria = f"identifier={INS_NIR}|{NIR}"
    response = post_bundle(client, "batch", [
        entry("POST", "Patient", identified_patient(NIR), ifNoneExist=criteria),
        entry("POST", "Patient", identified_patient(NIR), ifNoneExist=criteria),
    ])
    first, second = responses(response)
    assert first["status"] == "201 Created" and second["status"] == "200 OK"
    assert located_id(first) == located_id(second)


def test_if_none_match(client: TestClient) -> None:
    send(client, "PUT", "/fhir/Patient/a", patient(id="a"))
    response = post_bundle(client, "batch", [
        entry("GET", "Patient/a", ifNoneMatch='W/"1"'),
        entry("PUT", "Patient/a", patient(family="Other", id="a"), ifNoneMatch="*"),
        entry("PUT", "Patient/b", patient(id="b"), ifNoneMatch="*"),
    ])
    not_modified, exists, created = responses(response)
    assert not_modified["status"].startswith("304")
    assert exists["status"].startswith("412")
    assert created["status"] == "201 Created"
    assert client.get("/fhir/Patient/a").json()["name"][0]["family"] == "Dupont"


def test_patch_and_conditional_entries(client: TestClient) -> None:
    send(client, "PUT", "/fhir/Patient/a", identified_patient(NIR, id="a"))
    response = post_bundle(client, "batch", [
        entry("PATCH", "Patient/a", json_patch([{"op": "replace", "path": "/gender", "value": "male"}])),
        entry("PUT", f"Patient?identifier={INS_NIR}|{NIR}", identified_patient(NIR, active=True)),
        entry("DELETE", "Patient?identifier=urn:example|none"),
    ])
    patched, updated, nothing = responses(response)
    assert patched["status"] == "200 OK" and patched["etag"] == 'W/"2"'
    assert updated["status"] == "200 OK" and updated["location"] == "Patient/a/_history/3"
    stored = client.get("/fhir/Patient/a").json()
    assert stored["gender"] == "female" and stored["active"] is True  # the PUT replaced the patch
    assert nothing["status"].startswith("204")


def test_batch_entries_may_not_depend_on_each_other(client: TestClient) -> None:
    """A placeholder is not rewritten in a batch (http.html#transaction: no interdependencies)."""
    response = post_bundle(client, "batch", [
        entry("POST", "Patient", patient(), full_url="urn:uuid:5b0e3c1a-0000-4000-8000-000000000001"),
        entry("POST", "Observation", observation("urn:uuid:5b0e3c1a-0000-4000-8000-000000000001")),
    ])
    assert response.status_code == 200
    stored = client.get(f"/fhir/{responses(response)[1]['location'].rsplit('/_history', 1)[0]}").json()
    assert stored["subject"]["reference"] == "urn:uuid:5b0e3c1a-0000-4000-8000-000000000001"


def test_malformed_batch_is_refused_whole(client: TestClient, settings: Settings) -> None:
    before = _store_digest(settings)
    response = post_bundle(client, "batch", [
        entry("POST", "Patient", patient()), {"resource": patient()}])
    assert response.status_code == 400
    assert issue(response)["expression"] == ["Bundle.entry[1].request"]
    duplicate = post_bundle(client, "batch", [
        entry("PUT", "Patient/a", patient(id="a"), full_url="http://testserver/fhir/Patient/a"),
        entry("PUT", "Patient/a", patient(id="a"), full_url="http://testserver/fhir/Patient/a"),
    ])
    assert duplicate.status_code == 400
    assert issue(duplicate)["expression"] == ["Bundle.entry[1].fullUrl"]
    assert _store_digest(settings) == before


def test_more_entries_than_the_limit_is_413(tmp_path: Path) -> None:
    small = Settings(data_dir=tmp_path, base_url="http://testserver/fhir", max_bundle_entries=2)
    with authorized(TestClient(create_app(small))) as client:
        response = post_bundle(client, "batch", [entry("GET", "Patient") for _ in range(3)])
        assert response.status_code == 413
        assert issue(response)["code"] == "too-costly"
