"""The shared Synthea sample loaded once (its transaction Bundles), with a referring physician
consented to by one patient and a legal representative of another; brute-force scans of it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from fhir_server.app import create_app
from fhir_server.search import extract, patients_of
from fhir_server.settings import Settings
from tests.builders import consent
from tests.conftest import SHARED, authorized, token
from tests.http.helpers import send

DOCTOR = "Practitioner/dr-privacy"
GUARDIAN = "RelatedPerson/guardian"


@pytest.fixture(scope="module")
def synthea(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("privacy"), base_url="http://testserver/fhir")
    with authorized(TestClient(create_app(settings))) as client:
        for path in sorted((SHARED / "synthea").glob("*.json")):
            response = send(client, "POST", "/fhir", orjson.loads(path.read_bytes()))
            assert response.status_code == 200, response.text
        first, second = sorted(patient_ids(client))[:2]
        body = {**consent(first, actor=DOCTOR), "id": "privacy-permit"}
        assert send(client, "PUT", "/fhir/Consent/privacy-permit", body).status_code == 201
        guardian = {"resourceType": "RelatedPerson", "id": "guardian", "active": True,
                    "patient": {"reference": f"Patient/{second}"},
                    "relationship": [{"coding": [{
                        "system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "GUARD"}]}]}
        assert send(client, "PUT", "/fhir/RelatedPerson/guardian", guardian).status_code == 201
        yield client


def patient_ids(client: TestClient) -> set[str]:
    return {r["id"] for r in scan(client, "Patient")}


def scan(client: TestClient, resource_type: str, query: str = "") -> list[dict[str, Any]]:
    """Every resource of a type (matching `query`), page after page, with the system token of
    `authorized`."""
    found: list[dict[str, Any]] = []
    url: str | None = f"/fhir/{resource_type}?_count=1000{'&' if query else ''}{query}"
    while url:
        page = client.get(url).json()
        found += [e["resource"] for e in page.get("entry", [])]
        url = next((link["url"].removeprefix("http://testserver")
                    for link in page.get("link", []) if link["relation"] == "next"), None)
    return found


def compartment(client: TestClient, patient: str, types: list[str]) -> set[str]:
    """Brute force: every stored resource whose compartment parameters name the patient."""
    registry = client.app.state.context.registry  # type: ignore[attr-defined]
    return {f"{t}/{r['id']}" for t in types for r in scan(client, t)
            if patient in patients_of(registry, t, extract(r), r["id"], links=False)}


def bearer(client: TestClient, scope: str, **claims: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(client, scope, **claims)}"}
