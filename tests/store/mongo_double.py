"""An asyncio face on mongomock-ng, shaped like the part of `pymongo.AsyncMongoClient` the
MongoDB store uses, so the store's own code runs unchanged against an in-process double.

What the double cannot do, and how the tests deal with it:
- Transactions roll back (mongomock-ng restores a snapshot on abort) but are not isolated:
  this adapter runs them one at a time, so racing units never conflict here. Races are
  exercised for real only against a MongoDB server (FHIR_SERVER_TEST_MONGODB_URI).
- `$centerSphere` is not implemented: `near` cases are marked as needing a real server.

`standalone=True` answers `hello` as a standalone server (no transactions); setting `down`
makes every call fail as an unreachable server does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

import mongomock_ng
from pymongo.errors import ServerSelectionTimeoutError


class _Cursor:
    """Async iteration over a finished result list."""

    def __init__(self, docs: Iterable[dict[str, Any]]) -> None:
        self._docs = list(docs)

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        for doc in self._docs:
            yield doc

    async def to_list(self, length: int | None = None) -> list[dict[str, Any]]:
        return self._docs if length is None else self._docs[:length]


class _Session:
    def __init__(self, client: DoubleClient) -> None:
        self._client = client
        self._session = client.sync.start_session()
        self._held = False

    @property
    def in_transaction(self) -> bool:
        return bool(self._session.in_transaction)

    async def __aenter__(self) -> _Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.in_transaction:
            await self.abort_transaction()
        self._session.end_session()

    async def start_transaction(self) -> None:
        await self._client.transactions.acquire()
        self._held = True
        self._session.start_transaction()

    async def commit_transaction(self) -> None:
        try:
            self._session.commit_transaction()
        finally:
            self._release()

    async def abort_transaction(self) -> None:
        try:
            self._session.abort_transaction()
        finally:
            self._release()

    def _release(self) -> None:
        if self._held:
            self._held = False
            self._client.transactions.release()


def _unwrap(kwargs: dict[str, Any]) -> dict[str, Any]:
    session = kwargs.pop("session", None)
    if session is not None:
        kwargs["session"] = session._session
    return kwargs


class _Collection:
    def __init__(self, client: DoubleClient, collection: Any) -> None:
        self._client = client
        self._c = collection

    def find(self, *args: Any, **kwargs: Any) -> _Cursor:
        self._client.answer()
        return _Cursor(self._c.find(*args, **_unwrap(kwargs)))

    async def aggregate(self, pipeline: list[dict[str, Any]], **kwargs: Any) -> _Cursor:
        self._client.answer()
        return _Cursor(self._c.aggregate(pipeline, **_unwrap(kwargs)))

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._c, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            self._client.answer()
            return method(*args, **_unwrap(kwargs))

        return call


class _Database:
    def __init__(self, client: DoubleClient, database: Any) -> None:
        self._client = client
        self._db = database
        self.name = database.name

    def __getitem__(self, name: str) -> _Collection:
        return _Collection(self._client, self._db[name])

    async def command(self, name: str) -> dict[str, Any]:
        self._client.answer()
        if name == "hello":
            if self._client.standalone:
                return {"isWritablePrimary": True, "ok": 1.0}
            return {"isWritablePrimary": True, "setName": "double", "ok": 1.0}
        if name == "ping":
            return {"ok": 1.0}
        raise NotImplementedError(name)


class DoubleClient:
    """`client[db][collection]`, `client.admin.command`, `start_session`, `close`."""

    def __init__(self, *, standalone: bool = False) -> None:
        self.sync: Any = mongomock_ng.MongoClient()
        self.transactions = asyncio.Lock()
        self.standalone = standalone
        self.down = False
        self.admin = _Database(self, self.sync["admin"])

    def answer(self) -> None:
        """Fail as a driver does when no server can be selected."""
        if self.down:
            raise ServerSelectionTimeoutError("the double is down")

    def __getitem__(self, name: str) -> _Database:
        return _Database(self, self.sync[name])

    def start_session(self) -> _Session:
        return _Session(self)

    async def close(self) -> None:
        self.sync.close()
