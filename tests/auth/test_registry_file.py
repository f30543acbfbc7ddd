"""The registry file holds password hashes and TOTP keys: readable by its owner only."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from fhir_server.auth.registry import Registry
from fhir_server.auth.users import Users


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_registry_and_its_wal_files_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        registry = Registry(tmp_path / "auth.db")
        Users(registry).add("alice", "correct horse battery staple", "Patient/p1")
    finally:
        os.umask(old)
    files = [tmp_path / name for name in ("auth.db", "auth.db-wal", "auth.db-shm")]
    assert all(f.exists() for f in files)
    assert [_mode(f) for f in files] == [0o600] * 3


def test_a_registry_made_readable_by_an_older_version_is_narrowed(tmp_path: Path) -> None:
    Registry(tmp_path / "auth.db").add_backend_client("site", "system/Patient.rs",
                                                      jwks={"keys": []})
    for name in ("auth.db", "auth.db-wal", "auth.db-shm"):
        os.chmod(tmp_path / name, 0o644)
    Registry(tmp_path / "auth.db").client("site")
    assert {_mode(tmp_path / n) for n in ("auth.db", "auth.db-wal", "auth.db-shm")} == {0o600}
