"""The MongoDB store's conditional erasure (store/mongo/erase.py): one multi-document
transaction that bumps the compartment's fence first, which every unit putting a resource
in the compartment (creating it, or updating it into it) bumps too, so that MongoDB's write conflicts order such a unit before the
erasure's check or after its commit. The double runs transactions one at a time, so these
tests check what each side sends; a write conflict is injected as a server would raise it.
The window between the erasure's survey (outside the transaction) and its transaction is
run for real: writes are committed in it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pymongo.errors import OperationFailure

from fhir_server import clock
from fhir_server.search import default_registry
from fhir_server.services.erase import compartment
from fhir_server.store.base import Delete, HistoryQuery
from fhir_server.store.mongo import MongoStore
from fhir_server.store.mongo import erase as mongo_erase
from tests.builders import observation
from tests.store.conftest import encrypting, migrated_double
from tests.store.mongo_double import Call, DoubleClient
from tests.store.test_erase import _seed, _write

pytestmark = pytest.mark.anyio
FENCE = "compartment/Patient/a"


@pytest.fixture
def store(tmp_path: Path) -> MongoStore:
    return migrated_double(DoubleClient(), codec=encrypting(tmp_path))


def _double(store: MongoStore) -> DoubleClient:
    assert isinstance(store.client, DoubleClient)
    return store.client


def _bumps(calls: list[Call]) -> list[Call]:
    return [c for c in calls if c.collection == "ids" and c.method == "bulk_write"]


async def test_a_unit_creating_a_resource_in_a_compartment_bumps_its_fence(store: MongoStore) -> None:
    await _seed(store)
    calls = _double(store).calls
    calls.clear()
    await store.commit([_write("Observation", "new", observation("Patient/a"))])
    assert [c.in_transaction for c in _bumps(calls)] == [True]  # with the new resource's guard
    assert (await store.guards.find_one({"_id": FENCE}) or {}).get("writes", 0) >= 1
    before = await store.guards.find_one({"_id": FENCE})
    calls.clear()  # an update of a member conflicts with the erasure's delete of it: no bump
    await store.commit([_write("Observation", "new", observation("Patient/a", 71))])
    assert _bumps(calls) == [] and await store.guards.find_one({"_id": FENCE}) == before


async def test_a_conditional_erasure_surveys_then_runs_one_transaction_that_bumps_the_fence_first(
        store: MongoStore) -> None:
    """The scan for deleted members (every deleted resource of the compartment's types) runs
    in the survey, before the transaction, which its time bound does not hold; the survey
    reads the fence before anything else."""
    await _seed(store)
    double = _double(store)
    double.calls.clear()
    erased = await store.erase(compartment(default_registry(), "a"), ("Patient", "a"), clock.now())
    assert erased.resources == {"Patient": 1, "Observation": 3}
    outside = [c for c in double.calls if not c.in_transaction]
    inside = double.calls[len(outside):]
    assert outside and inside and all(c.in_transaction for c in inside)
    assert (outside[0].collection, outside[0].method) == ("ids", "find_one")
    assert (inside[0].collection, inside[0].method) == ("ids", "find_one_and_update")
    scans = [c for c in double.calls if c.collection == "resources" and (c.filter or {}).get("deleted")]
    assert len(scans) == 1 and not scans[0].in_transaction
    assert await store.guards.find_one({"_id": FENCE}) is None  # no trace of the patient left
    double.calls.clear()
    await store.erase(compartment(default_registry(), "b"), ("Patient", "b"))  # `$erase`
    assert not [c for c in double.calls if c.in_transaction]


async def test_a_conditional_erasure_that_loses_a_write_conflict_runs_again(store: MongoStore) -> None:
    """The conflict a concurrent unit's fence bump raises: the erasure is rolled back and run
    again from its start (fence, check, removal), so its check sees what that unit committed."""
    await _seed(store)
    since = clock.now()
    double = _double(store)
    double.fail("commit_transaction", OperationFailure(
        "WriteConflict", 112, {"codeName": "WriteConflict", "errorLabels": ["TransientTransactionError"]}))
    started = len(double.transaction_options)
    erased = await store.erase(compartment(default_registry(), "a"), ("Patient", "a"), since)
    assert len(double.transaction_options) == started + 2
    assert erased.resources == {"Patient": 1, "Observation": 3}
    assert await store.read("Patient", "a") is None


async def test_an_update_that_makes_a_resource_a_member_bumps_its_fence(store: MongoStore) -> None:
    """An Observation whose `focus` is a (it lives with a's data, in no compartment) made
    about a: same shard, no guard, yet a's erasure must conflict with it. Leaving the
    compartment or being deleted conflicts with the erasure's delete of the member instead."""
    await _seed(store)
    await store.commit([_write("Observation", "near", observation(
        "Group/g", focus=[{"reference": "Patient/a"}]))])
    before = (await store.guards.find_one({"_id": FENCE}) or {}).get("writes", 0)
    calls = _double(store).calls
    calls.clear()
    await store.commit([_write("Observation", "near", observation("Patient/a"))])
    assert [c.in_transaction for c in _bumps(calls)] == [True]
    assert (await store.guards.find_one({"_id": FENCE}) or {})["writes"] == before + 1
    calls.clear()
    await store.commit([_write("Observation", "near", observation(  # leaves
        "Group/g", focus=[{"reference": "Patient/a"}]))])
    await store.commit([Delete("Observation", "a0")])
    assert _bumps(calls) == []


def _after_survey(monkeypatch: pytest.MonkeyPatch, meanwhile: Callable[[], Awaitable[object]]) -> list[int]:
    """Run `meanwhile` between the erasure's first survey and its transaction; the surveys
    made are counted in the list returned."""
    surveys: list[int] = []
    survey = mongo_erase.survey

    async def surveyed(*args: Any) -> mongo_erase.Survey:
        found = await survey(*args)
        surveys.append(1)
        if len(surveys) == 1:
            await meanwhile()
        return found

    monkeypatch.setattr(mongo_erase, "survey", surveyed)
    return surveys


async def _gone(store: MongoStore, resource_type: str, id: str) -> bool:
    """Nothing of the resource left: document (a deletion's too), guard, any version."""
    key = f"{resource_type}/{id}"
    return (await store.resources.find_one({"_id": key}) is None
            and await store.guards.find_one({"_id": key}) is None
            and await store.history_docs.find_one({"type": resource_type, "id": id}) is None)


async def test_a_member_deleted_after_the_survey_is_erased_whole(
        store: MongoStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A current member in the survey, deleted before the transaction: the transaction finds
    it deleted, its last body a member, and removes its deletion too."""
    await _seed(store)
    since = clock.now()
    surveys = _after_survey(monkeypatch, lambda: store.commit([Delete("Observation", "a0")]))
    erased = await store.erase(compartment(default_registry(), "a"), ("Patient", "a"), since)
    assert surveys == [1] and erased.resources == {"Patient": 1, "Observation": 3}
    assert await _gone(store, "Observation", "a0")


async def test_a_resource_joining_after_the_survey_makes_the_erasure_survey_again(
        store: MongoStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Created in the compartment and deleted between the survey and the transaction: no
    scan saw it, but its creation bumped the fence, so the erasure runs again from a new
    survey, which finds it deleted (its deletion would be left behind otherwise)."""
    await _seed(store)
    since = clock.now()

    async def meanwhile() -> None:
        await store.commit([_write("Observation", "brief", observation("Patient/a"))])
        await store.commit([Delete("Observation", "brief")])

    surveys = _after_survey(monkeypatch, meanwhile)
    erased = await store.erase(compartment(default_registry(), "a"), ("Patient", "a"), since)
    assert surveys == [1, 1] and erased.resources == {"Patient": 1, "Observation": 4}
    assert await _gone(store, "Observation", "brief")


async def test_a_deleted_member_written_again_elsewhere_after_the_survey_is_kept(
        store: MongoStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """a2, deleted (a member) in the survey, then written again about b: no longer deleted
    as surveyed, no member, it stays; its versions about a go (sealed under a's keys), its
    deletion (no body) stays."""
    await _seed(store)
    since = clock.now()
    surveys = _after_survey(monkeypatch, lambda: store.commit(
        [_write("Observation", "a2", observation("Patient/b"))]))
    erased = await store.erase(compartment(default_registry(), "a"), ("Patient", "a"), since)
    assert surveys == [1] and erased.resources == {"Patient": 1, "Observation": 2}
    kept = await store.read("Observation", "a2")
    assert kept is not None and b"Patient/b" in (kept.body or b"")
    history = (await store.history(HistoryQuery("Observation", "a2"))).versions
    assert [(v.version, v.body is None) for v in history] == [(4, False), (3, True)]  # 3: deletion
