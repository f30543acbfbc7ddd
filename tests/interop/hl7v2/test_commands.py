"""`fhir-server serve` with the MLLP setting starts the listener beside HTTP; `fhir-server hl7
errors` lists what was refused or never settled and `fhir-server hl7 replay` applies it
again once the cause is gone."""

from __future__ import annotations

import asyncio
import shutil
import socket
import sqlite3
from pathlib import Path
from typing import Any

import orjson

import pytest
from fastapi.testclient import TestClient

from fhir_server import cli
from fhir_server.app import body_codec, create_app, open_store
from fhir_server.interop.hl7v2 import INBOX, load
from fhir_server.interop.hl7v2.mapping import MAPPINGS
from fhir_server.store.base import HistoryQuery
from fhir_server.settings import Settings
from tests.conftest import authorized
from tests.interop.hl7v2.conftest import FS_CR, frame, message, msa


def _send(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(frame(raw))
        data = b""
        while not data.endswith(FS_CR):
            chunk = connection.recv(65536)
            assert chunk, "the listener closed the connection"
            data += chunk
    return data[1:-2]


def test_serve_with_mllp_listens_beside_http(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"mllp": True, "mllp_port": 0}))
    with authorized(TestClient(app)) as client:
        port = app.state.mllp.bound_port
        assert msa(_send(port, message("adt_a01_admit.hl7")))[1] == "AA"
        found = client.get("/fhir/Patient", params={"identifier": "urn:oid:1.2.250.1.999.1.1|100001"})
        assert found.status_code == 200 and len(found.json()["entry"]) == 1


def test_serve_without_mllp_does_not_listen(settings: Settings) -> None:
    app = create_app(settings)
    with TestClient(app):
        assert app.state.mllp is None


@pytest.fixture
def data_dir(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FHIR_SERVER_DATA_DIR", str(settings.data_dir))
    return settings.data_dir


def test_errors_then_replay_once_the_cause_is_gone(settings: Settings, data_dir: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    app = create_app(settings.model_copy(update={"mllp": True, "mllp_port": 0}))
    with TestClient(app):
        port = app.state.mllp.bound_port
        assert msa(_send(port, message("adt_a28_add_person.hl7")))[1] == "AA"
        assert msa(_send(port, message("adt_a40_merge.hl7")))[1] == "AE"  # 200002 unknown
        assert msa(_send(port, message("bad_date.hl7")))[1] == "AE"
    assert cli.main(["hl7", "errors"]) == 0
    listed = capsys.readouterr()
    rows = [line.split("\t") for line in listed.out.splitlines()]
    assert [(r[0], r[2], r[4]) for r in rows] == [("2", "error", "A40-0001"), ("3", "error", "BAD-0002")]
    assert "no Patient has the identifier 200002" in rows[0][5]
    assert "2 messages in error or unsettled" in listed.err

    assert cli.main(["hl7", "replay", "2"]) == 1  # still no 200002
    assert "MSA|AE|A40-0001" in capsys.readouterr().out
    with TestClient(create_app(settings.model_copy(update={"mllp": True, "mllp_port": 0}))) as client:
        assert msa(_send(client.app.state.mllp.bound_port, message("adt_a28_add_person_2.hl7")))[1] == "AA"
    assert cli.main(["hl7", "replay", "2", "1"]) == 1  # 1 was applied: not replayed
    output = capsys.readouterr()
    assert "2: MSA|AA|A40-0001" in output.out and "1: already applied" in output.err
    assert cli.main(["hl7", "errors"]) == 0
    assert [line.split("\t")[4] for line in capsys.readouterr().out.splitlines()] == ["BAD-0002"]
    assert cli.main(["audit", "verify"]) == 0
    events = asyncio.run(_command_events(settings))
    assert [(e["agent"][0]["altId"], e["outcome"]) for e in events] == [
        ("fhir-server hl7 errors", "0"), ("fhir-server hl7 replay", "4"),
        ("fhir-server hl7 replay", "4"), ("fhir-server hl7 errors", "0")]


async def _command_events(settings: Settings) -> list[dict[str, Any]]:
    """The AuditEvents of commands, oldest first."""
    store = open_store(settings.audit_store_url, codec=body_codec(settings))
    await store.open()
    try:
        versions = (await store.history(HistoryQuery("AuditEvent", count=1000))).versions
    finally:
        await store.close()
    events = [orjson.loads(v.body) for v in reversed(versions) if v.body]
    return [e for e in events if e["agent"][0].get("altId", "").startswith("fhir-server ")]


def test_mllp_refuses_to_start_on_a_broken_mapping(data_dir: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, root)
    (root / "hl7v2/segments/PV1.json").write_text("{not json")
    monkeypatch.setattr("fhir_server.interop.hl7v2.load", lambda: load(root))
    assert cli.main(["mllp"]) == 2
    assert "PV1.json: not JSON" in capsys.readouterr().err


def _no_traceback(err: str) -> bool:
    """No traceback through the command (a log handler an earlier test left on its closed
    stderr may print "Logging error" ones of its own)."""
    return "fhir_server/cli.py" not in err


def _one_error(settings: Settings) -> None:
    """One message kept in error in the inbox (id 1), through the listener of `serve`."""
    app = create_app(settings.model_copy(update={"mllp": True, "mllp_port": 0}))
    with TestClient(app):
        assert msa(_send(app.state.mllp.bound_port, message("bad_date.hl7")))[1] == "AE"


def test_commands_refuse_a_sealed_inbox_with_encryption_off(settings: Settings, data_dir: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    _one_error(settings)
    before = (data_dir / INBOX).read_bytes()
    monkeypatch.setenv("FHIR_SERVER_ENCRYPTION", "false")
    # A clinical store of its own: the encrypted one would be refused first, for its index
    # layout record (tests/crypto/test_reindex_cli.py), before the inbox is reached.
    monkeypatch.setenv("FHIR_SERVER_STORE", f"sqlite:///{data_dir / 'plain.db'}")
    for command in (["hl7", "errors"], ["hl7", "replay", "1"]):
        assert cli.main(command) == 2
        err = capsys.readouterr().err
        assert "inbox" in err and "encryption is off" in err and _no_traceback(err)
    assert (data_dir / INBOX).read_bytes() == before


def test_replay_of_a_row_that_fails_to_open_says_so(settings: Settings, data_dir: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    _one_error(settings)
    with sqlite3.connect(data_dir / INBOX) as db:  # a changed ciphertext
        [raw] = db.execute("SELECT raw FROM message WHERE id = 1").fetchone()
        db.execute("UPDATE message SET raw = ? WHERE id = 1", (raw[:-1] + bytes([raw[-1] ^ 1]),))
    db.close()
    assert cli.main(["hl7", "replay", "1"]) == 1
    output = capsys.readouterr()
    assert "1: cannot be opened" in output.err and _no_traceback(output.err)
