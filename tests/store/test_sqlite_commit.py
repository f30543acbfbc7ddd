"""Group commit in the SQLite store: commits queued while a batch is written share the next
SQLite transaction, each in a savepoint. A commit rolled back to its savepoint may have
created search parameter ids; SQLite hands the same ids out again, so the store must forget
them (store/sqlite_index.py ParamIds)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from fhir_server.search import default_registry, extract, parse_query
from fhir_server.store.base import OperationFailed, Write
from fhir_server.store.sqlite import SqliteStore
from tests.builders import organization, patient

pytestmark = pytest.mark.anyio


def _write(resource: dict[str, Any], id: str, **options: Any) -> Write:
    resource = {**resource, "id": id}
    return Write(resource["resourceType"], id, resource, extract(resource), **options)


async def _ids(store: SqliteStore, resource_type: str, criteria: list[tuple[str, str]]) -> list[str]:
    query, issues = parse_query(resource_type, criteria, default_registry())
    assert not issues
    page = await store.search(query)
    return [v.id for v in page.matches]


async def test_parameter_ids_of_a_rolled_back_commit_are_not_reused_wrongly(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "group.db")
    await store.open()
    try:
        await store.commit([_write(patient(), "held")])
        first = store.commit([_write(patient(), "alone")])  # takes the lock: the rest queue
        # Indexes Organization (new parameters, new pids), then fails: rolled back.
        failing = store.commit([_write(organization(name="Gone"), "o1"),
                                _write(patient(), "held", if_match=9)])
        # Indexes a Location next, in the same batch: SQLite gives it the freed pids.
        location = {"resourceType": "Location", "name": "Bordeaux", "status": "active"}
        later = store.commit([_write(location, "l1")])
        outcomes = await asyncio.gather(first, failing, later, return_exceptions=True)
        assert isinstance(outcomes[1], OperationFailed)
        assert not isinstance(outcomes[2], BaseException)
        await store.commit([_write(organization(name="Kept"), "o2")])
        assert await _ids(store, "Organization", [("name", "Kept")]) == ["o2"]
        assert await _ids(store, "Organization", [("name", "Bordeaux")]) == []
        assert await _ids(store, "Location", [("name", "Bordeaux")]) == ["l1"]
        assert await _ids(store, "Location", [("name", "Kept")]) == []
        assert await store.read("Organization", "o1") is None
        # Every parameter id the store uses is the one the database holds for its name.
        with sqlite3.connect(tmp_path / "group.db") as conn:
            stored = {(rtype, code): pid for pid, rtype, code in conn.execute("SELECT * FROM search_param")}
            for key in [("Organization", "name"), ("Location", "name"), ("Patient", "family")]:
                assert store.ids.get(conn, *key) == stored[key], key
        conn.close()
    finally:
        await store.close()
