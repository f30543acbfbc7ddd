"""Two handles on one store, SQLite or the MongoDB double, for the tests of what is kept per
store and brought up to date from its history (test_catalogue_kept.py, test_consents_kept.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir_server.access import server_principal
from fhir_server.model.validation import Validator
from fhir_server.search import default_registry
from fhir_server.services.context import Context
from fhir_server.store.base import Store
from fhir_server.store.mongo import MongoStore
from fhir_server.store.sqlite import SqliteStore
from tests.store.conftest import DOUBLE, dispose, encrypting, migrated_double

LATE = 20  # seconds: a MongoDB version may appear this far behind newer ones (< SETTLE_SECONDS)


class Handle:
    """The same store under another object: what it keeps is its own (read afresh)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


@dataclass
class Stores:
    first: Store  # the one what is kept is read through
    second: Store  # another handle (another worker process) on the same data
    late: bool  # versions may be stamped before newer ones (MongoDB's concurrent units)


@asynccontextmanager
async def opened(kind: str, folder: Path) -> AsyncIterator[Stores]:
    if kind == "sqlite":
        first: Store = SqliteStore(folder / "kept.db", codec=encrypting(folder))
        await first.migrate()
        await first.open()
        second: Store = SqliteStore(folder / "kept.db", codec=encrypting(folder))
    else:
        first = await asyncio.to_thread(migrated_double, None, encrypting(folder))
        await first.open()
        assert isinstance(first, MongoStore)
        second = MongoStore(first.client, codec=encrypting(folder))
    await second.open()
    try:
        yield Stores(first, second, kind == DOUBLE)
    finally:
        await second.close()
        await dispose(first)


def context(store: Store | Handle) -> Context:
    return Context(store=store, validator=Validator(), registry=default_registry(),  # type: ignore[arg-type]
                   principal=server_principal("test"))
