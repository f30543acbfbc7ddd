"""Review of `Patient/[id]/$everything` (issue 18): parameters a hostile caller sends
(digits of other scripts, ranges upside down once time zones are counted, values that are not
FHIR dates) answer 400 naming the parameter, synchronously and before an asynchronous job is
stored; a paging link replayed by someone else reaches nothing; what the record references
never brings in another patient's data; a relative neither exports nor erases."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from tests.builders import observation
from tests.bulk.conftest import jobs
from tests.bulk.helpers import kick_off
from tests.http.helpers import send
from tests.privacy.conftest import Server
from tests.privacy.records import bearer, compartment, patient_ids, synthea  # noqa: F401 - a fixture
from tests.privacy.test_everything import TYPES, matched, pages, referenced
from tests.privacy.test_relatives import delegation, grant, put, related_person, relative_headers

BAD = [
    ("_count=" + quote("²"), "_count"),  # str.isdigit() says yes, int() says no
    ("_count=" + quote("١٠"), "_count"),  # Arabic-Indic ten: not a FHIR integer
    # 06:00Z is after 10:00+05:00 (05:00Z): upside down once the offsets are counted
    ("start=2020-01-01T06:00:00Z&end=" + quote("2020-01-01T10:00:00+05:00"), "start"),
    ("start=2020-01-02&end=" + quote("2020-01-01T23:00:00+00:00"), "start"),
    ("start=20200101", "start"),  # ISO 8601's basic form: not a FHIR date
    ("end=" + quote("2020-01-01 10:00:00Z"), "end"),
    ("start=2020-01-01T10:00", "start"),  # a time without its time zone
    ("_since=2020-01-01T10", "_since"),
]


@pytest.mark.parametrize("query, expression", BAD)
def test_bad_parameters_are_400_naming_them(sqlite_server: Server, query: str, expression: str) -> None:
    client = sqlite_server.client
    response = client.get(f"/fhir/Patient/a/$everything?{query}", headers=sqlite_server.headers("patient-a"))
    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert response.json()["issue"][0]["expression"] == [expression]
    asynchronous = kick_off(client, f"/fhir/Patient/a/$everything?{query}", sqlite_server.headers("ehr"))
    assert asynchronous.status_code == 400, asynchronous.text
    assert asynchronous.json()["issue"][0]["expression"] == [expression]
    assert jobs(client) == []


def test_a_range_right_side_up_once_offsets_are_counted_is_served(sqlite_server: Server) -> None:
    # 10:00+05:00 is 05:00Z, before 06:00Z
    query = "start=" + quote("2020-01-01T10:00:00+05:00") + "&end=2020-01-01T06:00:00Z"
    response = sqlite_server.client.get(f"/fhir/Patient/a/$everything?{query}",
                                        headers=sqlite_server.headers("patient-a"))
    assert response.status_code == 200, response.text


def test_a_paging_link_replayed_by_another_patient_reaches_nothing(sqlite_server: Server) -> None:
    client = sqlite_server.client
    first = client.get("/fhir/Patient/a/$everything?_count=2", headers=sqlite_server.headers("patient-a"))
    assert first.status_code == 200, first.text
    following = next(link["url"] for link in first.json()["link"] if link["relation"] == "next")
    path = following.removeprefix("http://testserver")
    replayed = client.get(path, headers=sqlite_server.headers("patient-b"))
    assert replayed.status_code == 404
    assert "entry" not in replayed.json()
    # and under a huge _count, one page at most the server's maximum
    huge = client.get("/fhir/Patient/a/$everything?_count=99999999999999999999",
                      headers=sqlite_server.headers("patient-a"))
    assert huge.status_code == 200
    assert len(huge.json()["entry"]) <= client.app.state.context.max_page_size  # type: ignore[attr-defined]


def test_what_the_record_references_never_brings_in_another_patients_data(sqlite_server: Server) -> None:
    """An Observation of a pointing at b's Binary, a Bundle holding b, b's Task and List, b's
    Observation: none of them comes with a's record, whoever asks (types outside every
    compartment are read as the caller would read them; compartment types are never pulled in)."""
    client = sqlite_server.client
    secret = {"Binary/b-secret": {"contentType": "text/plain", "data": "U0VDUkVULUI=",
                                  "securityContext": {"reference": "Patient/b"}},
              "Bundle/b-doc": {"type": "collection", "entry": [{"fullUrl": "http://testserver/fhir/Patient/b",
                               "resource": {"resourceType": "Patient", "id": "b"}}]},
              "Task/t-b": {"status": "requested", "intent": "order", "for": {"reference": "Patient/b"}},
              "List/l-b": {"status": "current", "mode": "working", "subject": {"reference": "Patient/b"}}}
    for reference, body in secret.items():
        kind, _, id = reference.partition("/")
        response = send(client, "PUT", f"/fhir/{reference}", {"resourceType": kind, "id": id, **body})
        assert response.status_code == 201, response.text
    pointing = {**observation("Patient/a"), "id": "a-pointing",
                "focus": [{"reference": r} for r in [*secret, "Observation/b-obs0"]]}
    assert send(client, "PUT", "/fhir/Observation/a-pointing", pointing).status_code == 201
    for caller in ("patient-a", "ehr"):
        page = client.get("/fhir/Patient/a/$everything?_count=1000", headers=sqlite_server.headers(caller))
        assert page.status_code == 200, page.text
        found = {e["fullUrl"].removeprefix("http://testserver/fhir/") for e in page.json()["entry"]}
        assert "Observation/a-pointing" in found
        assert "Observation/b-obs0" not in found and "Task/t-b" not in found and "List/l-b" not in found
        if caller == "patient-a":  # the system client reads every Binary and Bundle; the patient not b's
            assert not found & set(secret), found


def test_a_relative_neither_exports_nor_erases(sqlite_server: Server) -> None:
    put(sqlite_server, related_person())
    grant(sqlite_server, delegation(["Observation"]))
    headers = relative_headers(sqlite_server)
    client = sqlite_server.client
    assert kick_off(client, "/fhir/Patient/a/$everything", headers).status_code == 403
    body = {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "mine"}]}
    assert send(client, "POST", "/fhir/Patient/a/$erase", body, **headers).status_code == 403
    assert jobs(client) == []
    assert client.get("/fhir/Patient/a", headers=sqlite_server.headers("ehr")).status_code == 200


def test_a_system_client_gets_the_compartment_and_what_it_references(synthea: TestClient) -> None:  # noqa: F811
    """The brute-force comparison of test_everything.py, under a system token (an EHR's
    backend client, no patient in context), the one kind of token it did not cover."""
    patient = sorted(patient_ids(synthea))[2]
    entries = pages(synthea, f"/fhir/Patient/{patient}/$everything?_count=41", bearer(synthea, "system/*.rs"))
    members = [m for m in matched(entries) if not m.startswith("AuditEvent/")]
    assert len(members) == len(set(members))
    expected = compartment(synthea, patient, TYPES)
    assert len(expected) > 40 and set(members) == expected
    assert set(matched(entries, "include")) == referenced(synthea, expected)


def test_paging_ends_though_each_page_is_audited(sqlite_server: Server) -> None:
    """Each page read leaves an AuditEvent in the patient's compartment: followed one resource
    at a time, the next links never ended (every page added the AuditEvent the next one read).
    The record is paged as it stood at the first page: AuditEvents recorded since are left out."""
    client, headers = sqlite_server.client, sqlite_server.headers("patient-a")
    url: str | None = "/fhir/Patient/a/$everything?_count=1"
    seen: list[str] = []
    first = None
    for _ in range(200):
        if url is None:
            break
        page = client.get(url, headers=headers)
        assert page.status_code == 200, page.text
        first = first or page.json()["meta"]["lastUpdated"]
        seen += [e["fullUrl"] for e in page.json().get("entry", []) if e["search"]["mode"] == "match"]
        url = next((link["url"].removeprefix("http://testserver") for link in page.json()["link"]
                    if link["relation"] == "next"), None)
    assert url is None, f"still paging after {len(seen)} resources"
    assert len(seen) == len(set(seen))
    whole = client.get("/fhir/Patient/a/$everything?_count=1000", headers=headers).json()
    audit = [e for e in whole["entry"] if e["resource"]["resourceType"] == "AuditEvent"]
    assert {e["fullUrl"] for e in whole["entry"]} - {e["fullUrl"] for e in audit} <= set(seen)
    assert {e["fullUrl"] for e in audit if e["resource"]["meta"]["lastUpdated"] < first} <= set(seen)
