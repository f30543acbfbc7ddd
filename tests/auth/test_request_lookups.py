"""A request with a token asks the registry once: whether the token is revoked and what
its client is registered with, together (a trip through SQLite is a cost of every request,
docs/performance.md, "Fifteenth session")."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.auth.registry import Registry


def test_standing_is_the_revocation_and_the_client(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "auth.db")
    site = registry.add_backend_client("site", "system/Patient.rs", jwks={"keys": []},
                                       acts_for=("CareTeam/c1",))
    registry.add_app("app", "patient/*.rs", ["https://app.example/cb"], secret="s3cret")
    assert registry.standing("t1", "site") == (False, site)
    assert registry.standing("t1", "app") == (False, registry.client("app"))
    assert registry.standing("t1", "nobody") == (False, None)
    registry.revoke("t1", 2e9)
    assert registry.standing("t1", "site") == (True, site)
    assert registry.standing("t1", "nobody") == (True, None)
    assert registry.standing("t2", "site") == (False, site)


class _Counting:
    """A registry connection that counts the statements run through it."""

    def __init__(self, conn: sqlite3.Connection, counted: list[str]) -> None:
        self._conn = conn
        self._counted = counted

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._counted.append(sql)
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def test_a_request_with_a_token_asks_the_registry_once(client: TestClient,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    id = client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
    counted: list[str] = []
    connection = Registry._conn
    monkeypatch.setattr(Registry, "_conn", lambda self: _Counting(connection(self), counted))
    assert client.get(f"/fhir/Patient/{id}").status_code == 200
    assert len(counted) == 1
