"""A store put back from files (a disk snapshot, not `fhir-server restore`) with a patient
erased since: the server erases them again at start-up, before serving (services/erase.py
`reconcile`)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fhir_server.app import create_app
from tests.conftest import authorized
from tests.privacy.conftest import serving


def _snapshot(source: Path, target: Path) -> None:
    with sqlite3.connect(source) as live, sqlite3.connect(target) as copy:
        live.backup(copy)


def test_a_patient_erased_after_a_file_snapshot_is_erased_again_at_start(
        tmp_path: Path, signing_keys: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = tmp_path / "snapshot.db"
    with serving("sqlite", tmp_path, signing_keys, monkeypatch) as server:
        _snapshot(server.settings.data_dir / "fhir.db", snapshot)
        assert server.erase("a", reason="GDPR request 42").status_code == 200
        settings = server.settings
    for file in settings.data_dir.glob("fhir.db*"):
        file.unlink()
    snapshot.rename(settings.data_dir / "fhir.db")
    with authorized(TestClient(create_app(settings))) as client:
        for key in ("Patient/a", "Observation/a-obs0", "Condition/a-cond"):
            assert client.get(f"/fhir/{key}").status_code == 404
        assert client.get("/fhir/Observation?subject=Patient/a").json().get("entry", []) == []
        assert client.get("/fhir/Patient/b").status_code == 200
        events = client.get("/fhir/AuditEvent?entity-name=Patient/a").json()["entry"]
        reasons = [d["valueString"] for e in events for d in e["resource"]["entity"][0]["detail"]
                   if d["type"] == "reason"]
        assert any("replayed at start-up" in r and "GDPR request 42" in r for r in reasons)
    with sqlite3.connect(settings.data_dir / "fhir.db") as db:
        assert db.execute("SELECT count(*) FROM history WHERE id LIKE 'a%'").fetchone()[0] == 0


def test_an_id_reused_since_the_erasure_is_left_alone(
        tmp_path: Path, signing_keys: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    with serving("sqlite", tmp_path, signing_keys, monkeypatch) as server:
        assert server.erase("a", reason="GDPR request 42").status_code == 200
        again = {"resourceType": "Patient", "id": "a", "name": [{"family": "Newcomer"}]}
        assert server.client.put("/fhir/Patient/a", json=again,
                                 headers={"Content-Type": "application/fhir+json"}).status_code == 201
        settings = server.settings
    with authorized(TestClient(create_app(settings))) as client:
        assert client.get("/fhir/Patient/a").json()["name"][0]["family"] == "Newcomer"
