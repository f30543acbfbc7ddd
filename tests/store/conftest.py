"""The `store` fixture: every Store implementation runs the same contract suite.

- `sqlite` always runs.
- `mongodb-double` always runs: the MongoDB store's own code on an in-process double
  (tests/store/mongo_double.py). Cases the double cannot run carry the `real_mongodb` marker
  and are deselected for it only; the session header lists them, so none passes silently.
- `mongodb` runs when FHIR_SERVER_TEST_MONGODB_URI names a server (docs/storage.md), each
  test on a database of its own, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from fhir_server.crypto import BodyCodec, DataKeys, EnvelopeCodec, LocalKeyRing
from fhir_server.search import BlindIndex, NearPredicate
from fhir_server.store.base import Store
from fhir_server.store.mongo import MongoStore
from fhir_server.store.mongo.layout import SHARD_KEYS
from fhir_server.store.sqlite import SqliteStore
from tests.store.mongo_double import DoubleClient

MONGODB_URI = os.environ.get("FHIR_SERVER_TEST_MONGODB_URI")
DOUBLE = "mongodb-double"
# Predicates the double cannot evaluate: generated queries using them are not run on it.
DOUBLE_LACKS: tuple[type, ...] = (NearPredicate,)


def encrypting(tmp: Path) -> BodyCodec:
    """The codec of a store under test: encryption on, as by default, under the session's key
    ring (FHIR_SERVER_KEY_RING, tests/conftest.py) and data keys in `tmp`."""
    ring = LocalKeyRing(Path(os.environ["FHIR_SERVER_KEY_RING"]))
    return EnvelopeCodec(DataKeys(ring, tmp / "datakeys.db"))


def _real_mongodb(tmp: Path) -> Store:
    assert MONGODB_URI is not None
    store = MongoStore.from_url(MONGODB_URI)
    return MongoStore(store.client, f"fhir_test_{uuid.uuid4().hex[:12]}", codec=encrypting(tmp))


def migrated_double(client: DoubleClient | None = None, codec: BodyCodec | None = None,
                    blind: BlindIndex | None = None) -> MongoStore:
    """A MongoStore on the double after `fhir-server migrate` (called with no event loop
    running: the HTTP tests' app fixture is synchronous); `blind` as the app would give it."""
    store = MongoStore(client or DoubleClient(), codec=codec, blind=blind)
    asyncio.run(store.migrate())
    return store


STORES: dict[str, Callable[[Path], Store]] = {
    "sqlite": lambda tmp: SqliteStore(tmp / "contract.db", codec=encrypting(tmp)),
    DOUBLE: lambda tmp: migrated_double(codec=encrypting(tmp)),
}
if MONGODB_URI:
    STORES["mongodb"] = _real_mongodb


async def dispose(store: Store) -> None:
    """Close a store; a real MongoDB test database is dropped first."""
    if isinstance(store, MongoStore) and not isinstance(store.client, DoubleClient):
        await store.client.drop_database(store.db.name)
    await store.close()


async def _shard_on_a_cluster(store: Store) -> None:
    """On a real `mongos`, shard the test database's collections as docs/storage.md says."""
    if not isinstance(store, MongoStore) or isinstance(store.client, DoubleClient):
        return
    if (await store.client.admin.command("hello")).get("msg") != "isdbgrid":
        return
    for name, key in SHARD_KEYS.items():
        await store.client.admin.command("shardCollection", f"{store.db.name}.{name}", key=key)


@pytest.fixture(params=sorted(STORES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    opened = await asyncio.to_thread(STORES[request.param], tmp_path)
    await opened.migrate()
    await _shard_on_a_cluster(opened)
    await opened.open()
    yield opened
    await dispose(opened)
