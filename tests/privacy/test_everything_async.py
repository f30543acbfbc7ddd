"""`Patient/[id]/$everything` under `Prefer: respond-async` (FHIR R4 async.html, by GET or
POST): a Bulk Data job (docs/export.md) whose ndjson files hold exactly what the pages of the
synchronous operation hold, with the same parameters, under each caller's access; bad input
answered at once and no job stored; `DELETE` on the status URL cancels."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from tests.bulk.conftest import jobs
from tests.bulk.helpers import ASYNC, download, export, kick_off, status_path
from tests.privacy.conftest import Server
from tests.privacy.records import compartment, patient_ids, synthea  # noqa: F401
from tests.privacy.test_everything import matched, pages, tokens
from tests.privacy.test_everything_post import _busiest, parameters, post


def _ids(resources: list[dict[str, Any]]) -> set[str]:
    return {f"{r['resourceType']}/{r['id']}" for r in resources}


def _split(ids: set[str]) -> tuple[set[str], set[str]]:
    """The AuditEvents (each request adds its own, so they are checked apart) and the rest."""
    audit = {i for i in ids if i.startswith("AuditEvent/")}
    return audit, ids - audit


def _sync(client: TestClient, patient: str, query: str, headers: dict[str, str]) -> set[str]:
    entries = pages(client, f"/fhir/Patient/{patient}/$everything?{query}", headers)
    return set(matched(entries)) | set(matched(entries, "include"))


def _async(client: TestClient, patient: str, query: str, headers: dict[str, str],
           body: dict[str, Any] | None = None) -> tuple[dict[str, Any], set[str]]:
    manifest = export(client, f"/fhir/Patient/{patient}/$everything?{query}".rstrip("?"), headers, body)
    return manifest, _ids(download(client, manifest, headers))


@pytest.mark.parametrize("who", ["patient", "practitioner"])
def test_the_files_hold_what_the_pages_hold(synthea: TestClient, who: str) -> None:
    patient, headers = tokens(synthea)[who]
    busiest, year = _busiest(synthea)
    for query in ("", f"_type=Patient,Observation,Condition&start={year}-01-01&end={year}-12-31",
                  "_type=Encounter,Patient&_since=2000-01-01T00:00:00Z", "_since=2999-01-01T00:00:00Z"):
        manifest, files = _async(synthea, patient, query, headers)
        audit, files = _split(files)
        assert files == _split(_sync(synthea, patient, query, headers))[1], query
        assert "deleted" not in manifest  # `_since` filters, as the pages' `_lastUpdated` does
        assert audit <= compartment(synthea, patient, ["AuditEvent"])
        if not query:  # the whole record: more than a few resources, and what they reference
            assert len(files) > 40
            assert any(f.startswith(("Practitioner/", "Organization/")) for f in files)
    # The clinical dates narrow the record: a year holds fewer Observations than the whole.
    query = f"_type=Observation&start={year}-01-01&end={year}-12-31"
    assert _async(synthea, busiest, query, {})[1] == _sync(synthea, busiest, query, {})
    assert _sync(synthea, busiest, query, {}) < _sync(synthea, busiest, "_type=Observation", {})


def test_a_post_with_parameters_gives_the_same_files(synthea: TestClient) -> None:
    patient, year = _busiest(synthea)
    body = parameters(("_type", "valueCode", "Observation"), ("_type", "valueCode", "Patient"),
                      ("start", "valueDate", f"{year}-01-01"), ("end", "valueDate", f"{year}-12-31"),
                      ("_count", "valueInteger", 7))  # a page size: no meaning for files
    manifest, files = _async(synthea, patient, "", {}, body)
    assert manifest["request"] == f"http://testserver/fhir/Patient/{patient}/$everything"
    assert files == _sync(synthea, patient, f"_type=Observation,Patient&start={year}-01-01&end={year}-12-31", {})


BAD_QUERIES = [("foo=bar", "foo"), ("start=2020-02-01&end=2020-01-31", "start"),
               ("_type=Practitioner", "_type"), ("_cursor=Condition:", "_cursor"),
               ("start=2020&start=2021", "start"), ("_count=0", "_count"),
               ("_outputFormat=ndjson", "_outputFormat")]


def test_bad_input_is_refused_and_no_job_is_stored(server: Server) -> None:
    client, ehr = server.client, server.headers("ehr")
    for query, expression in BAD_QUERIES:
        response = kick_off(client, f"/fhir/Patient/a/$everything?{query}", ehr)
        assert response.status_code == 400, (query, response.text)
        assert response.json()["issue"][0]["expression"] == [expression]
    for body in (parameters(("start", "valueString", "2020")), {"resourceType": "Patient"}, b"{"):
        response = client.post("/fhir/Patient/a/$everything", content=post_body(body),
                               headers={**ASYNC, **ehr, "Content-Type": "application/fhir+json"})
        assert response.status_code == 400, response.text
        assert response.json()["resourceType"] == "OperationOutcome"
    # Another patient's record, and a patient nobody has: as if it did not exist.
    for patient, caller in (("b", "patient-a"), ("nobody", "ehr")):
        response = kick_off(client, f"/fhir/Patient/{patient}/$everything", server.headers(caller))
        assert response.status_code == 404, response.text
    assert jobs(client) == []


def post_body(body: Any) -> bytes:
    return body if isinstance(body, bytes) else orjson.dumps(body)


@pytest.mark.parametrize("caller", ["ehr", "patient-a"])
def test_the_job_runs_on_either_store(server: Server, caller: str) -> None:
    headers = server.headers(caller)
    for query in ("", "_type=Observation,Patient", "_type=Condition&_since=2999-01-01T00:00:00Z"):
        manifest, files = _async(server.client, "a", query, headers)
        assert _split(files)[1] == _split(_sync(server.client, "a", query, headers))[1], query
    assert _split(files)[1] == set()
    assert {"a", "a-obs0", "a-obs1", "a-obs2"} <= {i.partition("/")[2] for i in _async(
        server.client, "a", "_type=Observation,Patient", headers)[1]}


def test_delete_cancels_the_job(server: Server) -> None:
    headers = server.headers("patient-a")
    status = status_path(kick_off(server.client, "/fhir/Patient/a/$everything", headers))
    assert server.client.delete(f"/fhir{status}", headers=headers).status_code == 202
    assert server.client.get(f"/fhir{status}", headers=headers).status_code == 404
    assert jobs(server.client) == []
