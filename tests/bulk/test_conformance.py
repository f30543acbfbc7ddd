"""Black-box conformance of `$export` over HTTP to the Bulk Data Access IG 2.0.0 (export.html),
against a real uvicorn server: one test per SHALL of the kick-off, status, delete and file
request sections, and the cases an audit found untested (docs/export.md).

SHALLs, by IG section:

Bulk Data Kick-off Request (#bulk-data-kick-off-request)
- K1 the server SHALL support GET kick-off requests (system, Patient and Group level);
  success is `202 Accepted` with `Content-Location`, the absolute URL of the status endpoint.
- K2 `_outputFormat`: servers SHALL support ndjson and SHALL accept `application/fhir+ndjson`,
  `application/ndjson` and `ndjson` (by GET, and by POST where the server takes POST).
- K3 `_type`: the response SHALL be filtered to only include resources of the types named.
- K4 `_type` omitted: the server SHALL return all supported resources within the scope of
  the client's authorisation.
- K5 `_since` (required for servers): only resources whose state changed after it.
- K6 `patient`: the server SHALL NOT return resources in the compartments of patients
  outside the list (Patient and Group level).
- K7 an error response (4XX or 5XX): the body SHALL be an OperationOutcome (in JSON).

Bulk Data Delete Request (#bulk-data-delete-request)
- D1 success is `202 Accepted`.
- D2 following the delete request, the polling location SHALL answer `404` with an
  OperationOutcome in JSON.

Bulk Data Status Request (#bulk-data-status-request)
- S1 in progress: `202 Accepted` (with `X-Progress` and `Retry-After`, as this server sends).
- S2 error: 4XX or 5XX, the body SHALL be an OperationOutcome in JSON.
- S3 complete: `200 OK`, `Content-Type: application/json`, `Expires`, and a manifest with
  `transactionTime`, `request` (the kick-off URL), `requiresAccessToken`, `output`, `error`.
- S4 each file SHALL contain resources of only one type; the files SHALL be accessible at
  the URLs advertised.
- S5 `requiresAccessToken` SHALL be true when the file server and the FHIR API both control
  access with OAuth 2.0 bearer tokens.
- S6 `transactionTime`: the export SHALL include any matching resource modified up to and
  including it (one deleted after it too).
- S7 `error`: only OperationOutcome, so the server SHALL write its error files in the format
  of the output files, holding OperationOutcome resources.
- S8 `deleted`: each line SHALL be a `transaction` Bundle whose entries' `request.method` is
  `DELETE` and `request.url` names the resource.

Bulk Data Output File Request (#bulk-data-output-file-request)
- F1 when `requiresAccessToken` is true, the request SHALL include a valid access token
  (without one, or with another client's, it is refused).
- F2 the exported data SHALL include only the most recent version of each resource.
- F3 success: `200`, `Content-Type` matching the format: for ndjson SHALL be
  `application/fhir+ndjson`.

Beyond the IG's SHALLs (access, docs/export.md): a Group the client may not read answers as
an unknown one (404, no job); a legal representative exports the represented patient's
compartment and is refused another's.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from contextlib import redirect_stdout
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson
import pytest

from fhir_server import cli, clock
from tests.builders import observation
from tests.bulk.conftest import seed
from tests.bulk.helpers import download, export, kick_off, status_path, token_of, wait
from tests.e2e.conftest import Server
from tests.http.helpers import send

FORMATS = ("application/fhir+ndjson", "application/ndjson", "ndjson")
MANY = 300  # Observations of patient c: an export of them, a file each two, runs for a while
REPRESENTATIVE = {"resourceType": "RelatedPerson", "id": "guardian", "active": True,
                  "patient": {"reference": "Patient/a"},
                  "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                                                "code": "GUARD"}]}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server (files of 2 resources) holding patients a, b and c (bulk/conftest.py's
    seed), a legal guardian of a, and MANY more Observations of c."""
    running = Server(tmp_path_factory.mktemp("bulk-conformance"), workers=1,
                     env={"FHIR_SERVER_EXPORT_FILE_RESOURCES": "2"})
    try:
        with _client(running) as client:
            seed(client)
            assert send(client, "PUT", "/fhir/RelatedPerson/guardian", REPRESENTATIVE).status_code == 201
            entries = [{"resource": {**observation("Patient/c"), "id": f"many-{n:04}"},
                        "request": {"method": "PUT", "url": f"Observation/many-{n:04}"}} for n in range(MANY)]
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
            assert send(client, "POST", "/fhir", bundle).status_code == 200
        yield running
    finally:
        running.stop()


