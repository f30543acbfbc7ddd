"""An app on the embedded store with a system token, and helpers that call a terminology
operation by GET (query string) or POST (Parameters) with the same parameters."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.app import create_app
from fhir_server.settings import Settings
from tests.conftest import authorized

OURS = "https://oncotrials.example.org/fhir"
CANCER = f"{OURS}/CodeSystem/cancer-type"
HISTOLOGY = f"{OURS}/CodeSystem/histology"
BIOMARKER = f"{OURS}/CodeSystem/biomarker"
ECOG = f"{OURS}/CodeSystem/ecog-performance-status"
OUTCOME = f"{OURS}/CodeSystem/referral-outcome"
LOINC = "http://loinc.org"
# How each parameter is written in a Parameters body (the rest are valueString).
_KEYS = {"count": "valueInteger", "offset": "valueInteger", "activeOnly": "valueBoolean",
         "excludeNested": "valueBoolean", "abstract": "valueBoolean", "reverse": "valueBoolean",
         "includeDesignations": "valueBoolean", "displayLanguage": "valueCode",
         "code": "valueCode", "system": "valueUri", "url": "valueUri",
         "coding": "valueCoding", "codeableConcept": "valueCodeableConcept",
         "valueSet": "resource"}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with authorized(TestClient(create_app(settings))) as test_client:
        yield test_client


def parameters(**params: Any) -> dict[str, Any]:
    """A Parameters resource of `params` (a list value gives the parameter several times)."""
    items = []
    for name, value in params.items():
        for one in value if isinstance(value, list) else [value]:
            key = _KEYS.get(name, "valueString")
            items.append({"name": name, key: one if key != "valueInteger" else int(one)}
                         if key != "valueBoolean" else {"name": name, key: one == "true"})
    return {"resourceType": "Parameters", "parameter": items}


def get(client: TestClient, path: str, **params: Any) -> Any:
    """GET `path` with `params` as its query string; the response."""
    return client.get(f"/fhir/{path}", params=params)


def post(client: TestClient, path: str, **params: Any) -> Any:
    """POST `path` with `params` as a Parameters body; the response."""
    return client.post(f"/fhir/{path}", json=parameters(**params),
                       headers={"Content-Type": "application/fhir+json"})


def both(client: TestClient, path: str, **params: Any) -> dict[str, Any]:
    """The answer of the operation, checked to be the same by GET and by POST (an
    expansion's identifier and timestamp aside); 200 expected."""
    by_get, by_post = get(client, path, **params), post(client, path, **params)
    assert by_get.status_code == by_post.status_code == 200, (by_get.text, by_post.text)
    assert _stable(by_get.json()) == _stable(by_post.json())
    answer: dict[str, Any] = by_get.json()
    return answer


def _stable(answer: dict[str, Any]) -> dict[str, Any]:
    if "expansion" in answer:
        expansion = {k: v for k, v in answer["expansion"].items()
                     if k not in ("identifier", "timestamp")}
        return {**answer, "expansion": expansion}
    return answer


def value(answer: dict[str, Any], name: str) -> Any:
    """The value of the output parameter `name` (the first if several; None if absent)."""
    for p in answer["parameter"]:
        if p["name"] == name:
            return next((v for k, v in p.items() if k.startswith("value")), p.get("part"))
    return None


def properties(answer: dict[str, Any]) -> list[tuple[str, Any]]:
    """The (code, value) of each `property` of a $lookup answer."""
    out = []
    for p in answer["parameter"]:
        if p["name"] == "property":
            parts = {part["name"]: part for part in p["part"]}
            found = next(v for k, v in parts["value"].items() if k.startswith("value"))
            out.append((parts["code"]["valueCode"], found))
    return out


def outcome(response: Any, status: int) -> dict[str, Any]:
    """The OperationOutcome of an error response with `status`."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"][0]  # type: ignore[no-any-return]
