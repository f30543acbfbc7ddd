"""Bulk Data `$export` over HTTP, on each store (Bulk Data Access IG 2.0.0, export.html):
kick-off, status, manifest, files, `DELETE`, the parameters (`_type`, `_typeFilter`,
`_since` with `deleted`, `_elements`, `patient`, `_outputFormat`, `Prefer: handling=lenient`),
the levels (system, Patient, Group, `$everything` asynchronously) and who may see what."""

from __future__ import annotations

import dataclasses
import re
import time

import pytest
from fastapi.testclient import TestClient
from joserfc.jwk import ECKey

from fhir_server import clock
from tests.builders import consent, observation
from tests.bulk.conftest import jobs
from tests.bulk.helpers import ASYNC, download, export, kick_off, status_path, wait
from tests.conftest import token
from tests.http.helpers import send


def _ids(resources: list[dict[str, object]]) -> list[str]:
    return sorted(f"{r['resourceType']}/{r['id']}" for r in resources)


def test_kick_off_status_and_manifest_follow_the_ig(seeded: TestClient) -> None:
    response = kick_off(seeded, "/fhir/$export?_type=Patient,Observation")
    assert response.status_code == 202 and response.content == b""
    location = response.headers["Content-Location"]
    assert re.fullmatch(r"http://testserver/fhir/\$export-status/[\w-]+", location)
    done = wait(seeded, status_path(response))
    assert done.status_code == 200
    assert done.headers["content-type"].startswith("application/json")
    assert "GMT" in done.headers["Expires"]
    manifest = done.json()
    assert manifest["request"] == "http://testserver/fhir/$export?_type=Patient,Observation"
    assert manifest["requiresAccessToken"] is True
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", manifest["transactionTime"])
    assert manifest["error"] == [] and "deleted" not in manifest
    assert [o["type"] for o in manifest["output"]] == ["Patient", "Observation", "Observation"]
    assert all(o["url"].startswith("http://testserver/fhir/$export-file/") for o in manifest["output"])
    found = _ids(download(seeded, manifest))
    assert found == sorted([f"Patient/{p}" for p in "abc"] +
                           [f"Observation/{p}-obs{n}" for p in "abc" for n in (0, 1)])


def test_a_system_export_holds_every_resource_once_per_type_as_the_store(seeded: TestClient) -> None:
    manifest = export(seeded, "/fhir/$export")
    store = seeded.app.state.context.store  # type: ignore[attr-defined]
    counts: dict[str, int] = {}
    for resource in download(seeded, manifest):
        counts[resource["resourceType"]] = counts.get(resource["resourceType"], 0) + 1
    for resource_type, count in counts.items():
        assert seeded.portal.call(store.count, resource_type) == count  # type: ignore[union-attr]
    assert {"Patient", "Observation", "Condition", "Group"} <= counts.keys()
    assert "AuditEvent" not in counts  # kept apart: exported only when named


def test_files_split_by_count(seeded: TestClient) -> None:
    manifest = export(seeded, "/fhir/$export?_type=Observation")  # 4 a file (conftest)
    assert [o["count"] for o in manifest["output"]] == [4, 2]
    assert len(set(_ids(download(seeded, manifest)))) == 6


def test_post_takes_parameters_and_patient_narrows_a_patient_export(seeded: TestClient) -> None:
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "_type", "valueString": "Patient,Condition"},
        {"name": "_outputFormat", "valueString": "application/ndjson"},
        {"name": "patient", "valueReference": {"reference": "Patient/b"}}]}
    manifest = export(seeded, "/fhir/Patient/$export", body=body)
    assert _ids(download(seeded, manifest)) == ["Condition/b-cond", "Patient/b"]


def test_a_group_export_holds_its_members_compartments_only(seeded: TestClient) -> None:
    manifest = export(seeded, "/fhir/Group/g/$export?_type=Patient,Observation")
    assert _ids(download(seeded, manifest)) == [
        "Observation/a-obs0", "Observation/a-obs1", "Observation/b-obs0", "Observation/b-obs1",
        "Patient/a", "Patient/b"]


def test_type_filters_are_or_ed_without_duplicates(seeded: TestClient) -> None:
    manifest = export(seeded, "/fhir/$export?_type=Observation&_typeFilter="
                      "Observation%3Fstatus%3Dfinal,Observation%3Fsubject%3DPatient%2Fa")
    assert _ids(download(seeded, manifest)) == [
        "Observation/a-obs0", "Observation/a-obs1", "Observation/b-obs0", "Observation/c-obs0"]


