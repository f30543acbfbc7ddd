"""`_summary`, `_format` and `_pretty` on the CapabilityStatement, and `_pretty`/`_format` on
every interaction (FHIR R4 http.html#parameters, search.html#summary, http.html#capabilities)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.builders import patient
from tests.http.bundle_helpers import entry, post_bundle
from tests.http.helpers import create, issue, send


def test_summary_true_is_the_short_statement(client: TestClient) -> None:
    full = client.get("/fhir/metadata")
    short = client.get("/fhir/metadata", params={"_summary": "true"})
    assert short.status_code == 200
    assert len(short.content) * 20 < len(full.content)
    statement = short.json()
    assert statement["resourceType"] == "CapabilityStatement"
    for element in ("status", "date", "kind", "fhirVersion", "format", "software"):
        assert statement[element] == full.json()[element]
    resources = statement["rest"][0]["resource"]
    assert {"Patient", "Observation"} <= {r["type"] for r in resources}
    assert all(set(r) <= {"type", "profile", "supportedProfile", "operation", "modifierExtension"}
               for r in resources)
    assert "SUBSETTED" in [t["code"] for t in statement["meta"]["tag"]]


@pytest.mark.parametrize("mode", ["text", "data", "false"])
def test_other_summary_views(client: TestClient, mode: str) -> None:
    response = client.get("/fhir/metadata", params={"_summary": mode})
    assert response.status_code == 200
    assert response.json()["resourceType"] == "CapabilityStatement"


def test_unknown_summary_view_is_400(client: TestClient) -> None:
    response = client.get("/fhir/metadata", params={"_summary": "count"})
    assert response.status_code == 400
    assert issue(response)["expression"] == ["_summary"]


@pytest.mark.parametrize("fmt", ["json", "application/fhir+json", "application/json"])
def test_format_and_pretty_on_metadata(client: TestClient, fmt: str) -> None:
    response = client.get("/fhir/metadata", params={"_summary": "true", "_format": fmt, "_pretty": "true"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert response.text.startswith('{\n  "resourceType": "CapabilityStatement"')
    compact = client.get("/fhir/metadata", params={"_summary": "true"})
    assert "\n" not in compact.text
    assert response.json() == compact.json()


def test_pretty_and_format_on_every_interaction(client: TestClient) -> None:
    created = create(client, patient(), Prefer="return=representation")
    id = created.json()["id"]
    pretty = {"_pretty": "true", "_format": "json"}
    responses = [
        client.get(f"/fhir/Patient/{id}", params=pretty),
        client.get(f"/fhir/Patient/{id}/_history/1", params=pretty),
        client.get("/fhir/Patient", params=pretty),
        client.get(f"/fhir/Patient/{id}/_history", params=pretty),
        client.get("/fhir/Patient/nope", params=pretty),
        send(client, "POST", "/fhir/Patient?_pretty=true&_format=json", patient()),
        send(client, "PUT", f"/fhir/Patient/{id}?_pretty=true", patient(id=id)),
        client.post("/fhir?_pretty=true", content=b"{}", headers={"Content-Type": "application/fhir+json"}),
    ]
    for response in responses:
        assert response.text.startswith("{\n  "), response.text[:80]
    bundle = post_bundle(client, "batch", [entry("GET", f"Patient/{id}")], path="/fhir?_pretty=true")
    assert bundle.text.startswith("{\n  ")
