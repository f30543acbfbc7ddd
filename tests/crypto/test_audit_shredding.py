"""AuditEvents about a patient are sealed under that patient's key: destroying the key (an
erasure) leaves them unreadable, and `fhir-server audit verify` still verifies the chain."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fhir_server import cli
from fhir_server.app import create_app
from fhir_server.crypto import DataKeys, LocalKeyRing, patient_scope
from fhir_server.settings import Settings
from tests.builders import patient
from tests.conftest import authorized
from tests.http.helpers import send


def test_the_chain_verifies_after_a_patient_key_is_destroyed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FHIR_SERVER_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(cli, "configure", lambda level: None)
    settings = Settings(data_dir=tmp_path, base_url="http://testserver/fhir")
    with authorized(TestClient(create_app(settings))) as client:
        for id in ("a", "b"):
            assert send(client, "PUT", f"/fhir/Patient/{id}", {**patient(), "id": id}).status_code == 201
            assert client.get(f"/fhir/Patient/{id}").status_code == 200
    assert cli.main(["audit", "verify"]) == 0
    assert "intact" in capsys.readouterr().err
    keys = DataKeys(LocalKeyRing(settings.key_ring_path), settings.data_keys_path)
    assert keys.destroy(patient_scope("a")) == 1
    assert cli.main(["audit", "verify"]) == 0
    verdict = capsys.readouterr().err
    assert "intact" in verdict and "events erased with their patient's key" in verdict
    assert " (0 events" not in verdict