def test_a_lenient_type_filter_left_with_no_criterion_adds_nothing(seeded: TestClient) -> None:
    """Every criterion of a filter left out (reported): the filter matches nothing, rather than
    becoming no filter at all; the type's other filters still apply."""
    lenient = {"Prefer": "respond-async, handling=lenient"}
    manifest = export(seeded, "/fhir/$export?_type=Observation,Patient&_typeFilter=Observation%3Fnonsense%3D1",
                      lenient)
    assert _ids(download(seeded, manifest)) == ["Patient/a", "Patient/b", "Patient/c"]
    [outcome] = download(seeded, manifest, key="error")
    assert "nonsense" in outcome["issue"][0]["diagnostics"]
    manifest = export(seeded, "/fhir/$export?_type=Observation&_typeFilter=Observation%3Fnonsense%3D1,"
                      "Observation%3Fsubject%3DPatient%2Fb", lenient)
    assert _ids(download(seeded, manifest)) == ["Observation/b-obs0", "Observation/b-obs1"]


def test_elements_keep_what_is_asked_and_mark_subsetted(seeded: TestClient) -> None:
    manifest = export(seeded, "/fhir/$export?_type=Patient,Condition&_elements=Patient.gender")
    resources = download(seeded, manifest)
    patients = [r for r in resources if r["resourceType"] == "Patient"]
    assert all(set(r) == {"resourceType", "id", "meta", "gender"} for r in patients)
    assert all(any(t["code"] == "SUBSETTED" for t in r["meta"]["tag"]) for r in patients)
    assert all("code" in r for r in resources if r["resourceType"] == "Condition")


