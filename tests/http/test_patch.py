"""PATCH with JSON Patch (FHIR R4 http.html#patch, RFC 6902)."""

from __future__ import annotations

import orjson
from fastapi.testclient import TestClient

from tests.builders import observation, patient
from tests.http.helpers import create, issue, send

JSON_PATCH = "application/json-patch+json"


def _patch(client: TestClient, url: str, ops: list[dict[str, object]], **headers: str):  # type: ignore[no-untyped-def]
    return send(client, "PATCH", url, ops, content_type=JSON_PATCH, **headers)


def test_patch_applies_and_versions(client: TestClient) -> None:
    id = create(client, patient()).json()["id"]
    response = _patch(client, f"/fhir/Patient/{id}", [{"op": "replace", "path": "/gender", "value": "male"},
                                                      {"op": "add", "path": "/active", "value": True}])
    assert response.status_code == 200, response.text
    assert response.json()["gender"] == "male"
    assert response.json()["active"] is True
    assert response.json()["meta"]["versionId"] == "2"
    assert response.headers["etag"] == 'W/"2"'


def test_patch_keeps_decimals_as_written(client: TestClient) -> None:
    body = orjson.dumps(observation("Patient/x")).replace(b'"value":64.5', b'"value":64.50')
    id = send(client, "POST", "/fhir/Observation", body=body).json()["id"]
    response = send(client, "PATCH", f"/fhir/Observation/{id}",
                    body=b'[{"op":"add","path":"/valueQuantity/comparator","value":"<"},'
                         b'{"op":"test","path":"/valueQuantity/value","value":64.50}]',
                    content_type=JSON_PATCH)
    assert response.status_code == 200, response.text
    raw = client.get(f"/fhir/Observation/{id}").content
    assert b'"value":64.50' in raw


def test_patch_failures(client: TestClient) -> None:
    id = create(client, patient()).json()["id"]
    url = f"/fhir/Patient/{id}"
    wrong_type = send(client, "PATCH", url, [{"op": "remove", "path": "/gender"}])
    assert wrong_type.status_code == 415
    malformed = _patch(client, url, [{"op": "jump", "path": "/gender"}])
    assert malformed.status_code == 400
    failed_test = _patch(client, url, [{"op": "test", "path": "/gender", "value": "male"}])
    assert failed_test.status_code == 422
    invalid_result = _patch(client, url, [{"op": "replace", "path": "/gender", "value": "robot"}])
    assert invalid_result.status_code == 422
    assert "Patient.gender" in issue(invalid_result)["expression"]
    change_id = _patch(client, url, [{"op": "replace", "path": "/id", "value": "other"}])
    assert change_id.status_code == 422
    missing = _patch(client, "/fhir/Patient/none", [{"op": "remove", "path": "/gender"}])
    assert missing.status_code == 404
    assert client.get(url).json()["meta"]["versionId"] == "1"


def test_patch_if_match(client: TestClient) -> None:
    id = create(client, patient()).json()["id"]
    ops = [{"op": "replace", "path": "/gender", "value": "male"}]
    assert _patch(client, f"/fhir/Patient/{id}", ops, If_Match='W/"9"').status_code == 412
    assert _patch(client, f"/fhir/Patient/{id}", ops, If_Match='W/"1"').status_code == 200
