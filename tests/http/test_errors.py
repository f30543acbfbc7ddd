"""Every client mistake gets an OperationOutcome with the right status and leaves data untouched.

FHIR R4 http.html (status codes per interaction), operationoutcome.html.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fhir_server.settings import Settings
from fhir_server.subscriptions.records import DISPATCHERS, LEASES
from tests.conftest import authorized
from tests.builders import patient
from tests.http.helpers import create, issue, send


# Outbox records the subscription dispatchers renew on a timer, whatever the requests: each
# dispatcher's "alive" record and the leases (subscriptions/records.py).
_TIMER_RECORDS = (DISPATCHERS, LEASES)


def _store_digest(settings: Settings) -> str:
    """A digest of every row of the store's tables (byte-identity of stored data), but the
    records background tasks renew on a timer."""
    import sqlite3

    conn = sqlite3.connect(Path(settings.store_url.removeprefix("sqlite:///")))
    digest = hashlib.sha256()
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
    for table in tables:
        for row in conn.execute(f"SELECT * FROM {table} ORDER BY 1"):  # noqa: S608 - names from sqlite_master
            if table == "outbox" and str(row[0]).startswith(_TIMER_RECORDS):
                continue
            digest.update(repr(row).encode())
    conn.close()
    return digest.hexdigest()


BAD_WRITES = [
    # (method, url, body, content type, status, issue code, expression)
    ("POST", "/fhir/Patient", b"{not json", "application/fhir+json", 400, "invalid", None),
    ("POST", "/fhir/Patient", b"[1, 2]", "application/fhir+json", 400, "structure", None),
    ("POST", "/fhir/Patient", b'{"resourceType":"Observation","status":"final","code":{"text":"x"}}',
     "application/fhir+json", 400, "invalid", "resourceType"),
    ("POST", "/fhir/Patient", b'{"name":[{"family":"x"}]}', "application/fhir+json", 400, "invalid",
     "resourceType"),
    ("POST", "/fhir/Patient", b'{"resourceType":"Patient","gender":"x"}', "application/fhir+json",
     422, None, "Patient.gender"),
    ("POST", "/fhir/Patient", b'{"resourceType":"Patient","foo":1}', "application/fhir+json", 422,
     None, "Patient.foo"),
    ("POST", "/fhir/Patient", b'{"resourceType":"Patient","birthDate":"2020-13-01"}',
     "application/fhir+json", 422, None, "Patient.birthDate"),
    ("POST", "/fhir/Patient", b'{"resourceType":"Patient"}', "application/xml", 415, "not-supported",
     None),
    ("POST", "/fhir/Patient", b'{"resourceType":"Patient"}', "text/plain", 415, "not-supported", None),
    ("POST", "/fhir/Banana", b'{"resourceType":"Banana"}', "application/fhir+json", 404,
     "not-supported", None),
    ("POST", "/fhir/SubscriptionTopic", b'{"resourceType":"SubscriptionTopic"}',
     "application/fhir+json", 404, "not-supported", None),
    ("PUT", "/fhir/Patient/p1", b'{"resourceType":"Patient","id":"p2"}', "application/fhir+json",
     400, "invalid", "Patient.id"),
    ("PUT", "/fhir/Patient/p1", b'{"resourceType":"Patient"}', "application/fhir+json", 400,
     "required", "Patient.id"),
    ("PUT", "/fhir/Patient/bad_id!", b'{"resourceType":"Patient","id":"bad_id!"}',
     "application/fhir+json", 400, "value", None),
    ("PUT", "/fhir/Patient/" + "x" * 65, b'{"resourceType":"Patient"}', "application/fhir+json", 400,
     "value", None),
]


@pytest.mark.parametrize(("method", "url", "body", "content_type", "status", "code", "expression"),
                         BAD_WRITES)
def test_bad_write_gets_outcome_and_changes_nothing(
    client: TestClient, settings: Settings, method: str, url: str, body: bytes, content_type: str,
    status: int, code: str | None, expression: str | None,
) -> None:
    send(client, "PUT", "/fhir/Patient/p1", patient(id="p1"))
    before = _store_digest(settings)
    response = send(client, method, url, body=body, content_type=content_type)
    assert response.status_code == status, response.text
    found = issue(response)
    assert found["severity"] == "error"
    if code is not None:
        assert found["code"] == code
    if expression is not None:
        expressions = [e for i in response.json()["issue"] for e in i.get("expression", [])]
        assert expression in expressions, expressions
    assert found["diagnostics"]
    assert _store_digest(settings) == before


def test_body_over_limit_is_413(tmp_path: Path) -> None:
    from fhir_server.app import create_app

    settings = Settings(data_dir=tmp_path, base_url="http://testserver/fhir", max_body_bytes=2048)
    with authorized(TestClient(create_app(settings))) as small:
        response = create(small, patient(text={"status": "generated",
                                               "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">"
                                                      + "x" * 4000 + "</div>"}))
        assert response.status_code == 413
        assert issue(response)["code"] == "too-costly"


def test_wrong_method_is_405_with_allow(client: TestClient) -> None:
    response = client.post("/fhir/Patient/p1", content=b"{}", headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == 405
    assert "GET" in response.headers["allow"]
    assert issue(response)["code"] == "not-supported"


def test_unknown_type_on_read_is_404(client: TestClient) -> None:
    response = client.get("/fhir/Banana/1")
    assert response.status_code == 404
    assert "Banana" in issue(response)["diagnostics"]


def test_not_acceptable_format_is_406(client: TestClient) -> None:
    assert client.get("/fhir/metadata", headers={"Accept": "application/fhir+xml"}).status_code == 406
    response = client.get("/fhir/Patient/p1?_format=xml")
    assert response.status_code == 406
    assert issue(response)["expression"] == ["_format"]


def test_accept_json_variants_are_fine(client: TestClient) -> None:
    for accept in ("application/json", "application/fhir+json;q=0.9, */*;q=0.1", "*/*"):
        assert client.get("/fhir/metadata", headers={"Accept": accept}).status_code == 200


def test_application_json_is_accepted_on_write(client: TestClient) -> None:
    response = send(client, "POST", "/fhir/Patient", patient(), content_type="application/json")
    assert response.status_code == 201


def test_unknown_path_is_404_outcome(client: TestClient) -> None:
    response = client.get("/elsewhere")
    assert response.status_code == 404
    assert issue(response)["code"] == "not-found"


def test_invalid_element_locations_are_fhirpath(client: TestClient) -> None:
    response = send(client, "POST", "/fhir/Patient",
                    {"resourceType": "Patient", "name": [{"given": "Hélène"}]})
    assert response.status_code == 422
    assert "Patient.name[0].given" in issue(response)["expression"]
