"""Hostile input gets a 4xx OperationOutcome and leaves the store untouched; a batch answers
for each entry whatever fails inside one.

FHIR R4 http.html#transaction (batch: each entry on its own), datatypes.html#string (1 MB),
json.html; the server's own limits are in docs/rest.md ("Limits") and docs/search.md.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.builders import patient
from tests.http.bundle_helpers import entry, post_bundle, responses
from tests.http.helpers import issue, send, stored

_PADDING = [{"system": "urn:example:pad", "value": "x" * 100} for _ in range(12_000)]  # > 1 MB


def nested_extension(levels: int) -> dict[str, Any]:
    """An extension holding an extension ... `levels` deep (each level: an object and an array)."""
    inner: dict[str, Any] = {"url": "urn:example:leaf", "valueString": "v"}
    for _ in range(levels):
        inner = {"url": "urn:example:node", "extension": [inner]}
    return inner


def _deep_arrays(levels: int) -> bytes:
    return b'{"resourceType":"Patient","name":' + b"[" * levels + b"]" * levels + b"}"


BAD_BODIES: dict[str, bytes] = {
    "extensions 127 deep (past orjson's 255 levels)":
        json.dumps(patient(extension=[nested_extension(127)])).encode(),
    "extensions 60 deep (past 100 levels in a resource)":
        json.dumps(patient(extension=[nested_extension(60)])).encode(),
    "arrays 400 deep": _deep_arrays(400),
    "arrays 10,000 deep": _deep_arrays(10_000),
    "objects 10,000 deep": b'{"resourceType":"Patient","a":' + b'{"a":' * 10_000 + b"1" + b"}" * 10_001,
    "unpaired surrogate": b'{"resourceType":"Patient","name":[{"family":"\\ud800"}]}',
    "5,000-digit integer": b'{"resourceType":"Patient","multipleBirthInteger":' + b"9" * 5000 + b"}",
    "integer past 64 bits": b'{"resourceType":"Patient","multipleBirthInteger":' + b"9" * 30 + b"}",
    "5,000-digit decimal": b'{"resourceType":"Observation","status":"final","code":{"text":"x"},'
                           b'"valueQuantity":{"value":1.' + b"5" * 5000 + b"}}",
    "decimal out of range": b'{"resourceType":"Observation","status":"final","code":{"text":"x"},'
                            b'"valueQuantity":{"value":1e999}}',
    "repeated name": b'{"resourceType":"Observation","resourceType":"Patient"}',
    "repeated name, colon escaped elsewhere":
        b'{"resourceType":"Patient","gender":"male","gender":"female","name":[{"text":"a\\u003ab"}]}',
    "repeated name deep inside": b'{"resourceType":"Patient","name":[{"family":"a","family":"b"}]}',
    "string over 1 MB": json.dumps(patient(name=[{"family": "x" * (1024 * 1024 + 1)}])).encode(),
}


def _large(body: bytes) -> bytes:
    """The same content in a body over 1 MB (parsed by the other parser, see model/jsonbody)."""
    head, _, tail = body.partition(b"{")
    return head + b'{"identifier":' + json.dumps(_PADDING).encode() + b"," + tail


@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("name", list(BAD_BODIES))
def test_bad_body_is_refused_and_changes_nothing(client: TestClient, name: str, size: str) -> None:
    send(client, "PUT", "/fhir/Patient/p1", patient(id="p1"))
    before = stored(client)
    body = BAD_BODIES[name] if size == "small" else _large(BAD_BODIES[name])
    resource_type = "Observation" if b'"Observation","status"' in body else "Patient"
    response = send(client, "POST", f"/fhir/{resource_type}", body=body)
    assert response.status_code in (400, 413, 422), response.text
    assert issue(response)["severity"] == "error"
    assert issue(response)["diagnostics"]
    assert stored(client) == before


def test_repeated_name_says_which(client: TestClient) -> None:
    body = b'{"resourceType":"Patient","name":[{"family":"a","family":"b"}]}'
    response = send(client, "POST", "/fhir/Patient", body=body)
    assert response.status_code == 400
    assert "'family'" in issue(response)["diagnostics"]


def test_limits_are_not_refusals_of_ordinary_content(client: TestClient) -> None:
    """Just inside every limit: a 1 MB string, 100 levels, colons and escapes in text."""
    assert send(client, "POST", "/fhir/Patient", patient(name=[{"family": "x" * 1024 * 1024}])).status_code == 201
    assert send(client, "POST", "/fhir/Patient", patient(extension=[nested_extension(48)])).status_code == 201
    body = b'{"resourceType":"Patient","name":[{"text":"a:b \\u003a \\ud83d\\ude00","family":"x"}]}'
    assert send(client, "POST", "/fhir/Patient", body=body).status_code == 201


@pytest.mark.parametrize("levels", [400, 10_000])
def test_patch_with_deep_arrays_is_refused(client: TestClient, levels: int) -> None:
    send(client, "PUT", "/fhir/Patient/p1", patch_target := patient(id="p1"))
    assert patch_target
    before = stored(client)
    document = b'[{"op":"add","path":"/name","value":' + b"[" * levels + b"]" * levels + b"}]"
    response = send(client, "PATCH", "/fhir/Patient/p1", body=document,
                    content_type="application/json-patch+json")
    assert response.status_code in (400, 413, 422), response.text
    assert stored(client) == before


def test_patch_that_makes_a_resource_too_deep_is_refused(client: TestClient) -> None:
    send(client, "PUT", "/fhir/Patient/p1", patient(id="p1"))
    before = stored(client)
    document = json.dumps([{"op": "add", "path": "/extension",
                            "value": [nested_extension(127)]}]).encode()
    response = send(client, "PATCH", "/fhir/Patient/p1", body=document,
                    content_type="application/json-patch+json")
    assert response.status_code in (400, 422), response.text
    assert stored(client) == before


def _post_deep_bundle(client: TestClient, bundle_type: str, entries: list[dict[str, Any]]) -> Any:
    """POST a Bundle too deep for orjson to write (the stdlib writes it)."""
    bundle = {"resourceType": "Bundle", "type": bundle_type, "entry": entries}
    return send(client, "POST", "/fhir", body=json.dumps(bundle).encode())


def test_batch_answers_each_entry_whatever_fails(client: TestClient) -> None:
    """5 good Patients, one 130 extensions deep, one with a bad code: 200, each entry answered."""
    good = [entry("POST", "Patient", patient()) for _ in range(5)]
    deep = entry("POST", "Patient", patient(extension=[nested_extension(130)]))
    bad_code = entry("POST", "Patient", patient(gender="nope"))
    response = _post_deep_bundle(client, "batch", [*good, deep, bad_code])
    assert response.status_code == 200, response.text
    statuses = [r["status"].split()[0] for r in responses(response)]
    assert statuses[:5] == ["201"] * 5
    assert statuses[5] in ("400", "413", "422")
    assert statuses[6] == "422"
    assert len(stored(client)) == 5


def test_batch_entry_that_fails_unexpectedly_is_answered_alone(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fhir_server.services import crud

    real = crud.create

    async def create(ctx: Any, resource_type: str, *args: Any, **kwargs: Any) -> Any:
        if resource_type == "Observation":
            raise RuntimeError("the store fell over")
        return await real(ctx, resource_type, *args, **kwargs)

    monkeypatch.setattr(crud, "create", create)
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    response = post_bundle(client, "batch", [entry("POST", "Observation", observation),
                                             entry("POST", "Patient", patient())])
    assert response.status_code == 200, response.text
    first, second = responses(response)
    assert first["status"].startswith("500")
    assert first["outcome"]["issue"][0]["code"] == "exception"
    assert "the store fell over" not in response.text
    assert second["status"].startswith("201")


def test_transaction_with_a_too_deep_entry_changes_nothing(client: TestClient) -> None:
    before = stored(client)
    response = _post_deep_bundle(client, "transaction", [
        entry("POST", "Patient", patient()),
        entry("POST", "Patient", patient(extension=[nested_extension(130)])),
    ])
    assert response.status_code in (400, 422), response.text
    assert stored(client) == before


def test_patch_entry_with_deep_arrays_is_refused(client: TestClient) -> None:
    send(client, "PUT", "/fhir/Patient/p1", patient(id="p1"))
    before = stored(client)
    document = b'[{"op":"add","path":"/name","value":' + b"[" * 400 + b"]" * 400 + b"}]"
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json",
              "data": base64.b64encode(document).decode()}
    response = post_bundle(client, "transaction", [entry("PATCH", "Patient/p1", binary)])
    assert response.status_code in (400, 422), response.text
    assert stored(client) == before


QUERIES = {
    "1,000 _id parameters": "&".join(f"_id=a{i}" for i in range(1000)),
    "2,000 name parameters": "&".join(f"name=a{i}" for i in range(2000)),
    "1,000 _id values in one parameter": "_id=" + ",".join(f"a{i}" for i in range(1000)),
    "2,000 values over 20 parameters": "&".join(
        "name=" + ",".join(f"a{i}{j}" for j in range(100)) for i in range(20)),
}


@pytest.mark.parametrize("name", list(QUERIES))
def test_oversized_query_is_refused(client: TestClient, name: str) -> None:
    response = client.get(f"/fhir/Patient?{QUERIES[name]}")
    assert response.status_code == 400, response.text
    assert issue(response)["code"] == "too-costly"
    response = client.post("/fhir/Patient/_search", content=QUERIES[name],
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400, response.text


def test_oversized_condition_is_refused_and_changes_nothing(client: TestClient) -> None:
    before = stored(client)
    response = send(client, "PUT", f"/fhir/Patient?{QUERIES['1,000 _id parameters']}", patient())
    assert response.status_code == 400, response.text
    assert stored(client) == before


def test_query_at_the_limits_is_answered(client: TestClient) -> None:
    query = "&".join("name=" + ",".join(f"a{i}{j}" for j in range(100)) for i in range(10))
    assert client.get(f"/fhir/Patient?{query}").status_code == 200
    assert client.get("/fhir/Patient?" + "&".join(f"_id=a{i}" for i in range(100))).status_code == 200