def test_since_lists_what_changed_and_fills_deleted(seeded: TestClient,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # MongoDB lists a deletion once it is settled (store/mongo/store.py): the job waits.
    monkeypatch.setattr("fhir_server.store.mongo.store.SETTLE_SECONDS", 1)
    time.sleep(0.01)
    since = clock.instant()
    time.sleep(0.01)
    assert send(seeded, "DELETE", "/fhir/Observation/a-obs0").status_code in (200, 204)
    changed = {**seeded.get("/fhir/Observation/b-obs0").json(), "status": "cancelled"}
    assert send(seeded, "PUT", "/fhir/Observation/b-obs0", changed).status_code == 200
    manifest = export(seeded, f"/fhir/$export?_type=Observation&_since={since}")
    assert _ids(download(seeded, manifest)) == ["Observation/b-obs0"]
    [bundle] = download(seeded, manifest, key="deleted")
    assert bundle["type"] == "transaction"
    assert bundle["entry"] == [{"request": {"method": "DELETE", "url": "Observation/a-obs0"}}]


def test_delete_cancels_the_job_and_removes_its_files(seeded: TestClient) -> None:
    status = status_path(kick_off(seeded, "/fhir/$export?_type=Patient"))
    manifest = wait(seeded, status).json()
    file = manifest["output"][0]["url"].removeprefix("http://testserver")
    assert seeded.delete(f"/fhir{status}").status_code == 202
    gone = seeded.get(f"/fhir{status}")
    assert gone.status_code == 404 and gone.json()["resourceType"] == "OperationOutcome"
    assert seeded.get(file).status_code == 404
    assert jobs(seeded) == []


def test_status_and_files_are_the_starting_clients_only(seeded: TestClient) -> None:
    status = status_path(kick_off(seeded, "/fhir/$export?_type=Patient"))
    manifest = wait(seeded, status).json()
    file = manifest["output"][0]["url"].removeprefix("http://testserver")
    other = {"Authorization": f"Bearer {token(seeded, 'system/*.rs', )}"}
    tokens = seeded.app.state.tokens  # type: ignore[attr-defined]
    other = {"Authorization": "Bearer " + tokens.issue(subject="other", client_id="other",
                                                      scope="system/*.rs")["access_token"]}
    for path in (f"/fhir{status}", file):
        refused = seeded.get(path, headers=other)
        assert refused.status_code == 404 and refused.json()["resourceType"] == "OperationOutcome"
    assert seeded.delete(f"/fhir{status}", headers=other).status_code == 404
    assert seeded.get(file).status_code == 200
    assert seeded.get(file, headers={"Authorization": ""}).status_code == 401


def test_a_patient_exports_their_own_compartment_only(seeded: TestClient) -> None:
    own = {"Authorization": f"Bearer {token(seeded, 'patient/*.rs', patient='a', fhir_user='Patient/a')}"}
    manifest = export(seeded, "/fhir/Patient/$export?_type=Patient,Observation,Condition", own)
    assert _ids(download(seeded, manifest, own)) == [
        "Condition/a-cond", "Observation/a-obs0", "Observation/a-obs1", "Patient/a"]
    refused = kick_off(seeded, "/fhir/$export", own)
    assert refused.status_code == 403 and jobs(seeded) == [_job_of(manifest)]


def _job_of(manifest: dict[str, object]) -> str:
    output = manifest["output"]
    assert isinstance(output, list)
    return str(output[0]["url"]).split("/")[-2]


def test_a_physician_exports_the_patients_who_consent_and_not_one_who_withdrew(
        seeded: TestClient) -> None:
    for id in ("a", "b"):
        body = {**consent(id, actor="Practitioner/dr"), "id": f"consent-{id}"}
        assert send(seeded, "PUT", f"/fhir/Consent/consent-{id}", body).status_code == 201
    withdrawn = {**consent("b", actor="Practitioner/dr", status="inactive"), "id": "consent-b"}
    assert send(seeded, "PUT", "/fhir/Consent/consent-b", withdrawn).status_code == 200
    doctor = {"Authorization": f"Bearer {token(seeded, 'user/*.rs', fhir_user='Practitioner/dr')}"}
    manifest = export(seeded, "/fhir/Patient/$export?_type=Patient,Observation", doctor)
    assert _ids(download(seeded, manifest, doctor)) == [
        "Observation/a-obs0", "Observation/a-obs1", "Patient/a"]


def test_everything_with_respond_async_is_the_record_as_ndjson(seeded: TestClient) -> None:
    assert send(seeded, "PUT", "/fhir/Practitioner/pr", {"resourceType": "Practitioner", "id": "pr"}).status_code == 201
    seen = {**observation("Patient/c", status="final"), "id": "c-obs2",
            "performer": [{"reference": "Practitioner/pr"}, {"reference": "Organization/missing"}]}
    assert send(seeded, "PUT", "/fhir/Observation/c-obs2", seen).status_code == 201
    manifest = export(seeded, "/fhir/Patient/c/$everything?_type=Patient,Observation,Condition")
    assert manifest["request"] == ("http://testserver/fhir/Patient/c/$everything?"
                                   "_type=Patient,Observation,Condition")
    # The compartment, and what it references outside any compartment (as $everything).
    assert _ids(download(seeded, manifest)) == [
        "Condition/c-cond", "Observation/c-obs0", "Observation/c-obs1", "Observation/c-obs2",
        "Patient/c", "Practitioner/pr"]


def test_lenient_handling_ignores_what_is_unsupported_and_reports_it(seeded: TestClient) -> None:
    manifest = export(seeded, "/fhir/$export?_type=Patient&includeAssociatedData=LatestProvenanceResources",
                      {"Prefer": "respond-async, handling=lenient"})
    [outcome] = download(seeded, manifest, key="error")
    assert outcome["issue"][0]["expression"] == ["includeAssociatedData"]
    assert len(download(seeded, manifest)) == 3


BAD = [
    ("/fhir/$export?_type=Patient,Nonsense", {}, 400, "_type"),
    ("/fhir/$export?_since=yesterday", {}, 400, "_since"),
    ("/fhir/$export?_since=2026-01-01", {}, 400, "_since"),
    ("/fhir/$export?_since=2999-01-01T00:00:00Z", {}, 400, "_since"),
    ("/fhir/$export?_typeFilter=Observation%3F_include%3DObservation:subject", {}, 400, "_typeFilter"),
    ("/fhir/$export?_typeFilter=Observation%3F_sort%3Ddate", {}, 400, "_typeFilter"),
    ("/fhir/$export?_typeFilter=Observation%3Fnonsense%3D1", {}, 400, "_typeFilter"),
    # at most 50 filters, of 1000 characters each: a job's cost grows with their number
    ("/fhir/$export?" + "&".join(f"_typeFilter=Observation%3Fcode%3D{n}" for n in range(51)), {}, 400,
     "_typeFilter"),
    ("/fhir/$export?_typeFilter=Observation%3Fcode%3D" + "1" * 1000, {}, 400, "_typeFilter"),
    ("/fhir/$export?_outputFormat=text/csv", {}, 400, "_outputFormat"),
    ("/fhir/$export?includeAssociatedData=LatestProvenanceResources", {}, 400, "includeAssociatedData"),
    ("/fhir/$export?_elements=Patient.name.given", {}, 400, "_elements"),
    ("/fhir/$export", {"Prefer": ""}, 400, "Prefer"),
    ("/fhir/Patient/$export?_type=Organization", {}, 400, "_type"),
    ("/fhir/Group/unknown/$export", {}, 404, None),
    ("/fhir/$export", {"Accept": "text/html"}, 406, None),
]


@pytest.mark.parametrize(("path", "headers", "status", "expression"), BAD)
def test_bad_input_is_refused_naming_the_parameter_and_no_job_is_created(
        seeded: TestClient, path: str, headers: dict[str, str], status: int,
        expression: str | None) -> None:
    response = kick_off(seeded, path, headers)
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    if expression is not None:
        assert outcome["issue"][0]["expression"] == [expression]
    assert jobs(seeded) == []


def test_patient_at_system_level_is_refused_and_no_job_is_created(seeded: TestClient) -> None:
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "patient", "valueReference": {"reference": "Patient/a"}}]}
    response = kick_off(seeded, "/fhir/$export", body=body)
    assert response.status_code == 400 and response.json()["issue"][0]["expression"] == ["patient"]
    assert jobs(seeded) == []


