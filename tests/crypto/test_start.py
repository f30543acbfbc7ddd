"""The server refuses to start without a usable key ring: a clear message, a non-zero exit,
nothing served (checked before any worker starts, and again by every worker's app)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fhir_server import cli
from fhir_server.app import create_app
from fhir_server.crypto import DataKeys, KeyRingError, LocalKeyRing, create_key_ring, patient_scope
from fhir_server.settings import Settings


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """Records a server start instead of starting one; the environment `serve` sets for its
    workers is put back afterwards."""
    for name in Settings.model_fields:
        monkeypatch.setenv(f"FHIR_SERVER_{name.upper()}", "")
        monkeypatch.delenv(f"FHIR_SERVER_{name.upper()}")
    started: list[Settings] = []
    monkeypatch.setattr(cli.workers, "run", lambda *args: started.append(Settings()) or 0)
    monkeypatch.setattr(cli, "configure", lambda level: None)
    return started


def _serve(tmp_path: Path, ring: Path) -> int:
    return cli.main(["serve", "--data-dir", str(tmp_path), "--key-ring", str(ring)])


def test_missing(tmp_path: Path, started: list[Settings], capsys: pytest.CaptureFixture[str]) -> None:
    assert _serve(tmp_path, tmp_path / "absent.json") == 2
    assert "absent.json does not exist" in capsys.readouterr().err and not started


def test_too_open(tmp_path: Path, started: list[Settings], capsys: pytest.CaptureFixture[str]) -> None:
    create_key_ring(tmp_path / "ring.json")
    os.chmod(tmp_path / "ring.json", 0o644)
    assert _serve(tmp_path, tmp_path / "ring.json") == 2
    assert "chmod 600" in capsys.readouterr().err and not started


def test_malformed(tmp_path: Path, started: list[Settings], capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ring.json").write_text('{"format": 1}')
    os.chmod(tmp_path / "ring.json", 0o600)
    assert _serve(tmp_path, tmp_path / "ring.json") == 2
    assert "malformed" in capsys.readouterr().err and not started


def test_a_good_ring_starts(tmp_path: Path, started: list[Settings]) -> None:
    create_key_ring(tmp_path / "ring.json")
    assert _serve(tmp_path, tmp_path / "ring.json") == 0 and len(started) == 1


def test_no_key_ring_needed_with_encryption_off(tmp_path: Path, started: list[Settings]) -> None:
    assert cli.main(["serve", "--data-dir", str(tmp_path), "--key-ring", str(tmp_path / "x"),
                     "--no-encryption"]) == 0


def test_a_worker_app_refuses_too(tmp_path: Path) -> None:
    with pytest.raises(KeyRingError, match="does not exist"):
        create_app(Settings(data_dir=tmp_path, key_ring=tmp_path / "absent.json"))


def test_the_wrong_key_ring(tmp_path: Path, started: list[Settings],
                            capsys: pytest.CaptureFixture[str]) -> None:
    create_key_ring(tmp_path / "ring.json")
    create_key_ring(tmp_path / "other.json")
    keys = DataKeys(LocalKeyRing(tmp_path / "ring.json"), tmp_path / "datakeys.db")
    keys.current(patient_scope("p"))  # data keys wrapped by the first ring
    keys.close()
    assert _serve(tmp_path, tmp_path / "other.json") == 2
    assert "cannot open the stored data keys" in capsys.readouterr().err and not started
    assert _serve(tmp_path, tmp_path / "ring.json") == 0 and len(started) == 1
