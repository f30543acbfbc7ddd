"""Backups across key rotations, and the key backup (`fhir-server keys backup DEST`): an archive
taken before `keys rotate --kek` or `--data` still restores, and one restores after the data
directory is lost, from the key backup, without bringing an erased patient's keys back."""

from __future__ import annotations

import shutil
import sqlite3
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fhir_server import cli
from fhir_server.app import create_app
from fhir_server.settings import Settings
from tests.conftest import authorized
from tests.privacy.conftest import Server
from tests.privacy.test_backup_cli import _backup, _elsewhere, _restore, _versions


def _check_restored(target: Path) -> None:
    settings = Settings(data_dir=target, base_url="http://testserver/fhir", publish_definitions=False)
    with authorized(TestClient(create_app(settings))) as client:
        assert client.get("/fhir/Patient/b").status_code == 200
        assert len(client.get("/fhir/Observation?subject=Patient/b").json()["entry"]) == 3


def test_an_archive_taken_before_key_rotations_still_restores(
        sqlite_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    archive = _backup(capsys)
    assert cli.main(["keys", "rotate", "--kek"]) == 0
    assert cli.main(["keys", "rotate", "--data", "Patient/b"]) == 0
    rotated = capsys.readouterr().out
    target = _elsewhere(sqlite_server, tmp_path, monkeypatch)
    code, out = _restore(archive, capsys)
    assert code == 0, out
    _check_restored(target)
    assert "older ones kept retired" in rotated and "1 older keys retired" in rotated


def _key_ids(db: Path, scope: str) -> set[bytes]:
    with sqlite3.connect(db) as conn:
        return {bytes(row[0]) for row in conn.execute(
            "SELECT key_id FROM data_key WHERE scope = ?", (scope,))}


def test_a_lost_data_directory_restores_from_the_key_backup_erasures_kept(
        sqlite_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    keys_dest = tmp_path / "key-backup"
    assert cli.main(["keys", "backup", str(keys_dest)]) == 0
    capsys.readouterr()
    copies = sorted(path.name for path in keys_dest.iterdir())
    ring = sqlite_server.settings.key_ring_path
    assert ring.name in copies and "datakeys.db" in copies
    for path in keys_dest.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _key_ids(keys_dest / "datakeys.db", "Patient/a")  # a's key, before the erasure
    archive = _backup(capsys)
    assert cli.main(["keys", "rotate", "--kek"]) == 0
    assert sqlite_server.erase("a", reason="GDPR request 7").status_code == 200
    # The data directory is lost: a new one, with datakeys.db from the key backup.
    target = tmp_path / "restored"
    target.mkdir()
    shutil.copy(sqlite_server.settings.data_dir / "signing-keys.json", target)
    shutil.copy(keys_dest / "datakeys.db", target)
    monkeypatch.setenv("FHIR_SERVER_DATA_DIR", str(target))
    code, out = _restore(archive, capsys)
    assert code == 0, out
    assert "1 erasures since the backup done again" in out
    assert _key_ids(target / "datakeys.db", "Patient/a") == set()  # destroyed again
    _check_restored(target)
    settings = Settings(data_dir=target, base_url="http://testserver/fhir", publish_definitions=False)
    with authorized(TestClient(create_app(settings))) as client:
        assert client.get("/fhir/Patient/a").status_code == 404


def test_keys_backup_without_a_ring_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FHIR_SERVER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FHIR_SERVER_KEY_RING", str(tmp_path / "none" / "ring.json"))
    assert cli.main(["keys", "backup", str(tmp_path / "dest")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "dest").exists() or not any((tmp_path / "dest").iterdir())


def test_bodies_under_a_key_no_erasure_explains_are_still_refused(
        sqlite_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A key gone without an erasure in the ledger (a wrong or damaged datakeys.db): the
    restore stops before writing, rather than leave the patient's versions out."""
    archive = _backup(capsys)
    target = _elsewhere(sqlite_server, tmp_path, monkeypatch)
    with sqlite3.connect(target / "datakeys.db") as conn:
        conn.execute("DELETE FROM data_key WHERE scope = 'Patient/b'")
    code, out = _restore(archive, capsys)
    assert code == 2 and "cannot be opened" in out and "nothing was restored" in out
    assert _versions(target) == 0
