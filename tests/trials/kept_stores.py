"""Two handles on one store, SQLite or the MongoDB double, and random steps run on them, for
the tests of what is kept per store and brought up to date from its history
(test_catalogue_kept.py, test_consents_kept.py): writes through either handle, on MongoDB
some stamped LATE seconds before newer ones, the clock moving, and at each `load` what is
kept compared with what a new handle reads afresh."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

from fhir_server import clock
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


Step = tuple[tuple[str, Any], bool, bool]  # what it does, by the second handle, stamped late


async def run(kind: str, steps: list[Step], base: Path, module: ModuleType,
              write: Callable[[Store, str, Any], Awaitable[None]],
              load: Callable[[Context], Awaitable[Any]], same: Callable[[Any, Any, str], None]) -> None:
    """Run `steps` on a store of `kind`: ("tick", seconds), ("load", None): what `load` keeps
    compared by `same` with what it reads afresh through another handle (and on the day of
    the clock), any other step done by `write`. `module._read` reads afresh: the first time,
    and after an erasure only."""
    with tempfile.TemporaryDirectory(dir=base) as folder, clock.frozen(clock.now()) as moving:
        async with opened(kind, Path(folder)) as stores:
            ctx = context(stores.first)
            with afresh(module, stores.first) as read:
                for (step, value), second, late in [*steps, (("load", None), False, False)]:
                    day = moving.at.date().isoformat()
                    if step == "tick":
                        moving.advance(value)
                    elif step != "load":
                        await _written(stores, moving, second, late, lambda store: write(store, step, value))
                    else:
                        kept = await load(ctx)
                        same(kept, await load(context(Handle(stores.first))), day)
                        again = await load(ctx)  # nothing written since
                        assert again is kept or kind == DOUBLE  # there, only once settled
                        same(again, kept, day)
            assert len(read) <= 1 + sum(step[0] == "erase" for step, _, _ in steps)


async def _written(stores: Stores, moving: clock.Frozen, second: bool, late: bool,
                   write: Callable[[Store], Awaitable[None]]) -> None:
    store = stores.second if second else stores.first
    now = moving.at
    if late and stores.late:  # a unit that stamped its versions earlier commits only now
        moving.at = now - timedelta(seconds=LATE)
    try:
        await write(store)
    finally:
        moving.at = now


@contextmanager
def afresh(module: ModuleType, store: Store | None) -> Iterator[list[None]]:
    """The times what `module` keeps for `store` (None: any) is read afresh (its `_read`),
    not brought up to date."""
    real, counted = module._read, []

    async def reading(ctx: Context, *args: Any) -> Any:
        if store is None or ctx.store is store:
            counted.append(None)
        return await real(ctx, *args)

    module._read = reading
    try:
        yield counted
    finally:
        module._read = real
