"""create, read, vread, update, delete over HTTP (FHIR R4 http.html#create .. #delete)."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

import orjson
from fastapi.testclient import TestClient

from tests.builders import observation, patient
from tests.http.helpers import create, issue, send


def test_create_assigns_id_version_and_returns_headers(client: TestClient) -> None:
    response = create(client, patient(id="client-chosen"))
    assert response.status_code == 201
    body = response.json()
    assert body["id"] != "client-chosen"  # POST ignores a client id (http.html#create)
    assert body["meta"]["versionId"] == "1"
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["location"] == f"http://testserver/fhir/Patient/{body['id']}/_history/1"
    assert parsedate_to_datetime(response.headers["last-modified"]).tzinfo is not None
    assert response.headers["content-type"].startswith("application/fhir+json")


def test_read_returns_what_was_stored(client: TestClient) -> None:
    created = create(client, patient()).json()
    response = client.get(f"/fhir/Patient/{created['id']}")
    assert response.status_code == 200
    assert response.json() == created
    assert response.headers["etag"] == 'W/"1"'


def test_json_is_kept_as_sent_decimals_and_order(client: TestClient) -> None:
    body = (
        b'{"resourceType":"Observation","status":"final","code":{"text":"weight"},'
        b'"valueQuantity":{"value":64.50,"unit":"kg"},"subject":{"reference":"Patient/x"}}'
    )
    created = send(client, "POST", "/fhir/Observation", body=body)
    assert created.status_code == 201, created.text
    raw = client.get(f"/fhir/Observation/{created.json()['id']}").content
    assert b'"value":64.50' in raw
    keys = list(orjson.loads(raw))
    assert keys[:3] == ["resourceType", "id", "meta"]
    assert keys[3:] == ["status", "code", "valueQuantity", "subject"]


def test_update_creates_new_versions_and_vread_reads_each(client: TestClient) -> None:
    created = create(client, patient()).json()
    id = created["id"]
    changed = {**created, "gender": "other"}
    response = send(client, "PUT", f"/fhir/Patient/{id}", changed)
    assert response.status_code == 200
    assert response.json()["meta"]["versionId"] == "2"
    assert response.headers["etag"] == 'W/"2"'
    assert client.get(f"/fhir/Patient/{id}/_history/1").json()["gender"] == "female"
    v2 = client.get(f"/fhir/Patient/{id}/_history/2")
    assert v2.json()["gender"] == "other"
    assert v2.headers["etag"] == 'W/"2"'


def test_update_as_create_with_client_id(client: TestClient) -> None:
    response = send(client, "PUT", "/fhir/Patient/chosen-1", patient(id="chosen-1"))
    assert response.status_code == 201
    assert response.headers["location"].endswith("/Patient/chosen-1/_history/1")
    assert client.get("/fhir/Patient/chosen-1").status_code == 200


def test_server_owns_meta_version_and_time(client: TestClient) -> None:
    sent = patient(id="p1", meta={"versionId": "99", "lastUpdated": "2001-01-01T00:00:00Z",
                                  "tag": [{"system": "urn:t", "code": "demo"}]})
    stored = send(client, "PUT", "/fhir/Patient/p1", sent).json()
    assert stored["meta"]["versionId"] == "1"
    assert stored["meta"]["lastUpdated"] != "2001-01-01T00:00:00Z"
    assert stored["meta"]["tag"] == [{"system": "urn:t", "code": "demo"}]


def test_delete_then_read_is_gone_and_delete_again_is_fine(client: TestClient) -> None:
    id = create(client, patient()).json()["id"]
    first = client.delete(f"/fhir/Patient/{id}")
    assert first.status_code == 204
    assert first.headers["etag"] == 'W/"2"'
    gone = client.get(f"/fhir/Patient/{id}")
    assert gone.status_code == 410
    assert issue(gone)["code"] == "deleted"
    again = client.delete(f"/fhir/Patient/{id}")
    assert again.status_code == 204
    assert client.get(f"/fhir/Patient/{id}/_history/2").status_code == 410
    assert client.get(f"/fhir/Patient/{id}/_history/1").status_code == 200


def test_delete_of_unknown_resource_succeeds(client: TestClient) -> None:
    assert client.delete("/fhir/Patient/never-there").status_code == 204


def test_update_after_delete_recreates(client: TestClient) -> None:
    send(client, "PUT", "/fhir/Patient/p2", patient(id="p2"))
    client.delete("/fhir/Patient/p2")
    again = send(client, "PUT", "/fhir/Patient/p2", patient(id="p2"))
    assert again.status_code == 201
    assert again.json()["meta"]["versionId"] == "3"


def test_read_unknown_is_404_with_outcome(client: TestClient) -> None:
    response = client.get("/fhir/Patient/nope")
    assert response.status_code == 404
    assert issue(response)["code"] == "not-found"
    assert client.get("/fhir/Patient/nope/_history/1").status_code == 404


def test_vread_of_missing_version_is_404(client: TestClient) -> None:
    id = create(client, patient()).json()["id"]
    assert client.get(f"/fhir/Patient/{id}/_history/7").status_code == 404
    assert client.get(f"/fhir/Patient/{id}/_history/abc").status_code == 404


def test_prefer_return_minimal_and_operation_outcome(client: TestClient) -> None:
    minimal = create(client, patient(), Prefer="return=minimal")
    assert minimal.status_code == 201
    assert minimal.content == b""
    assert minimal.headers["location"]
    outcome = create(client, patient(), Prefer="return=OperationOutcome")
    assert outcome.status_code == 201
    assert outcome.json()["resourceType"] == "OperationOutcome"
    assert outcome.json()["issue"][0]["severity"] == "information"
    full = create(client, patient(), Prefer="return=representation")
    assert full.json()["resourceType"] == "Patient"


def test_if_match_version_aware_update(client: TestClient) -> None:
    created = create(client, patient()).json()
    id = created["id"]
    ok = send(client, "PUT", f"/fhir/Patient/{id}", created, If_Match='W/"1"')
    assert ok.status_code == 200
    stale = send(client, "PUT", f"/fhir/Patient/{id}", created, If_Match='W/"1"')
    assert stale.status_code == 412
    assert issue(stale)["code"] == "conflict"
    bad = send(client, "PUT", f"/fhir/Patient/{id}", created, If_Match="banana")
    assert bad.status_code == 400
    assert client.get(f"/fhir/Patient/{id}").json()["meta"]["versionId"] == "2"


def test_if_match_on_delete(client: TestClient) -> None:
    id = create(client, patient()).json()["id"]
    assert client.delete(f"/fhir/Patient/{id}", headers={"If-Match": 'W/"5"'}).status_code == 412
    assert client.delete(f"/fhir/Patient/{id}", headers={"If-Match": 'W/"1"'}).status_code == 204


def test_pretty_and_format(client: TestClient) -> None:
    id = create(client, patient()).json()["id"]
    pretty = client.get(f"/fhir/Patient/{id}?_pretty=true")
    assert b"\n  " in pretty.content
    assert client.get(f"/fhir/Patient/{id}?_format=json").status_code == 200
    assert client.get(f"/fhir/Patient/{id}?_format=application/fhir%2Bjson").status_code == 200


def test_observation_round_trip(client: TestClient) -> None:
    subject = create(client, patient()).json()["id"]
    created = create(client, observation(f"Patient/{subject}"))
    assert created.status_code == 201
    assert created.json()["subject"] == {"reference": f"Patient/{subject}"}
