"""The Store contract (store/base.py), run against every store.

Versions, history, unit-of-work atomicity, conditional operations inside the transaction,
and races between concurrent writers.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from fhir_server import clock
from fhir_server.model.errors import FhirError, Kind
from fhir_server.search import default_registry, extract, parse_query
from fhir_server.store.base import (
    ConditionalCreate,
    ConditionalDelete,
    ConditionalUpdate,
    Delete,
    HistoryQuery,
    OperationFailed,
    Store,
    Write,
)
from tests.builders import INS_NIR, identified_patient, patient

pytestmark = pytest.mark.anyio


def _write(id: str, resource: dict[str, Any], **options: Any) -> Write:
    resource = {**resource, "id": id}
    return Write("Patient", id, resource, extract(resource), **options)


def _query(criteria: list[tuple[str, str]]) -> Any:
    query, issues = parse_query("Patient", criteria, default_registry())
    assert not issues
    return query


async def test_write_read_vread(store: Store) -> None:
    [first] = await store.commit([_write("a", patient())])
    assert first.outcome == "created"
    assert first.version is not None and first.version.version == 1
    [second] = await store.commit([_write("a", patient(gender="male"))])
    assert second.outcome == "updated"
    current = await store.read("Patient", "a")
    assert current is not None and current.version == 2
    assert current.body is not None and b'"male"' in current.body
    old = await store.vread("Patient", "a", 1)
    assert old is not None and old.body is not None and b'"female"' in old.body
    assert await store.vread("Patient", "a", 3) is None
    assert await store.read("Patient", "zzz") is None


async def test_stamps_meta(store: Store) -> None:
    [result] = await store.commit([_write("m", patient(meta={"versionId": "7"}))])
    assert result.version is not None and result.version.body is not None
    assert b'"versionId":"1"' in result.version.body
    assert result.version.last_updated.encode() in result.version.body


async def test_delete_is_a_version_and_idempotent(store: Store) -> None:
    await store.commit([_write("d", patient())])
    [deleted] = await store.commit([Delete("Patient", "d")])
    assert deleted.outcome == "deleted"
    current = await store.read("Patient", "d")
    assert current is not None and current.deleted and current.version == 2
    [again] = await store.commit([Delete("Patient", "d")])
    assert again.outcome == "none"
    [never] = await store.commit([Delete("Patient", "never")])
    assert never.outcome == "none"


async def test_if_match_and_create_only(store: Store) -> None:
    await store.commit([_write("v", patient())])
    with pytest.raises(FhirError) as stale:
        await store.commit([_write("v", patient(), if_match=5)])
    assert stale.value.kind is Kind.PRECONDITION_FAILED
    with pytest.raises(FhirError) as taken:
        await store.commit([_write("v", patient(), create_only=True)])
    assert taken.value.kind is Kind.CONFLICT


async def test_unit_of_work_is_all_or_nothing(store: Store) -> None:
    await store.commit([_write("keep", patient())])
    with pytest.raises(FhirError):
        await store.commit([_write("new1", patient()), _write("keep", patient(), if_match=9)])
    assert await store.read("Patient", "new1") is None
    page = await store.history(HistoryQuery("Patient"))
    assert [v.id for v in page.versions] == ["keep"]


async def test_a_unit_names_the_operation_that_failed(store: Store) -> None:
    await store.commit([_write("named", patient())])
    operations = [_write("n1", patient()), _write("n2", patient()), _write("named", patient(), if_match=9)]
    with pytest.raises(OperationFailed) as in_unit:
        async with store.transaction() as unit:
            await unit.apply(operations)
    with pytest.raises(OperationFailed) as in_commit:
        await store.commit(operations)
    for failed in (in_unit.value, in_commit.value):
        assert failed.index == 2
        assert failed.kind is Kind.PRECONDITION_FAILED
    assert await store.read("Patient", "n1") is None


async def test_concurrent_commits_succeed_or_fail_each_on_its_own(store: Store) -> None:
    # The SQLite store writes commits that queue up together (group commit, savepoints):
    # one failing must leave the others of its batch stored, and leave nothing of its own.
    await store.commit([_write("held", patient())])
    commits = [[_write(f"g{n}", patient())] for n in range(6)]
    commits[3] = [_write("lost", patient()), _write("held", patient(), if_match=9)]
    outcomes = await asyncio.gather(*(store.commit(c) for c in commits), return_exceptions=True)
    failed = outcomes[3]
    assert isinstance(failed, OperationFailed) and failed.index == 1
    assert failed.kind is Kind.PRECONDITION_FAILED
    for n in (0, 1, 2, 4, 5):
        [result] = outcomes[n]  # type: ignore[misc]
        assert result.outcome == "created"
        assert await store.read("Patient", f"g{n}") is not None
    assert await store.read("Patient", "lost") is None
    held = await store.read("Patient", "held")
    assert held is not None and held.version == 1


async def test_history_levels_order_and_cursor(store: Store) -> None:
    for id in ("h1", "h2", "h3"):
        await store.commit([_write(id, patient())])
    await store.commit([Delete("Patient", "h1")])
    page = await store.history(HistoryQuery("Patient", count=2))
    assert [(v.id, v.version) for v in page.versions] == [("h1", 2), ("h3", 1)]
    assert page.next_seq is not None
    rest = await store.history(HistoryQuery("Patient", count=2, before_seq=page.next_seq))
    assert [(v.id, v.version) for v in rest.versions] == [("h2", 1), ("h1", 1)]
    assert rest.next_seq is None
    instance = await store.history(HistoryQuery("Patient", "h1"))
    assert [v.method for v in instance.versions] == ["DELETE", "PUT"]
    # A `_since` answer may hold back versions younger than the store's settle window
    # (MongoDB, docs/storage.md): ask a minute later.
    with clock.frozen(clock.now() + timedelta(minutes=1)):
        since = await store.history(HistoryQuery(since=page.versions[0].last_updated))
    assert [v.id for v in since.versions] == ["h1"]


async def test_conditional_create(store: Store) -> None:
    query = _query([("identifier", f"{INS_NIR}|1")])
    [created] = await store.commit([ConditionalCreate(query, _write("c1", identified_patient("1")))])
    assert created.outcome == "created"
    [matched] = await store.commit([ConditionalCreate(query, _write("c2", identified_patient("1")))])
    assert matched.outcome == "matched"
    assert matched.version is not None and matched.version.id == "c1"
    assert await store.read("Patient", "c2") is None
    await store.commit([_write("c3", identified_patient("1"))])
    with pytest.raises(FhirError) as ambiguous:
        await store.commit([ConditionalCreate(query, _write("c4", identified_patient("1")))])
    assert ambiguous.value.kind is Kind.PRECONDITION_FAILED


async def test_a_unit_sees_the_index_of_its_own_earlier_writes(store: Store) -> None:
    """The index rows of a unit's writes are inserted together (SQLite: one statement per
    table), yet every operation of the unit sees those of the writes before it: a condition
    matches them, a rewrite replaces them, a deletion removes them."""
    first = _query([("identifier", f"{INS_NIR}|u1")])
    results = await store.commit([
        _write("u1", identified_patient("u1")),
        ConditionalCreate(first, _write("u1-twin", identified_patient("u1"))),
        _write("u2", identified_patient("u2")), _write("u2", identified_patient("u3")),
        _write("u4", identified_patient("u4")), Delete("Patient", "u4")])
    assert [r.outcome for r in results] == ["created", "matched", "created", "updated", "created",
                                            "deleted"]
    async with store.transaction() as unit:
        await unit.apply([_write("u5", identified_patient("u5"))])
        assert await unit.match_ids(_query([("identifier", f"{INS_NIR}|u5")])) == ["u5"]

    async def ids(value: str) -> list[str]:
        return [v.id for v in (await store.search(_query([("identifier", f"{INS_NIR}|{value}")]))).matches]

    assert await ids("u1") == ["u1"]
    assert await ids("u2") == []
    assert await ids("u3") == ["u2"]
    assert await ids("u4") == []
    assert await ids("u5") == ["u5"]


async def test_racing_conditional_creates(store: Store) -> None:
    query = _query([("identifier", f"{INS_NIR}|race")])
    ops = [ConditionalCreate(query, _write(f"r{n}", identified_patient("race"))) for n in range(10)]
    results = await asyncio.gather(*(store.commit([op]) for op in ops))
    outcomes = sorted(r[0].outcome for r in results)
    assert outcomes == ["created"] + ["matched"] * 9


async def test_conditional_update(store: Store) -> None:
    query = _query([("identifier", f"{INS_NIR}|2")])
    [created] = await store.commit([ConditionalUpdate(query, _write("u1", identified_patient("2")), False)])
    assert created.outcome == "created"
    [updated] = await store.commit([ConditionalUpdate(query, _write("ignored", identified_patient("2")), False)])
    assert updated.outcome == "updated"
    assert updated.version is not None and updated.version.id == "u1"
    with pytest.raises(FhirError) as mismatch:
        await store.commit([ConditionalUpdate(query, _write("other", identified_patient("2")), True)])
    assert mismatch.value.kind is Kind.INVALID


async def test_conditional_delete(store: Store) -> None:
    for id in ("x1", "x2"):
        await store.commit([_write(id, identified_patient("3"))])
    query = _query([("identifier", f"{INS_NIR}|3")])
    with pytest.raises(FhirError):
        await store.commit([ConditionalDelete(query, multiple=False)])
    [deleted] = await store.commit([ConditionalDelete(query, multiple=True)])
    assert sorted(v.id for v in deleted.versions) == ["x1", "x2"]
    [none] = await store.commit([ConditionalDelete(query, multiple=False)])
    assert none.outcome == "none"


async def test_racing_version_aware_updates(store: Store) -> None:
    await store.commit([_write("w", patient())])

    async def attempt() -> str:
        try:
            await store.commit([_write("w", patient(gender="male"), if_match=1)])
        except FhirError as exc:
            return exc.kind.value
        return "ok"

    outcomes = await asyncio.gather(*(attempt() for _ in range(6)))
    assert sorted(outcomes) == ["ok"] + ["precondition-failed"] * 5


async def test_count_and_check(store: Store) -> None:
    await store.check()
    await store.commit([_write("n1", patient()), _write("n2", patient())])
    await store.commit([Delete("Patient", "n2")])
    assert await store.count("Patient") == 1
