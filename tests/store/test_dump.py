"""`Store.dump` and `Store.load` on every store: what a backup takes out and a restore puts
back is the same store, versions, history order and search index alike."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server.search import default_registry, extract, parse_query
from fhir_server.store.base import Delete, HistoryQuery, Store, Version, Write
from tests.builders import observation, patient
from fhir_server.store.bodies import opened
from fhir_server.store.sqlite import SqliteStore
from tests.store.conftest import dispose, migrated_double

pytestmark = pytest.mark.anyio


def _write(resource_type: str, id: str, resource: dict[str, Any]) -> Write:
    resource = {**resource, "resourceType": resource_type, "id": id}
    return Write(resource_type, id, resource, extract(resource))


async def _history(store: Store) -> list[Version]:
    return list((await store.history(HistoryQuery(count=1000))).versions)


async def _fresh(store: Store, tmp_path: Path) -> Store:
    """An empty store of the same kind as `store`, with the same data keys (a restore runs
    beside the data keys the backed-up store sealed with: they are never in a backup)."""
    codec = store.codec  # type: ignore[attr-defined]
    if isinstance(store, SqliteStore):
        other: Store = SqliteStore(tmp_path / "restored.db", codec=codec)
    else:
        other = await asyncio.to_thread(migrated_double, codec=codec)
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
