"""Requests refused before any work: unsupported methods on known paths (405, http.html),
non-UTF-8 bodies (415: FHIR JSON is UTF-8, json.html), ids that cannot be addressed.
Each leaves the store unchanged."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.builders import patient
from tests.http.bundle_helpers import entry, post_bundle, responses
from tests.http.helpers import issue, send, stored


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("DELETE", "/fhir/metadata", "GET"),
    ("PUT", "/fhir/metadata", "GET"),
    ("POST", "/fhir/metadata", "GET"),
    ("PATCH", "/fhir/metadata", "GET"),
    ("DELETE", "/fhir/_history", "GET"),
    ("POST", "/fhir/_history", "GET"),
    ("DELETE", "/fhir/Patient/_history", "GET"),
    ("PUT", "/fhir/Patient/_history", "GET"),
    ("POST", "/fhir/Patient/p1/_history", "GET"),
    ("DELETE", "/fhir/Patient/p1/_history/1", "GET"),
    ("GET", "/fhir/Patient/_search", "POST"),
    ("DELETE", "/fhir/_search", "POST"),
])
def test_unsupported_method_on_known_path_is_405(
    client: TestClient, method: str, path: str, allow: str
) -> None:
    send(client, "PUT", "/fhir/Patient/p1", patient(id="p1"))
    before = stored(client)
    response = send(client, method, path, patient() if method in ("PUT", "POST", "PATCH") else None)
    assert response.status_code == 405, response.text
    assert allow in response.headers["allow"]
    assert issue(response)["code"] == "not-supported"
    assert stored(client) == before


@pytest.mark.parametrize("path", ["/fhir/metadata", "/fhir/Patient?_id=p1", "/fhir/Patient/p1/_history",
                                  "/fhir/_history", "/fhir/Patient/p1/_history/1", "/fhir/Patient/nope"])
def test_head_is_answered_wherever_get_is(client: TestClient, path: str) -> None:
    # RFC 9110 §9.1: a general-purpose server supports HEAD: GET's status and headers, no body.
    send(client, "PUT", "/fhir/Patient/p1", patient(id="p1"))
    got, head = client.get(path), client.head(path)
    assert head.status_code == got.status_code, path
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]


def test_head_is_named_in_allow_beside_get(client: TestClient) -> None:
    assert client.delete("/fhir/metadata").headers["allow"] == "GET, HEAD"
    assert client.head("/fhir/Patient/_search").headers["allow"] == "POST"


@pytest.mark.parametrize("charset", ["iso-8859-1", "latin1", "utf-16", "windows-1252"])
def test_non_utf8_charset_is_415(client: TestClient, charset: str) -> None:
    before = stored(client)
    body = '{"resourceType":"Patient","name":[{"family":"Hélène"}]}'.encode("latin-1")
    response = send(client, "POST", "/fhir/Patient", body=body,
                    content_type=f"application/fhir+json; charset={charset}")
    assert response.status_code == 415, response.text
    assert charset in issue(response)["diagnostics"]
    assert stored(client) == before


@pytest.mark.parametrize("charset", ["utf-8", "UTF-8", '"utf-8"', "utf8"])
def test_utf8_charset_is_fine(client: TestClient, charset: str) -> None:
    response = send(client, "POST", "/fhir/Patient", patient(),
                    content_type=f"application/fhir+json; charset={charset}")
    assert response.status_code == 201, response.text


def test_non_utf8_form_is_415(client: TestClient) -> None:
    response = client.post("/fhir/Patient/_search", content="name=H\xe9l\xe8ne".encode("latin-1"),
                           headers={"Content-Type": "application/x-www-form-urlencoded; charset=iso-8859-1"})
    assert response.status_code == 415, response.text


@pytest.mark.parametrize("id", ["..", "."])
def test_dot_segment_id_is_refused(client: TestClient, id: str) -> None:
    before = stored(client)
    encoded = id.replace(".", "%2E")
    response = send(client, "PUT", f"/fhir/Patient/{encoded}", patient(id=id))
    assert response.status_code == 400, response.text
    assert "location" not in response.headers
    response = send(client, "PUT", "/fhir/Patient?identifier=urn:x|1", patient(id=id))
    assert response.status_code == 400, response.text
    assert "location" not in response.headers
    assert client.get(f"/fhir/Patient/{encoded}").status_code == 400
    assert stored(client) == before


def test_dot_segment_id_in_bundles_is_refused(client: TestClient) -> None:
    before = stored(client)
    response = post_bundle(client, "transaction",
                           [entry("PUT", "Patient?identifier=urn:x|1", patient(id=".."))])
    assert response.status_code == 400, response.text
    response = post_bundle(client, "batch", [entry("PUT", "Patient?identifier=urn:x|1", patient(id="..")),
                                             entry("PUT", "Patient/%2E%2E", patient(id=".."))])
    assert [r["status"][:3] for r in responses(response)] == ["400", "400"]
    assert ".." not in str([r.get("location") for r in responses(response)])
    assert stored(client) == before


def test_query_values_that_are_not_utf8_are_400(client: TestClient) -> None:
    # Percent-decoded %ff is not UTF-8: searching for U+FFFD instead would answer another question.
    send(client, "PUT", "/fhir/Patient/p1", patient(id="p1"))
    before = stored(client)
    refused = [
        client.get("/fhir/Patient?name=%ff"),
        client.get("/fhir/Patient?%ff=x"),
        client.post("/fhir/Patient/_search", content=b"name=%ff",
                    headers={"Content-Type": "application/x-www-form-urlencoded"}),
        send(client, "POST", "/fhir/Patient", patient(), If_None_Exist="name=%ff"),
        client.delete("/fhir/Patient?_id=%ff"),
        send(client, "PUT", "/fhir/Patient?_id=%ff", patient()),
    ]
    for response in refused:
        assert response.status_code == 400, (response.request.url, response.text)
        assert issue(response)["code"] == "invalid"
    batch = post_bundle(client, "batch", [entry("GET", "Patient?name=%ff"),
                                          entry("DELETE", "Patient?_id=%ff")])
    assert [r["status"][:3] for r in responses(batch)] == ["400", "400"]
    assert stored(client) == before
    assert client.get("/fhir/Patient?name=%C3%A9").status_code == 200  # valid UTF-8 still searches
