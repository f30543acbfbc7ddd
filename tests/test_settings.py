"""Settings: environment variables with the FHIR_SERVER_ prefix, and derived values."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_server.settings import Settings


def test_base_url_follows_the_port_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIR_SERVER_PORT", "9123")
    assert Settings().base_url == "http://localhost:9123/fhir"
    monkeypatch.setenv("FHIR_SERVER_BASE_URL", "https://fhir.example.fr/api/fhir")
    settings = Settings()
    assert settings.base_url == "https://fhir.example.fr/api/fhir"
    assert settings.base_path == "/api/fhir"


def test_store_defaults_to_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).store_url == f"sqlite:///{tmp_path / 'fhir.db'}"
    assert Settings(store="sqlite:///elsewhere.db").store_url == "sqlite:///elsewhere.db"
