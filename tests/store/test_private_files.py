"""Every SQLite file of the data directory is readable by its owner only, as auth.db is
(tests/auth/test_registry_file.py): clinical data, the audit trail and its chain, confirmation
codes."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fhir_server.access.codes import ConfirmationCodes
from fhir_server.app import create_app
from fhir_server.private_files import make_private
from fhir_server.settings import Settings
from fhir_server.store.sqlite.store import SqliteStore
from tests.builders import patient


def _modes(directory: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()
            if ".db" in p.name and not p.name.endswith(".writer")}


def test_the_data_directory_databases_are_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = os.umask(0o022)
    try:
        settings = Settings(data_dir=tmp_path, base_url="http://testserver/fhir", auth="off")
        with TestClient(create_app(settings)) as client:
            assert client.post("/fhir/Patient", json=patient()).status_code == 201
            ConfirmationCodes(tmp_path / "consent-codes.db").pending("Practitioner/d", "Patient/p")
            modes = _modes(tmp_path)
    finally:
        os.umask(old)
    for name in ("fhir.db", "audit.db", "audit-chain.db", "consent-codes.db", "fhir.db-wal", "audit.db-wal"):
        assert name in modes, sorted(modes)
    assert modes == dict.fromkeys(modes, 0o600)


def test_a_store_made_readable_by_an_older_version_is_narrowed(tmp_path: Path) -> None:
    path = tmp_path / "fhir.db"
    for name in ("fhir.db", "fhir.db-wal", "fhir.db-shm"):
        (tmp_path / name).touch(mode=0o644)
        os.chmod(tmp_path / name, 0o644)
    store = SqliteStore(path)
    store._connection()
    assert set(_modes(tmp_path).values()) == {0o600}


def test_making_an_open_database_private_keeps_the_process_locks(tmp_path: Path) -> None:
    """Closing any descriptor of a file drops the process's POSIX locks on it: make_private
    must not open a database this process already holds, or another process could write
    through a lock SQLite believes it holds (an audit record lost under a running server)."""
    path = tmp_path / "held.db"
    held = sqlite3.connect(path, isolation_level=None)
    held.execute("CREATE TABLE t (x)")
    held.execute("BEGIN EXCLUSIVE")
    make_private(path)
    other = subprocess.run(
        [sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], timeout=0);"
         " c.execute('BEGIN IMMEDIATE')", str(path)], capture_output=True, text=True)
    held.execute("ROLLBACK")
    held.close()
    assert other.returncode != 0 and "locked" in other.stderr
