"""`fhir-server migrate` and the index self-check on MongoDB (issue 22, second review): no
client-side time limit while building, and an index is recognised by its key pattern and
options, not its name."""

from __future__ import annotations

import pytest
from pymongo import IndexModel
from pymongo.errors import OperationFailure

from fhir_server.store.mongo import MongoStore
from fhir_server.store.mongo.store import UnsafeDeployment
from tests.store.mongo_double import DoubleClient

pytestmark = pytest.mark.anyio


async def test_migrate_runs_without_the_clients_time_limit() -> None:
    double = DoubleClient()
    assert double.timeout == 10.0
    store = MongoStore(double)
    await store.db["resources"].insert_one({"_id": "Patient/p1", "shard": "Patient/p1"})
    await store.migrate()  # the resource written before guards existed gets its guard
    made = [c for c in double.calls if c.method in ("create_indexes", "bulk_write", "find")]
    assert {c.method for c in made} == {"create_indexes", "bulk_write", "find"}
    assert {c.timeout for c in made} == {0}
    assert await store.guards.count_documents({"_id": "Patient/p1"}) == 1


async def test_an_index_built_under_another_name_is_accepted_by_migrate_and_the_check() -> None:
    """The old runbook's `shardCollection` built `{shard: 1, _id: 1}` as `shard_1__id_1`."""
    double = DoubleClient()
    store = MongoStore(double)
    for name in ("resources", "history"):
        await store.db[name].create_indexes(
            [IndexModel([("shard", 1), ("_id", 1)], name="shard_1__id_1")])
    await store.migrate()
    await store.migrate()  # idempotent
    await store.open()
    names = [doc["name"] async for doc in await store.resources.list_indexes()]
    assert "shard_1__id_1" in names and "shard_key" not in names


async def test_an_index_with_other_options_is_a_problem() -> None:
    """A `claims` expiry index without its TTL would keep claims for ever: the check says so,
    and migrate does not silently keep it (MongoDB refuses the conflicting definition)."""
    double = DoubleClient()
    store = MongoStore(double)
    await store.migrate()
    await store.claims.drop_index("expiry")
    await store.claims.create_indexes([IndexModel([("at", 1)], name="expiry")])
    with pytest.raises(UnsafeDeployment, match=r"indexes of claims missing or different \(expiry\)"):
        await store.open()
    with pytest.raises(OperationFailure, match="same name"):
        await store.migrate()