def test_scopes_must_cover_every_type_and_groups_out_of_reach_are_unknown(seeded: TestClient) -> None:
    narrow = {"Authorization": f"Bearer {token(seeded, 'system/Patient.rs')}"}
    refused = kick_off(seeded, "/fhir/$export?_type=Patient,Observation", narrow)
    assert refused.status_code == 403 and refused.json()["resourceType"] == "OperationOutcome"
    own = {"Authorization": f"Bearer {token(seeded, 'patient/*.rs', patient='a', fhir_user='Patient/a')}"}
    assert kick_off(seeded, "/fhir/Group/g/$export", own).status_code == 403
    doctor = {"Authorization": f"Bearer {token(seeded, 'user/*.rs', fhir_user='Practitioner/dr')}"}
    assert kick_off(seeded, "/fhir/$export", doctor).status_code == 403  # system level
    assert jobs(seeded) == []
    manifest = export(seeded, "/fhir/$export", narrow)  # no _type: what the scopes cover
    assert {o["type"] for o in manifest["output"]} == {"Patient"}
    assert ASYNC["Prefer"] == "respond-async"


def test_the_capability_statement_lists_the_export_operations(client: TestClient) -> None:
    statement = client.get("/fhir/metadata").json()
    assert "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data" in statement["instantiates"]
    [rest] = statement["rest"]
    assert {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"} in rest["operation"]
    by_type = {r["type"]: r.get("operation", []) for r in rest["resource"]}
    for resource_type, code in (("Patient", "patient-export"), ("Group", "group-export")):
        assert {"name": "export", "definition": f"http://hl7.org/fhir/uv/bulkdata/OperationDefinition/{code}"} in by_type[resource_type]


def test_each_download_is_audited_for_the_patients_in_the_file(seeded: TestClient) -> None:
    manifest = export(seeded, "/fhir/$export?_type=Condition")
    url = manifest["output"][0]["url"].removeprefix("http://testserver")

    def events(patient: str) -> list[dict[str, object]]:
        found = seeded.get(f"/fhir/AuditEvent?patient=Patient/{patient}&_count=200").json()
        return [e["resource"] for e in found.get("entry", [])]

    def operations(patient: str) -> int:
        return sum(e["subtype"][0]["code"] == "operation" for e in events(patient))  # type: ignore[index]

    before = {p: (len(events(p)), operations(p)) for p in "abc"}
    # The manifest is served once the job's own events are durable: each patient's is there.
    assert [jobs_own for _, jobs_own in before.values()] == [1, 1, 1]
    assert seeded.get(url).status_code == 200
    for patient in "abc":  # one more event each, an operation's
        assert (len(events(patient)), operations(patient)) == (before[patient][0] + 1, before[patient][1] + 1)


def test_an_investigator_site_system_never_gets_live_records(seeded: TestClient) -> None:
    registry = seeded.app.state.oauth.registry  # type: ignore[attr-defined]
    key = ECKey.generate_key("P-256", {"kid": "site-sig", "use": "sig"}).as_dict(private=False)
    registry.add_backend_client("site", "system/*.rs", acts_for=["CareTeam/team"], jwks={"keys": [key]})
    tokens = seeded.app.state.tokens  # type: ignore[attr-defined]
    site = {"Authorization": "Bearer " + tokens.issue(subject="site", client_id="site",
                                                     scope="system/*.rs")["access_token"]}
    manifest = export(seeded, "/fhir/$export?_type=Patient,Observation,Condition,Group", site)
    assert download(seeded, manifest, site) == []


def test_a_job_spec_grows_with_the_filters_not_their_square(seeded: TestClient) -> None:
    """Each pass of a `_typeFilter` skips what an earlier one wrote, without a copy of them."""
    filters = "&".join(f"_typeFilter=Observation%3Fcode%3D{n}" for n in range(47))
    manifest = export(seeded, f"/fhir/$export?_type=Observation&{filters}&_typeFilter=Observation%3Fcode%3D0"
                      "&_typeFilter=Observation%3Fsubject%3DPatient%2Fa&_typeFilter=Observation%3Fstatus%3Dfinal")
    ids = [r["id"] for r in download(seeded, manifest)]
    assert sorted(ids) == ["a-obs0", "a-obs1", "b-obs0", "c-obs0"]  # once each
    store = seeded.app.state.context.store  # type: ignore[attr-defined]
    [job] = seeded.portal.call(store.jobs.all)  # type: ignore[union-attr]
    assert len(job.spec) < 10_000  # 50 filters; 25 kB when each pass held the earlier ones


def test_a_file_answers_404_once_expired_before_any_sweep(seeded: TestClient) -> None:
    manifest = export(seeded, "/fhir/$export?_type=Patient")
    seeded.app.state.export_policy = dataclasses.replace(  # type: ignore[attr-defined]
        seeded.app.state.export_policy, retention_seconds=0)  # type: ignore[attr-defined]
    url = "/fhir" + manifest["output"][0]["url"].split("/fhir", 1)[1]
    assert seeded.get(url).status_code == 404 and jobs(seeded) == []


def test_a_caller_with_as_many_exports_running_as_allowed_gets_429(seeded: TestClient) -> None:
    """Bulk Data IG: a server may answer 429 to a client whose export is in progress. Jobs held
    by another worker's lease stand for the caller's running ones (this app's worker cannot
    finish them under the test)."""
    store = seeded.app.state.context.store  # type: ignore[attr-defined]
    export(seeded, "/fhir/$export?_type=Patient")
    [done] = seeded.portal.call(store.jobs.all)  # type: ignore[union-attr]
    for n in range(2):  # FHIR_SERVER_EXPORT_RUNNING_PER_CALLER's default
        running = dataclasses.replace(done, id=f"held-{n}", state="running", lease_owner="elsewhere",
                                      lease_until=time.time() + 3600)
        seeded.portal.call(store.jobs.create, running)  # type: ignore[union-attr]
    before = sorted(jobs(seeded))
    refused = kick_off(seeded, "/fhir/$export?_type=Patient")
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "60"
    issue = refused.json()["issue"][0]
    assert (issue["severity"], issue["code"]) == ("error", "throttled")
    assert "2 exports of yours are still running" in issue["diagnostics"]
    assert sorted(jobs(seeded)) == before  # no job made
    registry = seeded.app.state.oauth.registry  # type: ignore[attr-defined]
    key = ECKey.generate_key("P-256", {"kid": "other-sig", "use": "sig"}).as_dict(private=False)
    registry.add_backend_client("other", "system/*.rs", jwks={"keys": [key]})
    issued = seeded.app.state.tokens.issue(  # type: ignore[attr-defined]
        subject="other", client_id="other", scope="system/*.rs")
    other = {"Authorization": "Bearer " + issued["access_token"]}
    assert kick_off(seeded, "/fhir/$export?_type=Patient", other).status_code == 202  # per caller
    assert seeded.delete("/fhir/$export-status/held-0").status_code == 202
    assert kick_off(seeded, "/fhir/$export?_type=Patient").status_code == 202  # one ended: room again