def _client(server: Server) -> httpx.Client:
    """A client of the server's root (paths start /fhir), with every system scope."""
    return httpx.Client(base_url=server.base, headers=server.auth(), timeout=60)


def _job_count(server: Server) -> int:
    """How many jobs the server's store holds, as its operator's `export list` prints them
    (run in this process: a subprocess's start-up was most of this module's CPU time)."""
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, redirect_stdout(printed):
        patch.setenv("FHIR_SERVER_DATA_DIR", str(server.data_dir))
        patch.setenv("FHIR_SERVER_BASE_URL", f"{server.base}/fhir")
        assert cli.main(["export", "list"]) == 0
    listed = printed.getvalue().strip()
    return 0 if listed == "no export jobs" else len(listed.splitlines())


def _outcome(response: httpx.Response, status: int) -> dict[str, Any]:
    """The response's OperationOutcome, checked to come with `status` as JSON (K7, S2, D2)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] in ("application/fhir+json", "application/json")
    body = dict(response.json())
    assert body["resourceType"] == "OperationOutcome" and body["issue"], body
    return body


def _ids(resources: list[dict[str, Any]], resource_type: str) -> set[str]:
    return {r["id"] for r in resources if r["resourceType"] == resource_type}


def _subjects(resources: list[dict[str, Any]]) -> set[str]:
    return {r["subject"]["reference"] for r in resources if "subject" in r}


def test_k1_get_kick_off_at_each_level_answers_202_with_an_absolute_status_url(server: Server) -> None:
    with _client(server) as client:
        for path in ("/fhir/$export", "/fhir/Patient/$export", "/fhir/Group/g/$export"):
            response = kick_off(client, path + "?_type=Patient")
            assert response.status_code == 202, response.text
            location = response.headers["Content-Location"]
            assert location.startswith(f"{server.base}/fhir/")
            manifest = wait(client, location.split("/fhir", 1)[1])
            assert manifest.status_code == 200, manifest.text


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("spelling", FORMATS)
def test_k2_each_ndjson_spelling_of_output_format_is_accepted(server: Server, spelling: str,
                                                             method: str) -> None:
    with _client(server) as client:
        if method == "GET":
            manifest = export(client, f"/fhir/Patient/$export?_type=Patient&_outputFormat={spelling}")
        else:
            body = {"resourceType": "Parameters", "parameter": [
                {"name": "_outputFormat", "valueString": spelling},
                {"name": "_type", "valueString": "Patient"}]}
            manifest = export(client, "/fhir/Patient/$export", body=body)
        assert _ids(download(client, manifest), "Patient") >= {"a", "b", "c"}


def test_k3_type_filters_the_resources_to_the_types_named(server: Server) -> None:
    with _client(server) as client:
        manifest = export(client, "/fhir/$export?_type=Condition,Group")
        found = download(client, manifest)
        assert {r["resourceType"] for r in found} == {"Condition", "Group"}
        assert _ids(found, "Condition") == {"a-cond", "b-cond", "c-cond"}


def test_k4_without_type_every_type_the_scopes_cover(server: Server) -> None:
    with _client(server) as client:
        everything = {o["type"] for o in export(client, "/fhir/$export")["output"]}
        assert {"Patient", "Observation", "Condition", "Group", "RelatedPerson"} <= everything
        narrow = token_of(server, "system/Patient.rs system/Condition.rs", client_id="narrow")
        covered = {o["type"] for o in export(client, "/fhir/$export", narrow)["output"]}
        assert covered == {"Patient", "Condition"}


def test_k5_since_gives_what_changed_after_it_only(server: Server) -> None:
    with _client(server) as client:
        since = clock.instant()
        time.sleep(0.05)
        changed = {**observation("Patient/b", status="final"), "id": "b-obs0",
                   "issued": "2026-01-02T00:00:00Z"}
        assert send(client, "PUT", "/fhir/Observation/b-obs0", changed).status_code == 200
        found = download(client, export(client, f"/fhir/$export?_type=Observation,Condition&_since={since}"))
        assert [(r["resourceType"], r["id"]) for r in found] == [("Observation", "b-obs0")]


def test_k6_patient_narrows_a_group_export_to_those_members(server: Server) -> None:
    with _client(server) as client:
        body = {"resourceType": "Parameters", "parameter": [
            {"name": "patient", "valueReference": {"reference": "Patient/b"}},
            {"name": "_type", "valueString": "Patient,Condition"}]}
        found = download(client, export(client, "/fhir/Group/g/$export", body=body))
        assert _ids(found, "Patient") == {"b"}
        assert _subjects(found) == {"Patient/b"}
        # c is no member of g: nothing of c, whatever `patient` asks.
        body["parameter"][0] = {"name": "patient", "valueReference": {"reference": "Patient/c"}}
        assert download(client, export(client, "/fhir/Group/g/$export", body=body)) == []


@pytest.mark.parametrize(("path", "headers", "status", "expression"), [
    ("/fhir/$export", {"Prefer": "respond-sync"}, 400, "Prefer"),
    ("/fhir/$export?_outputFormat=application/fhir%2Bjson", {}, 400, "_outputFormat"),
    ("/fhir/$export?_type=Nonsense", {}, 400, "_type"),
    ("/fhir/$export?_since=yesterday", {}, 400, "_since"),
    ("/fhir/$export?patient=Patient/a", {}, 400, "patient"),
    ("/fhir/$export?includeAssociatedData=LatestProvenanceResources", {}, 400, "includeAssociatedData"),
    ("/fhir/Group/nowhere/$export", {}, 404, None),
])
def test_k7_a_refused_kick_off_is_an_operation_outcome_and_no_job(
        server: Server, path: str, headers: dict[str, str], status: int, expression: str | None) -> None:
    with _client(server) as client:
        before = _job_count(server)
        outcome = _outcome(kick_off(client, path, headers), status)
        if expression is not None:
            assert outcome["issue"][0]["expression"] == [expression], outcome
        assert _job_count(server) == before


def test_k7_a_type_outside_the_scopes_is_403_and_no_job(server: Server) -> None:
    with _client(server) as client:
        narrow = token_of(server, "system/Patient.rs", client_id="narrow")
        before = _job_count(server)
        _outcome(kick_off(client, "/fhir/$export?_type=Patient,Observation", narrow), 403)
        assert _job_count(server) == before


def test_d1_d2_delete_answers_202_and_later_polls_404(server: Server) -> None:
    with _client(server) as client:
        status = status_path(kick_off(client, "/fhir/$export?_type=Patient"))
        manifest = wait(client, status).json()
        file = "/fhir" + manifest["output"][0]["url"].split("/fhir", 1)[1]
        assert client.delete(f"/fhir{status}").status_code == 202
        _outcome(client.get(f"/fhir{status}"), 404)
        _outcome(client.get(file), 404)
        _outcome(client.delete(f"/fhir{status}"), 404)


def test_s1_a_running_job_answers_202_with_progress_and_retry_after(server: Server) -> None:
    with _client(server) as client:
        status = status_path(kick_off(client, "/fhir/$export?_type=Observation"))
        running = client.get(f"/fhir{status}")
        assert running.status_code == 202, "the export of MANY resources ended at once"
        assert running.headers["X-Progress"] and len(running.headers["X-Progress"]) < 100
        assert int(running.headers["Retry-After"]) > 0
        assert client.delete(f"/fhir{status}").status_code == 202  # cancelled while it runs
        _outcome(client.get(f"/fhir{status}"), 404)


def test_s2_an_unknown_job_is_404_operation_outcome(server: Server) -> None:
    with _client(server) as client:
        _outcome(client.get("/fhir/$export-status/no-such-job"), 404)


def test_s3_to_s5_the_complete_status_and_its_files(server: Server) -> None:
    with _client(server) as client:
        started = clock.seconds()
        status = status_path(kick_off(client, "/fhir/$export?_type=Patient,Condition"))
        done = wait(client, status)
        assert done.status_code == 200 and done.headers["content-type"].split(";")[0] == "application/json"
        assert parsedate_to_datetime(done.headers["Expires"]).timestamp() > started
        manifest = done.json()
        assert manifest["request"] == f"{server.base}/fhir/$export?_type=Patient,Condition"
        assert manifest["requiresAccessToken"] is True
        assert manifest["error"] == [] and len(manifest["output"]) >= 3
        assert datetime.fromisoformat(manifest["transactionTime"]).timestamp() >= started - 1
        for item in manifest["output"]:  # S4: one type per file, each at its URL; F3
            assert item["url"].startswith(f"{server.base}/fhir/")
        found = download(client, manifest)  # checks each file's type, count and Content-Type
        assert _ids(found, "Patient") == {"a", "b", "c"}


def test_s6_a_resource_deleted_after_transaction_time_is_still_exported(server: Server) -> None:
    with _client(server) as client:
        last = f"Observation/many-{MANY - 1:04}"
        status = status_path(kick_off(client, "/fhir/$export?_type=Observation"))
        assert client.get(f"/fhir{status}").status_code == 202
        assert client.delete(f"/fhir/{last}").status_code in (200, 204)
        found = download(client, wait(client, status).json())
        assert {f"many-{n:04}" for n in range(MANY)} <= _ids(found, "Observation")


def test_s7_errors_are_operation_outcome_files(server: Server) -> None:
    with _client(server) as client:
        manifest = export(client, "/fhir/$export?_type=Patient&organizeOutputBy=Patient",
                          {"Prefer": "respond-async, handling=lenient"})
        assert manifest["error"] and all(e["type"] == "OperationOutcome" for e in manifest["error"])
        outcomes = download(client, manifest, key="error")
        assert outcomes and "organizeOutputBy" in orjson.dumps(outcomes).decode()


def test_s8_deleted_lists_transaction_bundles_of_deletes(server: Server) -> None:
    with _client(server) as client:
        since = clock.instant()
        time.sleep(0.05)
        assert client.delete("/fhir/Observation/a-obs1").status_code in (200, 204)
        manifest = export(client, f"/fhir/$export?_type=Observation&_since={since}")
        bundles = download(client, manifest, key="deleted")
        assert all(b["resourceType"] == "Bundle" and b["type"] == "transaction" for b in bundles)
        requests = [e["request"] for b in bundles for e in b["entry"]]
        assert requests == [{"method": "DELETE", "url": "Observation/a-obs1"}]


def test_f1_a_file_needs_the_starting_clients_token(server: Server) -> None:
    with _client(server) as client:
        manifest = export(client, "/fhir/$export?_type=Patient")
        file = "/fhir" + manifest["output"][0]["url"].split("/fhir", 1)[1]
        anonymous = httpx.get(f"{server.base}{file}")
        _outcome(anonymous, 401)
        assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
        _outcome(client.get(file, headers=token_of(server, "system/*.rs", client_id="another")), 404)
        assert client.get(file).status_code == 200


def test_f2_only_the_latest_version_of_a_resource(server: Server) -> None:
    with _client(server) as client:
        for status in ("preliminary", "final"):
            body = {**observation("Patient/a", status=status), "id": "versioned"}
            assert send(client, "PUT", "/fhir/Observation/versioned", body).status_code in (200, 201)
        body = {"resourceType": "Parameters", "parameter": [
            {"name": "_type", "valueString": "Observation"},
            {"name": "_typeFilter", "valueString": "Observation?_id=versioned"}]}
        found = download(client, export(client, "/fhir/$export", body=body))
        latest = [(r["id"], r["status"], r["meta"]["versionId"]) for r in found]
        assert latest == [("versioned", "final", "2")]


def test_f3_a_file_is_application_fhir_ndjson(server: Server) -> None:
    with _client(server) as client:
        manifest = export(client, "/fhir/$export?_type=Condition")
        response = client.get("/fhir" + manifest["output"][0]["url"].split("/fhir", 1)[1])
        assert response.status_code == 200
        assert response.headers["content-type"].split(";")[0] == "application/fhir+ndjson"
        lines = [orjson.loads(line) for line in response.content.splitlines() if line]
        assert lines and all(r["resourceType"] == "Condition" for r in lines)


def test_a_group_the_client_may_not_read_answers_as_an_unknown_one(server: Server) -> None:
    doctor = token_of(server, "user/*.rs", client_id="portal", fhir_user="Practitioner/nobody")
    with _client(server) as client:
        before = _job_count(server)
        hidden = _outcome(kick_off(client, "/fhir/Group/g/$export", doctor), 404)
        unknown = _outcome(kick_off(client, "/fhir/Group/nowhere/$export", doctor), 404)
        assert [i["code"] for i in hidden["issue"]] == [i["code"] for i in unknown["issue"]]
        assert _job_count(server) == before


def test_a_legal_representative_exports_the_represented_patient_only(server: Server) -> None:
    guardian = token_of(server, "patient/*.rs", client_id="portal", patient="a",
                        fhir_user="RelatedPerson/guardian")
    with _client(server) as client:
        found = download(client, export(client, "/fhir/Patient/$export?_type=Patient,Observation,Condition",
                                        guardian), guardian)
        assert _ids(found, "Patient") == {"a"}
        assert _subjects(found) == {"Patient/a"}
        before = _job_count(server)
        other = {"resourceType": "Parameters", "parameter": [
            {"name": "patient", "valueReference": {"reference": "Patient/b"}}]}
        _outcome(kick_off(client, "/fhir/Patient/$export", guardian, other), 404)
        for_b = token_of(server, "patient/*.rs", client_id="portal", patient="b",
                         fhir_user="RelatedPerson/guardian")
        _outcome(kick_off(client, "/fhir/Patient/$export", for_b), 403)
        assert _job_count(server) == before
