"""What the audit trail keeps of a request's query, and what reading the trail adds to it
(docs/audit.md, "Who sees which events").

A query may name other patients and their search terms: it is kept only in the event that
names no patient (for auditors), never in an event a patient reads. Reading AuditEvents
leaves one event naming no patient, however many patients the events read name: paging
through the trail does not multiply it.

Over HTTP with real tokens, on both stores (the platform of tests/trials)."""

from __future__ import annotations

import base64
from typing import Any

from tests.trials.conftest import Platform, platform  # noqa: F401

QUERY_ROLE = "24"


def _events(p: Platform, path: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = p.client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", [])]


def _queries(event: dict[str, Any]) -> list[str]:
    return [base64.b64decode(e["query"]).decode() for e in event.get("entity", [])
            if e.get("role", {}).get("code") == QUERY_ROLE]


def _names_a_patient(event: dict[str, Any]) -> bool:
    return any(e.get("role", {}).get("code") == "1" for e in event.get("entity", []))


def test_a_patient_never_reads_the_query_of_a_search_about_her(platform: Platform) -> None:  # noqa: F811
    ehr = platform.headers("ehr")
    # Only shared's data match, but the query names another patient and a search term.
    for path in ("/fhir/Observation?subject=Patient/shared,Patient/ghost77",
                 "/fhir/Patient?_id=shared&family=Shared,Secretname"):
        assert platform.client.get(path, headers=ehr).status_code == 200
    hers = _events(platform, "/fhir/AuditEvent?patient=Patient/shared&_count=1000",
                   platform.headers("patient", "shared"))
    assert [e for e in hers if e["agent"][0].get("altId") == "ehr"]  # she sees the EHR's reads
    assert all(not _queries(e) for e in hers), [_queries(e) for e in hers]
    # The auditor's event, naming no patient, keeps the query.
    every = _events(platform, "/fhir/AuditEvent?_count=1000", ehr)
    kept = [q for e in every if not _names_a_patient(e) for q in _queries(e)]
    assert "subject=Patient/shared,Patient/ghost77" in kept
    assert "_id=shared&family=***" in kept  # the searched names are not kept (test_audit_shred.py)
    assert not [q for e in every if _names_a_patient(e) for q in _queries(e)]


def test_reading_the_trail_leaves_one_event_naming_no_patient(platform: Platform) -> None:  # noqa: F811
    ehr = platform.headers("ehr")
    assert platform.client.get("/fhir/Observation?_count=100", headers=ehr).status_code == 200

    def total() -> int:
        return int(platform.client.get("/fhir/AuditEvent?_summary=count", headers=ehr).json()["total"])

    before = total()
    page = _events(platform, "/fhir/AuditEvent?_count=1000", ehr)
    assert len({r["reference"] for e in page for r in
                (x["what"] for x in e.get("entity", []) if "what" in x)
                if r["reference"].startswith("Patient/")}) > 5  # the page names many patients
    # One event for the page, one for the count above: not one per patient the page names.
    assert total() - before == 2
    latest = _events(platform, "/fhir/AuditEvent?_sort=-date&_count=3", ehr)
    read = next(e for e in latest if _queries(e) == ["_count=1000"])
    assert not _names_a_patient(read)
