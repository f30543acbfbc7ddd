"""A new resource's row is written once, `seq` (its current history row) included: the store
predicts the history row's `seq` (SQLite's AUTOINCREMENT rule) instead of inserting the row
and then updating it, one statement fewer per created resource (an AuditEvent each: a search
of 20 patients writes about 21)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fhir_server.search import extract
from fhir_server.store.base import OperationFailed, Write
from fhir_server.store.sqlite import SqliteStore
from tests.builders import patient

pytestmark = pytest.mark.anyio


def _write(id: str, **options: Any) -> Write:
    resource = {**patient(), "id": id}
    return Write("Patient", id, resource, extract(resource), **options)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "seq.db")
    await opened.open()
    yield opened
    await opened.close()


async def _on_writer(store: SqliteStore, sql: str) -> list[tuple[Any, ...]]:
    return await store._run(store._writer, lambda conn: conn.execute(sql).fetchall())


async def _misplaced(store: SqliteStore) -> list[tuple[Any, ...]]:
    """Resource rows whose `seq` is not their current version's history row."""
    return await _on_writer(store, "SELECT r.id FROM resource r LEFT JOIN history h ON h.seq = r.seq "
                                   "WHERE h.resource_pk IS NOT r.pk OR h.version IS NOT r.version")


async def test_creates_write_each_resource_row_once(store: SqliteStore) -> None:
    await store.commit([_write("before")])
    statements: list[str] = []

    def trace(conn: sqlite3.Connection) -> None:
        conn.set_trace_callback(statements.append)

    await store._run(store._writer, trace)
    await store.commit([_write(f"p{n}") for n in range(5)])
    await store._run(store._writer, lambda conn: conn.set_trace_callback(None))
    assert [s for s in statements if s.startswith("UPDATE resource")] == []
    assert len([s for s in statements if s.startswith("INSERT INTO resource")]) == 5
    assert await _misplaced(store) == []
    assert [(await store.read("Patient", f"p{n}")).version for n in range(5)] == [1] * 5  # type: ignore[union-attr]


async def test_seq_stays_right_after_rollbacks_removals_and_updates(store: SqliteStore) -> None:
    await store.commit([_write("a"), _write("b")])
    # The newest history rows removed (as an erasure removes rows): AUTOINCREMENT never
    # gives their seq again, and neither does the prediction.
    await _on_writer(store, "DELETE FROM history WHERE seq = (SELECT max(seq) FROM history)")
    await _on_writer(store, "DELETE FROM resource WHERE id = 'b'")
    with pytest.raises(OperationFailed):  # a commit rolled back after its history rows
        await store.commit([_write("c"), _write("a", if_match=7)])
    await store.commit([_write("d"), _write("a"), _write("e")])  # an update between creates
    assert await _misplaced(store) == []
    assert await store.read("Patient", "c") is None
    assert [(await store.read("Patient", id)).version for id in ("a", "d", "e")] == [2, 1, 1]  # type: ignore[union-attr]


async def test_another_history_row_in_the_unit_is_pointed_past(store: SqliteStore) -> None:
    async with store.transaction() as unit:
        await unit.apply([_write("first")])
        # As if another writer had inserted history rows inside this transaction: the
        # prediction is wrong, and the resource row is pointed at its real history row.
        await _on_writer(store, "UPDATE sqlite_sequence SET seq = seq + 10 WHERE name = 'history'")
        await unit.apply([_write("second")])
    assert await _misplaced(store) == []
    assert (await store.read("Patient", "second")).version == 1  # type: ignore[union-attr]
