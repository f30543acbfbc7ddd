"""`fhir-server backup` and `fhir-server restore` on the embedded store: the whole story
through the commands, and every archive a restore must refuse (clear message, exit 2,
nothing changed)."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fhir_server import cli, clock
from fhir_server.app import create_app
from fhir_server.backup.archive import ArchiveWriter, read_header, records
from fhir_server.crypto import LocalKeyRing, create_key_ring
from fhir_server.settings import Settings
from tests.conftest import authorized
from tests.privacy.conftest import Server


def _backup(capsys: pytest.CaptureFixture[str]) -> Path:
    assert cli.main(["backup"]) == 0
    return Path(capsys.readouterr().out.split()[1].rstrip(":"))


def _elsewhere(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A new data directory for the restore, beside the same key ring, with the data keys
    (never in a backup: kept, like the key ring, apart from it)."""
    target = tmp_path / "restored"
    target.mkdir()
    shutil.copy(server.settings.data_dir / "signing-keys.json", target)
    for file in server.settings.data_dir.glob("datakeys.db*"):
        shutil.copy(file, target)
    monkeypatch.setenv("FHIR_SERVER_DATA_DIR", str(target))
    return target


def _restore(archive: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(["restore", str(archive)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _versions(data: Path) -> int:
    if not (data / "fhir.db").exists():
        return 0
    db = sqlite3.connect(data / "fhir.db")
    try:
        return int(db.execute("SELECT count(*) FROM history").fetchone()[0])
    finally:
        db.close()


def test_backup_erase_restore_through_the_commands(
        sqlite_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert sqlite_server.client.delete("/fhir/Observation/a-obs2").status_code in (200, 204)
    archive = _backup(capsys)
    assert archive.parent == sqlite_server.settings.data_dir / "backups"
    assert sqlite_server.erase("a", reason="GDPR request 42").status_code == 200
    target = _elsewhere(sqlite_server, tmp_path, monkeypatch)
    code, out = _restore(archive, capsys)
    assert code == 0, out
    assert "1 erasures since the backup done again" in out
    raw = b"".join(f.read_bytes() for f in target.glob("fhir.db*"))
    for gone in (b"a-obs0", b"a-obs2", b"a-cond", b"Zwxqvtrudel"):
        assert gone not in raw
    settings = Settings(data_dir=target, base_url="http://testserver/fhir", publish_definitions=False)
    with authorized(TestClient(create_app(settings))) as client:
        for key in ("Patient/a", "Observation/a-obs0", "Condition/a-cond"):
            assert client.get(f"/fhir/{key}").status_code == 404
        assert client.get("/fhir/Observation?subject=Patient/a").json().get("entry", []) == []
        assert client.get("/fhir/Patient/b").status_code == 200
        assert len(client.get("/fhir/Observation?subject=Patient/b").json()["entry"]) == 3
    assert cli.main(["audit", "verify"]) == 0
    assert "intact" in capsys.readouterr().err


def test_a_restore_indexes_protected_parameters_blind(
        sqlite_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The restored index holds digests of names and identifiers, as the server writes them,
    so that searches on them find the restored patient."""
    marked = {"resourceType": "Patient", "id": "m", "name": [{"family": "Qwyxzorvald"}],
              "identifier": [{"system": "https://hospital.example/mrn", "value": "8X3QK7ZW1V"}]}
    assert sqlite_server.client.put("/fhir/Patient/m", json=marked).status_code == 201
    archive = _backup(capsys)
    target = _elsewhere(sqlite_server, tmp_path, monkeypatch)
    code, out = _restore(archive, capsys)
    assert code == 0, out
    raw = b"".join(f.read_bytes() for f in target.glob("fhir.db*")).lower()
    assert b"qwyxz" not in raw and b"8x3qk" not in raw
    settings = Settings(data_dir=target, base_url="http://testserver/fhir", publish_definitions=False)
    with authorized(TestClient(create_app(settings))) as client:
        for query in ("family=qwyx", "identifier=8X3QK7ZW1V"):
            found = client.get(f"/fhir/Patient?{query}").json().get("entry", [])
            assert [e["resource"]["id"] for e in found] == ["m"], query


def _flip(archive: Path, at: int) -> None:
    data = bytearray(archive.read_bytes())
    data[at] ^= 0x01
    archive.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flipped", "cut", "header", "not an archive", "empty"])
def test_a_damaged_archive_is_refused(
        sqlite_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], damage: str) -> None:
    archive = _backup(capsys)
    size = archive.stat().st_size
    if damage == "flipped":
        _flip(archive, size // 2)
    elif damage == "cut":
        archive.write_bytes(archive.read_bytes()[:size - 40])
    elif damage == "header":
        archive.write_bytes(archive.read_bytes().replace(b'"created":"', b'"created":"1', 1))
    elif damage == "not an archive":
        archive.write_bytes(b"PK\x03\x04 some zip file")
    else:
        archive.write_bytes(b"")
    target = _elsewhere(sqlite_server, tmp_path, monkeypatch)
    code, out = _restore(archive, capsys)
    assert code == 2
    assert "nothing was restored" in out
    assert _versions(target) == 0


def test_a_foreign_archive_is_refused(
        sqlite_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """An archive another server wrote: its key is wrapped under another key ring."""
    own = sqlite_server.settings.key_ring_path
    other = tmp_path / "other" / "keyring.json"
    create_key_ring(other)
    monkeypatch.setenv("FHIR_SERVER_KEY_RING", str(other))
    monkeypatch.setenv("FHIR_SERVER_ENCRYPTION", "false")  # its data keys are not ours
    archive = _backup(capsys)
    monkeypatch.setenv("FHIR_SERVER_KEY_RING", str(own))
    monkeypatch.delenv("FHIR_SERVER_ENCRYPTION")
    target = _elsewhere(sqlite_server, tmp_path, monkeypatch)
    code, out = _restore(archive, capsys)
    assert code == 2 and "another server" in out
    assert _versions(target) == 0


def test_restore_needs_empty_stores(sqlite_server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    archive = _backup(capsys)
    before = _versions(sqlite_server.settings.data_dir)
    code, out = _restore(archive, capsys)
    assert code == 2 and "move them aside" in out
    assert _versions(sqlite_server.settings.data_dir) == before
    missing = cli.main(["restore", str(archive) + ".nope"])
    assert missing == 2 and "no such archive" in capsys.readouterr().err


def _restored_trail_verifies(server: Server, archive: Path, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _elsewhere(server, tmp_path, monkeypatch)
    code, out = _restore(archive, capsys)
    assert code == 0, out
    assert cli.main(["audit", "verify"]) == 0
    assert "intact" in capsys.readouterr().err


def test_a_trail_pruned_at_a_checkpoint_verifies_after_a_restore(
        sqlite_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The archive carries the audit chain's checkpoint and pruned notes (docs/audit.md,
    "Pruning past the retention"): without them the links cut before the backup would be
    missing from the restored chain, and it would not verify."""
    a_year_on = date.today().replace(year=date.today().year + 1)  # the fixture's events due
    with clock.frozen(datetime(a_year_on.year, a_year_on.month, a_year_on.day, 10, tzinfo=UTC)):
        assert cli.main(["retention", "run"]) == 0
        assert "access-logs: prune AuditEvent" in capsys.readouterr().out
        archive = _backup(capsys)
    chain = sqlite3.connect(sqlite_server.settings.data_dir / "audit-chain.db")
    try:
        assert chain.execute("SELECT count(*) FROM checkpoint").fetchone()[0] == 1  # links cut
    finally:
        chain.close()
    _restored_trail_verifies(sqlite_server, archive, tmp_path, monkeypatch, capsys)


def test_an_archive_from_before_checkpoints_were_carried_restores(
        sqlite_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """An earlier release's archive: no checkpoint or pruned records, and its last record
    counts versions, audit events and links only."""
    archive = _backup(capsys)
    provider = LocalKeyRing(sqlite_server.settings.key_ring_path)
    with archive.open("rb") as file:
        header, _ = read_header(file)
        file.seek(0)
        kept = [r for r in records(file, provider) if r[0] not in ("c", "p")]
    ended = kept[-1][1]
    kept[-1] = ["end", {k: ended[k] for k in ("versions", "audit", "links")}]
    older = tmp_path / "older.fhirbak"
    with older.open("wb") as file:
        writer = ArchiveWriter(file, provider, {k: header[k] for k in ("created", "archive")})
        for record in kept:
            writer.add(record)
        writer.close()
    _restored_trail_verifies(sqlite_server, older, tmp_path, monkeypatch, capsys)
