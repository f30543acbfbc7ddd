"""The blind-index settings (docs/blind-indexes.md, README configuration): which parameters
are protected, and a protected parameter that cannot be blind-indexed refused at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_server import cli
from fhir_server.app import blind_index
from fhir_server.settings import Settings


def test_by_default_the_people_parameters_are_protected(tmp_path: Path) -> None:
    blind = blind_index(Settings(data_dir=tmp_path))
    assert blind is not None
    assert blind.protects("Patient", "name") and blind.protects("Practitioner", "identifier")
    assert not blind.protects("Patient", "birthdate") and not blind.protects("Organization", "name")
    assert blind.prefix_cap == 32 and blind.sort_limit == 10_000


def test_the_list_cap_and_limit_are_settings(tmp_path: Path) -> None:
    blind = blind_index(Settings(data_dir=tmp_path, protected_params=["Patient.family"],
                                 blind_prefix_cap=8, protected_sort_limit=50))
    assert blind is not None and blind.protects("Patient", "family")
    assert not blind.protects("Patient", "given")
    assert (blind.prefix_cap, blind.sort_limit) == (8, 50)


def test_nothing_protected_or_encryption_off_means_plaintext_indexes(tmp_path: Path) -> None:
    assert blind_index(Settings(data_dir=tmp_path, protected_params=[])) is None
    assert blind_index(Settings(data_dir=tmp_path, encryption=False)) is None


def test_serve_refuses_a_parameter_that_cannot_be_blind_indexed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    started: list[object] = []
    monkeypatch.setattr(cli.workers, "run", lambda *args: started.append(args) or 0)
    # `serve` passes its flags on through the environment: monkeypatch puts it back after.
    for name in Settings.model_fields.keys() - {"key_ring"}:
        monkeypatch.setenv(f"FHIR_SERVER_{name.upper()}", "")
        monkeypatch.delenv(f"FHIR_SERVER_{name.upper()}")
    code = cli.main(["serve", "--data-dir", str(tmp_path), "--protected-params", '["Patient.birthdate"]'])
    assert code == 2 and not started
    error = capsys.readouterr().err
    assert "FHIR_SERVER_PROTECTED_PARAMS" in error and "Patient.birthdate" in error
