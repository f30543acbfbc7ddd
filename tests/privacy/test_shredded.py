"""Versions an erasure shredded (sealed under a destroyed data key) and left in the store:
AuditEvents about the patient, a version that moved out of their compartment before it
(store/bodies.py). Pages leave them out; a direct read answers as for no such version."""

from __future__ import annotations

import sqlite3
from typing import Any

from tests.http.helpers import send
from tests.privacy.conftest import Server


def _put(server: Server, resource: dict[str, Any], status: int) -> None:
    response = send(server.client, "PUT", f"/fhir/{resource['resourceType']}/{resource['id']}", resource)
    assert response.status_code == status, response.text


def _moved_out(server: Server) -> None:
    """Observation/mv: version 1 about patient a (sealed under a's key), version 2 about b."""
    first = {"resourceType": "Observation", "id": "mv", "status": "final", "code": {"text": "x"},
             "subject": {"reference": "Patient/a"}, "valueString": "about a"}
    _put(server, first, 201)
    _put(server, {**first, "subject": {"reference": "Patient/b"}, "valueString": "about b"}, 200)


def test_audit_event_pages_leave_out_the_shredded_events(server: Server) -> None:
    client = server.client
    assert server.erase_and_settle("a").status_code == 200
    for url in ("/fhir/AuditEvent?_count=50", "/fhir/AuditEvent?_count=1", "/fhir/AuditEvent",
                "/fhir/AuditEvent/_history", "/fhir/_history?_count=500"):
        response = client.get(url)
        assert response.status_code == 200, (url, response.text)
    events = [e["resource"] for e in client.get("/fhir/AuditEvent?_count=500").json()["entry"]]
    assert any(e["type"]["code"] == "rest" for e in events)  # the readable ones are still there
    assert not any("Patient/a" in str(e.get("entity")) for e in events
                   if e.get("action") != "D" and "erase" not in str(e))


def test_history_skips_a_version_that_moved_out_of_the_compartment(server: Server) -> None:
    client = server.client
    _moved_out(server)
    assert server.erase_and_settle("a").status_code == 200
    for url in ("/fhir/Observation/_history", "/fhir/_history", "/fhir/Observation/mv/_history"):
        response = client.get(url)
        assert response.status_code == 200, (url, response.text)
        assert "about a" not in response.text, url
    versions = client.get("/fhir/Observation/mv/_history").json()["entry"]
    assert [e["resource"]["meta"]["versionId"] for e in versions] == ["2"]
    assert client.get("/fhir/Observation/mv").json()["valueString"] == "about b"


def test_reading_a_shredded_version_is_as_for_no_such_version(server: Server) -> None:
    client = server.client
    _moved_out(server)
    assert server.erase_and_settle("a").status_code == 200
    shredded = client.get("/fhir/Observation/mv/_history/1")
    missing = client.get("/fhir/Observation/mv/_history/9")
    assert shredded.status_code == missing.status_code == 404
    assert shredded.json()["issue"][0]["code"] == "not-found"
    # A caller the resource is out of reach of gets the same answer, never a 500.
    admin = server.headers("admin")
    assert client.get("/fhir/Observation/mv", headers=admin).status_code == 404
    assert client.get("/fhir/Observation/mv/_history/1", headers=admin).status_code == 404
    assert client.get("/fhir/Observation/mv/_history/2", headers=admin).status_code == 404


def test_a_tampered_version_on_a_page_is_still_an_incident(server: Server) -> None:
    """Only a destroyed key makes a version shredded: one whose ciphertext was changed is
    not left out quietly."""
    assert server.erase_and_settle("a").status_code == 200
    conn = sqlite3.connect(server.settings.data_dir / "audit.db")  # the audit store: SQLite
    id, body = conn.execute("SELECT id, body FROM history ORDER BY seq DESC LIMIT 1").fetchone()
    conn.execute("UPDATE history SET body = ? WHERE id = ?", (body[:-1] + bytes([body[-1] ^ 1]), id))
    conn.commit()
    conn.close()
    for url in ("/fhir/AuditEvent?_count=500", "/fhir/AuditEvent/_history?_count=500",
                f"/fhir/AuditEvent/{id}"):
        response = server.client.get(url)
        assert response.status_code == 500, url
        assert "incident" in response.json()["issue"][0]["diagnostics"]
