"""Group commit in the SQLite store: commits queued while a batch is written share the next
SQLite transaction, each in a savepoint. A commit rolled back to its savepoint may have
created search parameter ids; SQLite hands the same ids out again, so the store must forget
them (store/sqlite/index.py ParamIds).

A new resource's row is written once, `seq` (its current history row) included: the store
predicts the history row's `seq` (SQLite's AUTOINCREMENT rule) instead of inserting the row
and then updating it, one statement fewer per created resource (an AuditEvent each: a search
of 20 patients writes about 21)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
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


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "group.db")
    await opened.open()
    yield opened
    await opened.close()


async def _ids(store: SqliteStore, resource_type: str, criteria: list[tuple[str, str]]) -> list[str]:
    query, issues = parse_query(resource_type, criteria, default_registry())
    assert not issues
    page = await store.search(query)
    return [v.id for v in page.matches]


async def test_parameter_ids_of_a_rolled_back_commit_are_not_reused_wrongly(
    store: SqliteStore, tmp_path: Path
) -> None:
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


async def test_a_commit_that_crashes_fails_alone(store: SqliteStore) -> None:
    # A decimal too large for orjson raises TypeError while the body is written: a fault of
    # that commit only, not of the others written in the same batch.
    risk = {"resourceType": "RiskAssessment", "status": "final", "subject": {"reference": "Patient/p"},
            "prediction": [{"probabilityDecimal": 10 ** 30}]}
    commits = [store.commit([_write(patient(), f"p{n}")]) for n in range(4)]
    commits.insert(2, store.commit([_write(risk, "r")]))
    outcomes = await asyncio.gather(*commits, return_exceptions=True)
    assert isinstance(outcomes[2], TypeError)
    assert [isinstance(o, BaseException) for o in outcomes] == [False, False, True, False, False]
    for n in range(4):
        assert await store.read("Patient", f"p{n}") is not None
    assert await store.read("RiskAssessment", "r") is None


async def test_a_commit_cancelled_while_queued_is_never_written(store: SqliteStore) -> None:
    leader = asyncio.ensure_future(store.commit([_write(patient(), "first")]))
    await asyncio.sleep(0)  # the leader holds the lock; the next one queues
    queued = asyncio.ensure_future(store.commit([_write(patient(), "cancelled")]))
    await asyncio.sleep(0)
    queued.cancel()
    await leader
    with pytest.raises(asyncio.CancelledError):
        await queued
    await store.commit([_write(patient(), "later")])  # a new batch after the cancellation
    assert await store.read("Patient", "cancelled") is None
    assert await store.read("Patient", "later") is not None


async def test_a_commit_looks_up_each_parameter_once(store: SqliteStore,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the store's first commit no pid is cached: the writes of one commit (a batch of
    AuditEvents: thousands) share their look-ups instead of each asking the database again."""
    asked: list[tuple[str, str]] = []
    ensure = store.ids.ensure
    monkeypatch.setattr(store.ids, "ensure", lambda conn, rtype, code: asked.append((rtype, code))
                        or ensure(conn, rtype, code))
    await store.commit([_write(patient(family=f"F{n}"), f"p{n}") for n in range(20)])
    assert asked and len(asked) == len(set(asked))
    assert await _ids(store, "Patient", [("family", "F7")]) == ["p7"]


async def _on_writer(store: SqliteStore, sql: str) -> list[tuple[Any, ...]]:
    return await store._run(store._writer, lambda conn: conn.execute(sql).fetchall())


async def _misplaced(store: SqliteStore) -> list[tuple[Any, ...]]:
    """Resource rows whose `seq` is not their current version's history row."""
    return await _on_writer(store, "SELECT r.id FROM resource r LEFT JOIN history h ON h.seq = r.seq "
                                   "WHERE h.resource_pk IS NOT r.pk OR h.version IS NOT r.version")


async def test_creates_write_each_resource_row_once(store: SqliteStore) -> None:
    await store.commit([_write(patient(), "before")])
    statements: list[str] = []

    def trace(conn: sqlite3.Connection) -> None:
        conn.set_trace_callback(statements.append)

    await store._run(store._writer, trace)
    await store.commit([_write(patient(), f"p{n}") for n in range(5)])
    await store._run(store._writer, lambda conn: conn.set_trace_callback(None))
    assert [s for s in statements if s.startswith("UPDATE resource")] == []
    assert len([s for s in statements if s.startswith("INSERT INTO resource")]) == 5
    assert await _misplaced(store) == []
    assert [(await store.read("Patient", f"p{n}")).version for n in range(5)] == [1] * 5  # type: ignore[union-attr]


async def test_seq_stays_right_after_rollbacks_removals_and_updates(store: SqliteStore) -> None:
    await store.commit([_write(patient(), "a"), _write(patient(), "b")])
    # The newest history rows removed (as an erasure removes rows): AUTOINCREMENT never
    # gives their seq again, and neither does the prediction.
    await _on_writer(store, "DELETE FROM history WHERE seq = (SELECT max(seq) FROM history)")
    await _on_writer(store, "DELETE FROM resource WHERE id = 'b'")
    with pytest.raises(OperationFailed):  # a commit rolled back after its history rows
        await store.commit([_write(patient(), "c"), _write(patient(), "a", if_match=7)])
    # An update between two creates.
    await store.commit([_write(patient(), "d"), _write(patient(), "a"), _write(patient(), "e")])
    assert await _misplaced(store) == []
    assert await store.read("Patient", "c") is None
    assert [(await store.read("Patient", id)).version for id in ("a", "d", "e")] == [2, 1, 1]  # type: ignore[union-attr]


async def test_another_history_row_in_the_unit_is_pointed_past(store: SqliteStore) -> None:
    async with store.transaction() as unit:
        await unit.apply([_write(patient(), "first")])
        # As if another writer had inserted history rows inside this transaction: the
        # prediction is wrong, and the resource row is pointed at its real history row.
        await _on_writer(store, "UPDATE sqlite_sequence SET seq = seq + 10 WHERE name = 'history'")
        await unit.apply([_write(patient(), "second")])
    assert await _misplaced(store) == []
    assert (await store.read("Patient", "second")).version == 1  # type: ignore[union-attr]
