"""Erasure on SQLite, checked in the file itself: no row of the erased resources in any
table, and none of their bytes in the database file or its WAL (secure_delete, the WAL
truncated after the erasure)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fhir_server.search import default_registry, extract
from fhir_server.services.erase import compartment
from fhir_server.store.base import Write
from fhir_server.store.sqlite import SqliteStore
from fhir_server.store.sqlite.index import TABLE_NAMES
from tests.builders import observation, patient

pytestmark = pytest.mark.anyio
MARKER = "Zwxqvtrudel"


def _write(resource_type: str, id: str, resource: dict[str, object]) -> Write:
    resource = {**resource, "resourceType": resource_type, "id": id}
    return Write(resource_type, id, resource, extract(resource))


async def test_no_row_and_no_byte_left(tmp_path: Path) -> None:
    path = tmp_path / "fhir.db"
    store = SqliteStore(path)
    await store.open()
    try:
        await store.commit([_write("Patient", "a", patient(family=MARKER))])
        await store.commit([_write("Patient", "a", patient(family=MARKER, gender="male"))])
        await store.commit([_write("Observation", "o", observation("Patient/a", note=[{"text": MARKER}]))])
        await store.commit([_write("Patient", "b", patient(family="Keep"))])
        pks = [row[0] for row in sqlite3.connect(path).execute(
            "SELECT pk FROM resource WHERE id IN ('a', 'o')")]
        await store.erase(compartment(default_registry(), "a"), ("Patient", "a"))
        db = sqlite3.connect(path)
        assert db.execute("SELECT count(*) FROM history WHERE id IN ('a', 'o')").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM resource WHERE id IN ('a', 'o')").fetchone()[0] == 0
        for table in TABLE_NAMES:
            marks = ",".join("?" * len(pks))
            assert db.execute(f"SELECT count(*) FROM {table} WHERE pk IN ({marks})", pks).fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM history WHERE id = 'b'").fetchone()[0] == 1
        db.close()
        wal = path.with_name("fhir.db-wal")
        assert not wal.exists() or wal.stat().st_size == 0
        for file in (path, wal):
            if file.exists():
                raw = file.read_bytes()
                assert MARKER.encode() not in raw and MARKER.lower().encode() not in raw
    finally:
        await store.close()
