"""The MongoDB store's conditional erasure (store/mongo/erase.py): one multi-document
transaction that bumps the compartment's fence first, which every unit putting a resource
in the compartment (creating it, or updating it into it) bumps too, so that MongoDB's write conflicts order such a unit before the
erasure's check or after its commit. The double runs transactions one at a time, so these
tests check what each side sends; a write conflict is injected as a server would raise it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pymongo.errors import OperationFailure

from fhir_server import clock
from fhir_server.search import default_registry
from fhir_server.services.erase import compartment
from fhir_server.store.base import Delete
from fhir_server.store.mongo import MongoStore
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


async def test_a_conditional_erasure_is_one_transaction_that_bumps_the_fence_first(
        store: MongoStore) -> None:
    await _seed(store)
    double = _double(store)
    double.calls.clear()
    erased = await store.erase(compartment(default_registry(), "a"), ("Patient", "a"), clock.now())
    assert erased.resources == {"Patient": 1, "Observation": 3}
    assert double.calls and all(c.in_transaction for c in double.calls)
    assert (double.calls[0].collection, double.calls[0].method) == ("ids", "bulk_write")
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
