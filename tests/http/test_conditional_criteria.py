"""Conditional writes whose query selects nothing (FHIR R4 http.html#cond-update, #cdelete).

Result parameters (`_count`, `_sort`, `_summary`, `_elements`, `_include`, `_total`, and the
HTTP layer's `_format`, `_pretty`) shape a search's answer but select no resource: a condition
made only of them would match every resource, so it is refused as an empty one is (400),
over REST and in Bundles, and the store is left as it was.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from fhir_server.settings import Settings
from tests.builders import patient
from tests.http.bundle_helpers import entry, json_patch, post_bundle, responses
from tests.http.helpers import issue, send
from tests.http.test_errors import _store_digest

RESULT_ONLY = ["_count=1", "_sort=name", "_pretty=true", "_summary=count", "_elements=id",
               "_format=json", "_include=Patient:link", "_total=accurate", "_count=1&_sort=-_id"]
PATCH = [{"op": "replace", "path": "/gender", "value": "male"}]


def _attempts(query: str) -> list[tuple[str, str, object, dict[str, str], str]]:
    """(method, url, body, headers, content type) of each conditional write with `query`."""
    return [
        ("PUT", f"/fhir/Patient?{query}", patient(), {}, "application/fhir+json"),
        ("DELETE", f"/fhir/Patient?{query}", None, {}, "application/fhir+json"),
        ("POST", "/fhir/Patient", patient(), {"If-None-Exist": query}, "application/fhir+json"),
        ("PATCH", f"/fhir/Patient?{query}", PATCH, {}, "application/json-patch+json"),
    ]


@pytest.mark.parametrize("query", RESULT_ONLY)
def test_condition_of_result_parameters_only_is_refused(
    client: TestClient, settings: Settings, query: str,
) -> None:
    send(client, "PUT", "/fhir/Patient/a", patient(id="a"))
    before = _store_digest(settings)
    for method, url, body, headers, content_type in _attempts(query):
        response = send(client, method, url, body, content_type=content_type, **headers)
        assert response.status_code == 400, (method, response.text)
        assert issue(response)["code"] == "required"
    assert _store_digest(settings) == before


def test_condition_of_result_parameters_only_is_refused_in_bundles(
    client: TestClient, settings: Settings,
) -> None:
    send(client, "PUT", "/fhir/Patient/a", patient(id="a"))
    before = _store_digest(settings)
    entries = [entry("PUT", "Patient?_count=1", patient()), entry("DELETE", "Patient?_sort=name"),
               entry("POST", "Patient", patient(), ifNoneExist="_summary=count"),
               entry("PATCH", "Patient?_elements=id", json_patch(PATCH))]
    batch = post_bundle(client, "batch", entries)
    assert [r["status"][:3] for r in responses(batch)] == ["400"] * 4
    for one in entries[:3]:  # conditional PATCH is not supported in a transaction at all
        assert post_bundle(client, "transaction", [one]).status_code == 400
    assert _store_digest(settings) == before
