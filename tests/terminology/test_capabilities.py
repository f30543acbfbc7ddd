"""`GET [base]/metadata?mode=terminology` (FHIR R4 http.html#capabilities): a
TerminologyCapabilities resource describing the code systems held, the `$expand` parameters,
`$validate-code` and `$translate`; it validates as the resource it claims to be."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from fhir_server.model.validation import Validator
from tests.terminology.conftest import CANCER, LOINC, get

CORE_STATUS = "http://hl7.org/fhir/administrative-gender"


def _capabilities(client: TestClient, query: str = "") -> dict[str, Any]:
    response = client.get(f"/fhir/metadata?mode=terminology{query}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    return response.json()


def test_terminology_capabilities_describe_the_code_systems_held(client: TestClient) -> None:
    document = _capabilities(client)
    assert document["resourceType"] == "TerminologyCapabilities"
    assert document["status"] == "active" and document["kind"] == "instance"
    assert document["implementation"]["url"] == "http://testserver/fhir"
    assert not Validator().issues(document)  # a valid R4 resource
    systems = {s["uri"]: s for s in document["codeSystem"]}
    ours = systems[CANCER]
    [version] = ours["version"]
    assert version["isDefault"] is True and set(version["language"]) >= {"fr", "en"}
    assert {"code": "concept", "op": ["is-a", "descendent-of", "is-not-a", "generalizes", "=",
                                      "in", "not-in", "regex"]} in version["filter"]
    assert CORE_STATUS in systems  # the R4 core systems held
    assert LOINC not in systems and "http://snomed.info/sct" not in systems  # not held: not listed
    assert len(systems) == len(document["codeSystem"])  # each system once


def test_terminology_capabilities_name_what_the_operations_take(client: TestClient) -> None:
    document = _capabilities(client)
    parameters = {p["name"] for p in document["expansion"]["parameter"]}
    assert {"filter", "count", "offset", "activeOnly", "excludeNested", "includeDesignations",
            "displayLanguage"} <= parameters
    assert document["expansion"]["hierarchical"] is True and document["expansion"]["paging"] is True
    assert document["validateCode"] == {"translations": False}
    assert document["translation"] == {"needsMap": False}
    # What it says is what $expand does: a parameter listed is taken.
    found = get(client, "ValueSet/$expand", url=CANCER.replace("CodeSystem", "ValueSet"), count="2",
                offset="1", filter="a", activeOnly="true", displayLanguage="fr")
    assert found.status_code == 200 and len(found.json()["expansion"]["contains"]) <= 2, found.text


def test_the_capability_statement_stays_the_default_and_other_modes_are_refused(client: TestClient) -> None:
    assert client.get("/fhir/metadata").json()["resourceType"] == "CapabilityStatement"
    assert client.get("/fhir/metadata?mode=full").json()["resourceType"] == "CapabilityStatement"
    summary = _capabilities(client, "&_summary=true")
    assert summary["resourceType"] == "TerminologyCapabilities" and summary["kind"] == "instance"
    assert "codeSystem" not in summary  # not a summary element
    assert summary["meta"]["tag"][0]["code"] == "SUBSETTED"
    refused = client.get("/fhir/metadata?mode=everything")
    assert refused.status_code == 400
    [issue] = refused.json()["issue"]
    assert issue["code"] == "invalid" and issue["expression"] == ["mode"]
