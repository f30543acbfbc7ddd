"""`fhir-server keys init|status|verify|rotate --kek`, and a KEK rotation while a bounded load
loop creates and reads: zero errors, every version readable, the older KEK gone."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fhir_server import cli
from fhir_server.app import create_app
from fhir_server.crypto import DataKeys, LocalKeyRing, patient_scope
from fhir_server.settings import Settings
from tests.builders import observation, patient
from tests.conftest import authorized
from tests.http.helpers import send


@pytest.fixture
def ring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data directory and a key ring of this test's own (they are rotated)."""
    monkeypatch.setenv("FHIR_SERVER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FHIR_SERVER_KEY_RING", str(tmp_path / "keys" / "ring.json"))
    monkeypatch.setattr(cli, "configure", lambda level: None)
    assert cli.main(["keys", "init"]) == 0
    return tmp_path / "keys" / "ring.json"


def test_init_makes_an_owner_only_ring_once(ring: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ring.stat().st_mode & 0o777 == 0o600
    before = ring.read_bytes()
    assert cli.main(["keys", "init"]) == 2
    assert "already exists" in capsys.readouterr().err and ring.read_bytes() == before


def test_commands_without_a_ring_say_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FHIR_SERVER_KEY_RING", str(tmp_path / "none.json"))
    for command in ("status", "verify"):
        assert cli.main(["keys", command]) == 2
        assert "does not exist" in capsys.readouterr().err


@pytest.fixture
def server(ring: Path, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(base_url="http://testserver/fhir")
    with authorized(TestClient(create_app(settings))) as client:
        yield client


def test_kek_rotation_under_load(server: TestClient, ring: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    for n in range(30):  # data keys to re-wrap: one per patient, one per type
        assert send(server, "PUT", f"/fhir/Patient/p{n}", {**patient(), "id": f"p{n}"}).status_code == 201
    old = LocalKeyRing(ring).status().active
    errors: list[str] = []
    written: list[str] = []
    rotated = threading.Event()

    def load() -> None:  # bounded: stops once the rotation is done, after 40 rounds at least
        n = 0
        while n < 40 or not rotated.is_set():
            id = f"l{n}"
            made = send(server, "PUT", f"/fhir/Observation/{id}",
                        {**observation(f"Patient/p{n % 30}"), "id": id})
            read = server.get(f"/fhir/Patient/p{n % 30}")
            if made.status_code != 201 or read.status_code != 200:
                errors.append(f"{made.status_code} {read.status_code}")
            written.append(id)
            n += 1

    loader = threading.Thread(target=load)
    loader.start()
    try:
        assert cli.main(["keys", "rotate", "--kek"]) == 0
    finally:
        rotated.set()
        loader.join(120)
    assert errors == [] and len(written) >= 40
    status = LocalKeyRing(ring).status()
    # The old KEK is kept, retired, for the archives taken under it (backup retention).
    assert list(status.retired) == [old] and len(status.keks) == 2
    for id in written:
        assert server.get(f"/fhir/Observation/{id}").status_code == 200
    for n in range(30):
        assert server.get(f"/fhir/Patient/p{n}/_history/1").status_code == 200
    capsys.readouterr()
    assert cli.main(["keys", "verify"]) == 0 and cli.main(["keys", "status"]) == 0
    out = capsys.readouterr().out
    assert f"active key-encryption key: {status.active}" in out and "re-wrap: done" in out


def _stored_key_ids(data: Path, id_prefix: str) -> set[bytes]:
    """The data key ids in the headers of the stored versions of resources named so."""
    with sqlite3.connect(data / "fhir.db") as conn:
        # GLOB: case-sensitive (LIKE would take the published OperationDefinition/Patient-erase)
        rows = conn.execute("SELECT body FROM history WHERE id GLOB ? AND body IS NOT NULL AND "
                            "type IN ('Patient', 'Observation')", (f"{id_prefix}*",)).fetchall()
    return {bytes(row[0][1:17]) for row in rows}


def test_data_key_rotation_under_load(server: TestClient, ring: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    for version in range(3):
        assert send(server, "PUT", "/fhir/Patient/p", {**patient(), "id": "p",
                                                       "gender": ["male", "female", "other"][version]}
                    ).status_code in (200, 201)
    keys = DataKeys(LocalKeyRing(ring), data / "datakeys.db")
    [old] = keys.keys_of(patient_scope("p"))
    errors: list[str] = []
    written: list[str] = []
    rotated = threading.Event()

    def load() -> None:
        n = 0
        while n < 40 or not rotated.is_set():
            made = send(server, "PUT", f"/fhir/Observation/pl{n}",
                        {**observation("Patient/p"), "id": f"pl{n}"})
            read = server.get("/fhir/Patient/p/_history/1")
            if made.status_code != 201 or read.status_code != 200:
                errors.append(f"{made.status_code} {read.status_code}")
            written.append(f"pl{n}")
            n += 1

    loader = threading.Thread(target=load)
    loader.start()
    try:
        assert cli.main(["keys", "rotate", "--data", "Patient/p"]) == 0
    finally:
        rotated.set()
        loader.join(120)
    assert errors == []
    [new] = keys.keys_of(patient_scope("p"))
    assert new != old
    assert _stored_key_ids(data, "p") == {new} and _stored_key_ids(data, "pl") == {new}
    for id in written:
        assert server.get(f"/fhir/Observation/{id}").status_code == 200
    for version in (1, 2, 3):
        assert server.get(f"/fhir/Patient/p/_history/{version}").status_code == 200


def test_an_interrupted_data_key_rotation_resumes(server: TestClient, ring: Path,
                                                  tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert send(server, "PUT", "/fhir/Patient/q", {**patient(), "id": "q"}).status_code == 201
    keys = DataKeys(LocalKeyRing(ring), data / "datakeys.db")
    new = keys.rotate(patient_scope("q"))  # a run that stopped right after its new key
    assert len(keys.keys_of(patient_scope("q"))) == 2
    assert cli.main(["keys", "rotate", "--data", "Patient/q"]) == 0
    assert keys.keys_of(patient_scope("q")) == [new] and _stored_key_ids(data, "q") == {new}
    assert server.get("/fhir/Patient/q").status_code == 200


def test_a_bad_scope_is_refused(ring: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["keys", "rotate", "--data", "Patient/../x"]) == 2
    assert "Patient/<id> or a resource type" in capsys.readouterr().err
