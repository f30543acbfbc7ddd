"""`Store.dump` and `Store.load` on every store: what a backup takes out and a restore puts
back is the same store, versions, history order and search index alike."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server.search import default_registry, extract, parse_query
from fhir_server.store.base import Delete, HistoryQuery, Store, Version, Write
from tests.builders import observation, patient
from fhir_server.store.bodies import opened
from fhir_server.store.sqlite import SqliteStore
from fhir_server.store.sqlite.index import LOOKUPS
from tests.crypto.test_blind_at_rest import IDENTIFIER, index_rows, leaks, write_update_search
from tests.crypto.test_blind_search import blind_store
from tests.store import search_model as m
from tests.store.conftest import DOUBLE, dispose, migrated_double

pytestmark = pytest.mark.anyio


def _write(resource_type: str, id: str, resource: dict[str, Any]) -> Write:
    resource = {**resource, "resourceType": resource_type, "id": id}
    return Write(resource_type, id, resource, extract(resource))


async def _history(store: Store) -> list[Version]:
    return list((await store.history(HistoryQuery(count=1000))).versions)


async def _fresh(store: Store, tmp_path: Path) -> Store:
    """An empty store of the same kind as `store`, with the same data keys (a restore runs
    beside the data keys the backed-up store sealed with: they are never in a backup) and
    the same blind indexes."""
    codec, blind = store.codec, store.blind  # type: ignore[attr-defined]
    if isinstance(store, SqliteStore):
        other: Store = SqliteStore(tmp_path / "restored.db", codec=codec, blind=blind)
    else:
        other = await asyncio.to_thread(migrated_double, codec=codec, blind=blind)
    await other.open()
    return other


def _entries(store: Store, version: Version) -> list[Any]:
    if version.body is None:
        return []
    return extract(orjson.loads(opened(store.codec, version).body or b""))  # type: ignore[attr-defined]


async def test_dump_and_load_give_the_same_store(store: Store, tmp_path: Path) -> None:
    for n in range(5):
        await store.commit([_write("Patient", f"p{n}", patient(family=f"Name{n}"))])
        await store.commit([_write("Observation", f"o{n}", observation(f"Patient/p{n}"))])
    await store.commit([_write("Patient", "p1", patient(family="Renamed"))])
    await store.commit([Delete("Observation", "o2")])
    dumped = [v async for batch in store.dump(count=3) for v in batch]
    assert len(dumped) == 12
    assert all(v.body is None or v.body[:1] != b"{" for v in dumped)  # as stored: sealed
    assert [v.last_updated for v in dumped] == sorted(v.last_updated for v in dumped)
    target = await _fresh(store, tmp_path)
    try:
        for start in range(0, len(dumped), 4):
            await target.load([(v, _entries(store, v)) for v in dumped[start:start + 4]])
        await target.loaded()
        assert await _history(target) == await _history(store)
        for query in ([("family", "Renamed")], [("family", "Name1")]):
            parsed, _ = parse_query("Patient", query, default_registry())
            assert ([v.id for v in (await target.search(parsed)).matches]
                    == [v.id for v in (await store.search(parsed)).matches])
        parsed, _ = parse_query("Observation", [("subject", "Patient/p3")], default_registry())
        assert [v.id for v in (await target.search(parsed)).matches] == ["o3"]
        assert await target.count("Observation") == 4
        current = await target.read("Observation", "o2")
        assert current is not None and current.deleted
    finally:
        await dispose(target)


@pytest.mark.parametrize("kind", ["sqlite", DOUBLE])
async def test_load_indexes_protected_parameters_blind(kind: str, tmp_path: Path) -> None:
    """A restore rebuilds the index as a write does: protected parameters as digests only,
    so the restored patient is found by name prefix and identifier, and no index row holds
    the protected values."""
    source = await asyncio.to_thread(blind_store, kind, tmp_path)
    await source.open()
    target = await _fresh(source, tmp_path)
    try:
        await write_update_search(source)
        dumped = [v async for batch in source.dump(count=10) for v in batch]
        await target.load([(v, _entries(source, v)) for v in dumped])
        await target.loaded()
        for params in ([("family", "zqxm")], [("identifier", IDENTIFIER)]):
            page = await target.search(m.query("Patient", *params))
            assert [v.id for v in page.matches] == ["marked"], params
        if isinstance(target, SqliteStore):
            raw = index_rows(target.path)
        else:
            raw = b"".join([repr(doc).encode() async for doc in target.resources.find({})])  # type: ignore[attr-defined]
        assert raw and leaks(raw) == []
    finally:
        await dispose(source)
        await dispose(target)


def _lookups(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
                if row[0] in LOOKUPS}


async def test_a_restore_builds_the_lookups_once_at_its_end(tmp_path: Path) -> None:
    """Into an empty SQLite store, `load` leaves the value lookups out (a B-tree built once
    is far cheaper than a random insert per row) and `loaded` builds them; a restore cut
    short before `loaded` gets them back at the next open. Searches answer the same."""
    source = SqliteStore(tmp_path / "source.db")
    await source.open()
    for n in range(3):
        await source.commit([_write("Patient", f"p{n}", patient(family=f"Name{n}"))])
        await source.commit([_write("Observation", f"o{n}", observation(f"Patient/p{n}"))])
    dumped = [v async for batch in source.dump() for v in batch]
    target = SqliteStore(tmp_path / "target.db")
    await target.open()
    try:
        await target.load([(v, _entries(source, v)) for v in dumped[:2]])
        assert _lookups(target.path) == set()
        await target.load([(v, _entries(source, v)) for v in dumped[2:]])
        assert _lookups(target.path) == set()  # the store was not empty: nothing dropped again
        await target.close()
        target = SqliteStore(tmp_path / "target.db")
        await target.open()  # as after a restore cut short
        assert _lookups(target.path) == set(LOOKUPS)
        await target.loaded()
        assert _lookups(target.path) == set(LOOKUPS)
        for rtype, params in (("Patient", [("family", "Name1")]), ("Observation", [("subject", "Patient/p2")])):
            parsed, _ = parse_query(rtype, params, default_registry())
            assert ([v.id for v in (await target.search(parsed)).matches]
                    == [v.id for v in (await source.search(parsed)).matches] != [])
    finally:
        await dispose(source)
        await dispose(target)


async def test_loaded_builds_the_lookups_a_load_left_out(tmp_path: Path) -> None:
    source = SqliteStore(tmp_path / "source.db")
    await source.open()
    await source.commit([_write("Patient", "p", patient(family="Solo"))])
    target = SqliteStore(tmp_path / "target.db")
    await target.open()
    try:
        await target.load([(v, _entries(source, v)) async for batch in source.dump() for v in batch])
        assert _lookups(target.path) == set()
        await target.loaded()
        assert _lookups(target.path) == set(LOOKUPS)
        parsed, _ = parse_query("Patient", [("family", "sol")], default_registry())
        assert [v.id for v in (await target.search(parsed)).matches] == ["p"]
    finally:
        await dispose(source)
        await dispose(target)
