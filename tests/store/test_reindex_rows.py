"""A re-indexed store holds the very index rows (SQLite) or entry arrays (MongoDB) that the
same resources written fresh under the same settings get (store/index_layout.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from fhir_server.search import BlindIndex
from fhir_server.store import index_layout
from fhir_server.store.base import Delete, Store
from fhir_server.store.mongo import MongoStore, layout as mongo_layout
from fhir_server.store.sqlite import SqliteStore
from fhir_server.store.sqlite.index import TABLE_NAMES
from tests.store import search_model as m
from tests.store.conftest import encrypting
from tests.store.mongo_double import DoubleClient
from tests.store.test_index_layout import PATIENTS, REGISTRY, blind

pytestmark = pytest.mark.anyio

RESOURCES = [*PATIENTS,
    {"resourceType": "Observation", "id": "o1", "status": "final",
     "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
     "subject": {"reference": "Patient/p1"}, "performer": [{"reference": "Practitioner/d1"}],
     "effectiveDateTime": "2026-01-02T10:00:00Z",
     "valueQuantity": {"value": 120, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
     "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                    "valueQuantity": {"value": 80, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}]},
    {"resourceType": "Observation", "id": "o2", "status": "final",
     "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]},
     "subject": {"identifier": {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "2790512345678"}},
     "valueString": "high"},
    {"resourceType": "Location", "id": "l1", "name": "Clinique", "position": {"latitude": 48.85, "longitude": 2.35}},
    {"resourceType": "Practitioner", "id": "d1", "name": [{"family": "Moreau", "given": ["Anne"]}],
     "telecom": [{"system": "email", "value": "anne@example.org"}]},
    {"resourceType": "RelatedPerson", "id": "r1", "patient": {"reference": "Patient/p1"},
     "name": [{"family": "Dupont"}], "address": [{"city": "Lyon", "postalCode": "69001"}]},
]


def sqlite_rows(path: Path) -> set[tuple[Any, ...]]:
    """Every index row of a SQLite store, its parameter by name (pids differ store to store)."""
    conn = sqlite3.connect(path)
    try:
        names = dict(conn.execute("SELECT pid, rtype || '.' || code FROM search_param"))
        rows: set[tuple[Any, ...]] = set()
        for table in TABLE_NAMES:
            found = conn.execute(f"SELECT * FROM {table}")  # noqa: S608 - fixed names
            columns = [column[0] for column in found.description]
            rows |= {(table, *(names[v] if c == "pid" else v for c, v in zip(columns, row)))
                     for row in found}
        return rows
    finally:
        conn.close()


async def _mongo_arrays(store: MongoStore) -> dict[str, dict[str, Any]]:
    return {doc["_id"]: {k: v for k, v in doc.items() if k in mongo_layout.ARRAYS or k == "shard"}
            async for doc in store.resources.find({})}


async def _written(store: Store, *, then_deleted: bool) -> None:
    await store.open()
    await store.commit([m.write(r) for r in RESOURCES])
    await store.commit([m.write({**PATIENTS[1], "name": [{"family": "Durand-Petit"}]})])
    if then_deleted:
        await store.commit([m.write({"resourceType": "Patient", "id": "gone", "name": [{"family": "X"}]})])
        await store.commit([Delete("Patient", "gone", None)])


@pytest.mark.parametrize("before", [None, lambda: blind(protected=("Patient.family",)), lambda: blind(secret="k0")])
async def test_sqlite_rows_after_a_reindex_are_those_of_a_fresh_write(tmp_path: Path, before: Any) -> None:
    codec = encrypting(tmp_path)
    fresh = SqliteStore(tmp_path / "fresh.db", codec=codec, blind=blind())
    await _written(fresh, then_deleted=True)
    await fresh.close()
    old = SqliteStore(tmp_path / "old.db", codec=codec, blind=before() if before else None)
    await _written(old, then_deleted=True)
    await old.close()
    store = SqliteStore(tmp_path / "old.db", codec=codec, blind=blind(), index_check=False)
    await store.open()
    await index_layout.reindex(store, codec, REGISTRY, blind().layout())
    await store.close()
    assert sqlite_rows(tmp_path / "old.db") == sqlite_rows(tmp_path / "fresh.db")


@pytest.mark.parametrize("before", [None, lambda: blind(protected=("Patient.family",)), lambda: blind(secret="k0")])
async def test_mongodb_arrays_after_a_reindex_are_those_of_a_fresh_write(tmp_path: Path, before: Any) -> None:
    codec = encrypting(tmp_path)
    fresh = MongoStore(DoubleClient(), codec=codec, blind=blind())
    await fresh.migrate()
    await _written(fresh, then_deleted=True)
    client = DoubleClient()
    old = MongoStore(client, codec=codec, blind=before() if before else None)
    await old.migrate()
    await _written(old, then_deleted=True)
    store = MongoStore(client, codec=codec, blind=blind(), index_check=False)
    await store.open()
    await index_layout.reindex(store, codec, REGISTRY, blind().layout())
    assert await _mongo_arrays(store) == await _mongo_arrays(fresh)
