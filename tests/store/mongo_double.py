"""An asyncio face on mongomock-ng, shaped like the part of `pymongo.AsyncMongoClient` the
MongoDB store uses, so the store's own code runs unchanged against an in-process double,
and strict where mongomock-ng is lenient and a real server is not.

Strict like a server:
- records the options of every transaction and of every database the store opens; a client
  made with `url_options` (the options a connection string would give) lends them to every
  database opened without options of its own, so a test can check that a URL cannot weaken
  what the store asks for;
- refuses an index whose key pattern exists under another name, as `createIndexes` does;
- refuses what MongoDB forbids inside a transaction (`distinct`, index and collection
  creation, listing indexes, a read preference other than primary), documents over
  `max_document_size` (16 MiB), and 2dsphere points out of range;
- records the filter of every call (`calls`), so tests can check that a write path's reads
  carry the shard key;
- with `notablescan` set, as a server started with that parameter, refuses a query with a
  predicate that no index serves (291 NoQueryExecutionPlans; in a bulk write, a write error
  291 for that operation); a query without one is allowed, as there. An index serves a
  filter when one of its fields (or, under `$and`, its clauses') leads that index's key, or
  when every branch of its `$or` is served, or when the index gives the `sort` asked for (the
  planner's rules, without their finer points: a `$exists: false` on a sparse index, say);
- answers `hello` as a replica set, a standalone server (`standalone=True`) or a mongos
  (`sharded=True`, shard keys in `config.collections`), and `getDefaultRWConcern`,
  `getParameter`;
- models the client's timeoutMS (`timeout`, 10 s as MongoStore.from_url sets it): a commit
  under it, or under `pymongo.timeout`, is bounded by that deadline, not by maxCommitTimeMS
  (PyMongo drops it); `commit_bounds` records the bound of each commit sent;
- `fail(method, error)` makes the next call of `method` (a collection method, or
  `commit_transaction`) raise `error`, e.g. a labelled TransientTransactionError.

What it cannot do, and how the tests deal with it:
- Transactions roll back (mongomock-ng restores a snapshot on abort) but are not isolated:
  this adapter runs them one at a time, so racing units never conflict here on their own
  (tests inject the conflict a real server would raise). Races are exercised for real only
  against a MongoDB server (FHIR_SERVER_TEST_MONGODB_URI).
- `$centerSphere` is not implemented: `near` cases are marked as needing a real server.

Setting `down` makes every call fail as an unreachable server does.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import bson
import mongomock_ng
from pymongo import _csot
from pymongo.errors import (
    BulkWriteError,
    DocumentTooLarge,
    InvalidOperation,
    OperationFailure,
    ServerSelectionTimeoutError,
    WriteError,
)
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import Primary
from pymongo.write_concern import WriteConcern

MAX_DOCUMENT_SIZE = 16 * 1024 * 1024
_NOT_IN_TRANSACTIONS = frozenset({
    "distinct", "create_index", "create_indexes", "drop", "drop_index", "drop_indexes",
    "list_indexes", "index_information", "estimated_document_count", "create_collection",
})
# The calls whose filter a query plan serves (bulk writes carry theirs per operation).
_QUERIES = frozenset({"find", "find_one", "count_documents", "delete_one", "delete_many",
                      "update_one", "update_many", "replace_one", "distinct", "aggregate",
                      "find_one_and_update", "find_one_and_replace", "find_one_and_delete"})
_WRITES = frozenset({"insert_one", "insert_many", "replace_one", "update_one", "update_many",
                     "delete_one", "delete_many", "bulk_write"})


# Set by a test around what it counts (an HTTP request): each call, transaction and commit is
# recorded with the value in force, so that a background task's own (a dispatcher round, a
# periodic purge, whose contexts were copied before) are told apart.
ORIGIN: contextvars.ContextVar[object] = contextvars.ContextVar("double_origin", default=None)


@dataclass(frozen=True)
class Call:
    """One collection call as the double saw it."""

    collection: str
    method: str
    filter: dict[str, Any] | None
    in_transaction: bool
    timeout: float | None = None  # the driver's limit on the call, seconds (0: none)
    origin: object = field(default_factory=ORIGIN.get)


@dataclass
class Options:
    """Read/write concern and read preference, as given (None: not given)."""

    read_concern: ReadConcern | None = None
    write_concern: WriteConcern | None = None
    read_preference: Any = None
    max_commit_time_ms: int | None = None


@dataclass
class _Fault:
    method: str
    error: Exception
    times: int
    effect: Callable[[], None] | None


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
        self.options = Options()

    @property
    def in_transaction(self) -> bool:
        return bool(self._session.in_transaction)

    async def __aenter__(self) -> _Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.in_transaction:
            await self.abort_transaction()
        self._session.end_session()

    async def start_transaction(self, read_concern: ReadConcern | None = None,
                                write_concern: WriteConcern | None = None,
                                read_preference: Any = None,
                                max_commit_time_ms: int | None = None) -> None:
        self._client.answer()
        await self._client.transactions.acquire()
        self._held = True
        self.options = Options(read_concern, write_concern, read_preference, max_commit_time_ms)
        self._client.transaction_options.append(self.options)
        self._client.transaction_origins.append(ORIGIN.get())
        self._session.start_transaction()

    async def commit_transaction(self) -> None:
        self._client.answer()
        # What bounds the commit as PyMongo sends it: a deadline in force (`pymongo.timeout`,
        # else the client's timeoutMS) replaces maxCommitTimeMS, which is then not sent.
        deadline = _csot.remaining()
        bound = self._client.timeout_in_force() if deadline is None else deadline
        if not bound and self.options.max_commit_time_ms is not None:
            bound = self.options.max_commit_time_ms / 1000
        self._client.commit_bounds.append(bound)
        self._client.commit_origins.append(ORIGIN.get())
        self._client.inject("commit_transaction")
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


def _filter_of(method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
    if method in ("insert_one", "insert_many", "bulk_write"):
        return None
    if method == "aggregate":
        first = args[0][0] if args and args[0] else {}
        return first.get("$match")
    found = args[0] if args else kwargs.get("filter")
    return found if isinstance(found, dict) else None


def _documents(method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    """The documents a write call would store."""
    if method == "insert_one":
        return [args[0]]
    if method == "insert_many":
        return list(args[0])
    if method == "replace_one":
        return [args[1] if len(args) > 1 else kwargs["replacement"]]
    if method == "bulk_write":
        return [doc for request in args[0] if (doc := getattr(request, "_doc", None)) is not None]
    return []


def _check_points(doc: dict[str, Any]) -> None:
    """What a 2dsphere index refuses: a point outside [-180, 180] x [-90, 90]."""
    for entry in doc.get("geo") or ():
        longitude, latitude = entry["pt"]["coordinates"]
        if not (-180 <= longitude <= 180 and -90 <= latitude <= 90):
            raise WriteError(f"Can't extract geo keys: longitude/latitude is out of bounds, "
                             f"lng: {longitude} lat: {latitude}", 16755, {})


def _served(where: dict[str, Any], leading: set[str]) -> bool:
    """Whether an index whose key leads with one of `leading` serves the filter `where`."""
    if any(field in leading for field in where if not field.startswith("$")):
        return True
    if any(_served(clause, leading) for clause in where.get("$and", ())):
        return True
    branches = where.get("$or")
    return bool(branches) and all(_served(branch, leading) for branch in branches)


class _Collection:
    def __init__(self, client: DoubleClient, collection: Any) -> None:
        self._client = client
        self._c = collection
        self.name = collection.name

    def _before(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Check a call as a server would, record it, and unwrap its session."""
        self._client.answer()
        session: _Session | None = kwargs.pop("session", None)
        in_transaction = session is not None and session.in_transaction
        where = _filter_of(method, args, kwargs)
        self._client.calls.append(Call(self.name, method, where, in_transaction,
                                       self._client.timeout_in_force()))
        if method in _QUERIES and where and self._unplanned(where, kwargs.get("sort")):
            raise OperationFailure(f"No indexed plan available for the query {where} on "
                                   f"{self.name} (notablescan)", 291,
                                   {"codeName": "NoQueryExecutionPlans"})
        if in_transaction:
            assert session is not None
            if method in _NOT_IN_TRANSACTIONS:
                raise OperationFailure(f"Cannot run '{method}' in a multi-document transaction.",
                                       263, {"codeName": "OperationNotSupportedInTransaction"})
            preference = session.options.read_preference or self._client.url_options.read_preference
            if method not in _WRITES and preference is not None and not isinstance(preference, Primary):
                raise InvalidOperation("read preference in a transaction must be primary")
        for doc in _documents(method, args, kwargs):
            if len(bson.encode(doc)) > self._client.max_document_size:
                raise DocumentTooLarge("BSON document too large")
            _check_points(doc)
        self._client.inject(method)
        if session is not None:
            kwargs["session"] = session._session
        return kwargs

    def _unplanned(self, where: dict[str, Any], sort: Any) -> bool:
        """Whether a server started with `notablescan` refuses the query `where` (sorted by
        `sort`): no index serves it."""
        if not self._client.notablescan:
            return False
        # Every collection has its `_id` index, one not created yet too (it is empty then).
        leading = {next(iter(doc["key"])) for doc in self._c.list_indexes()} | {"_id"}
        order = sort or [("", 0)]  # an index giving the order is a plan too
        return not _served(where, leading) and order[0][0] not in leading

    async def bulk_write(self, requests: list[Any], **kwargs: Any) -> Any:
        """As a server: an operation whose filter no index serves (`notablescan`) is a write
        error 291; the operations before it (ordered) or all the others (unordered) apply."""
        kwargs = self._before("bulk_write", (requests,), kwargs)
        refused = [n for n, request in enumerate(requests)
                   if (where := getattr(request, "_filter", None)) and self._unplanned(where, None)]
        if not refused:
            return self._c.bulk_write(requests, **kwargs)
        if kwargs.get("ordered", True):
            refused, applied = refused[:1], requests[:refused[0]]
        else:
            applied = [request for n, request in enumerate(requests) if n not in refused]
        result = self._c.bulk_write(applied, **kwargs).bulk_api_result if applied else {
            "nInserted": 0, "nUpserted": 0, "nMatched": 0, "nModified": 0, "nRemoved": 0,
            "upserted": []}
        raise BulkWriteError({**result, "writeConcernErrors": [], "writeErrors": [
            {"index": n, "code": 291, "errmsg": f"No indexed plan available on {self.name} "
             "(notablescan)"} for n in refused]})

    def find(self, *args: Any, **kwargs: Any) -> _Cursor:
        kwargs = self._before("find", args, kwargs)
        return _Cursor(self._c.find(*args, **kwargs))

    async def aggregate(self, pipeline: list[dict[str, Any]], **kwargs: Any) -> _Cursor:
        kwargs = self._before("aggregate", (pipeline,), kwargs)
        return _Cursor(self._c.aggregate(pipeline, **kwargs))

    async def create_indexes(self, models: list[Any], **kwargs: Any) -> list[str]:
        """As a server: an index of the same key pattern under another name, or another index
        under the same name, is a conflict (85, 86), not a second index."""
        kwargs = self._before("create_indexes", (models,), kwargs)
        have = {doc["name"]: doc for doc in self._c.list_indexes()}
        for model in models:
            wanted = model.document
            same = have.get(wanted["name"])
            if same is not None and (list(same["key"].items()) != list(wanted["key"].items())
                                     or same.get("expireAfterSeconds")
                                     != wanted.get("expireAfterSeconds")):
                raise OperationFailure("An existing index has the same name as the requested "
                                       "index", 86, {"codeName": "IndexKeySpecsConflict"})
            if any(list(doc["key"].items()) == list(wanted["key"].items())
                   and name != wanted["name"] for name, doc in have.items()):
                raise OperationFailure("Index already exists with a different name", 85,
                                       {"codeName": "IndexOptionsConflict"})
        return list(self._c.create_indexes(models, **kwargs))

    async def list_indexes(self, **kwargs: Any) -> _Cursor:
        kwargs = self._before("list_indexes", (), kwargs)
        return _Cursor(self._c.list_indexes(**kwargs))

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._c, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            kwargs = self._before(name, args, kwargs)
            return method(*args, **kwargs)

        return call


class _Database:
    def __init__(self, client: DoubleClient, database: Any, options: Options) -> None:
        self._client = client
        self._db = database
        self.name = database.name
        self.options = options

    def __getitem__(self, name: str) -> _Collection:
        return _Collection(self._client, self._db[name])

    async def command(self, name: str, value: Any = 1, **kwargs: Any) -> dict[str, Any]:
        self._client.answer()
        self._client.inject(name)
        client = self._client
        if name == "hello":
            hello: dict[str, Any] = {"isWritablePrimary": True, "ok": 1.0,
                                     "maxBsonObjectSize": client.max_document_size}
            if client.sharded:
                hello["msg"] = "isdbgrid"
            elif not client.standalone:
                hello["setName"] = "double"
            return hello
        if name == "ping":
            return {"ok": 1.0}
        if name == "getDefaultRWConcern":
            return {**client.default_rw_concern, "ok": 1.0}
        if name == "getParameter" and "transactionLifetimeLimitSeconds" in kwargs:
            return {"transactionLifetimeLimitSeconds": client.transaction_lifetime, "ok": 1.0}
        raise NotImplementedError(name)


class DoubleClient:
    """`client[db]`, `get_database`, `client.admin.command`, `start_session`, `close`."""

    def __init__(self, *, standalone: bool = False, sharded: bool = False,
                 url_options: Options | None = None) -> None:
        self.sync: Any = mongomock_ng.MongoClient()
        self.transactions = asyncio.Lock()
        self.standalone = standalone
        self.sharded = sharded
        self.url_options = url_options or Options()
        self.down = False
        self.notablescan = False  # a server's `notablescan` parameter (see the module docstring)
        self.max_document_size = MAX_DOCUMENT_SIZE
        self.transaction_lifetime = 60
        # The client's timeoutMS in seconds, as MongoStore.from_url sets it by default.
        self.timeout: float | None = 10.0
        self.commit_bounds: list[float | None] = []  # seconds, per commit sent
        # What `getDefaultRWConcern` answers (the cluster-wide defaults).
        self.default_rw_concern: dict[str, Any] = {
            "defaultReadConcern": {"level": "local"},
            "defaultWriteConcern": {"w": "majority", "wtimeout": 0}}
        self.calls: list[Call] = []
        self.transaction_options: list[Options] = []
        self.transaction_origins: list[object] = []  # ORIGIN at each start, per transaction
        self.commit_origins: list[object] = []  # ORIGIN at each commit sent
        self.database_options: dict[str, Options] = {}
        self.faults: list[_Fault] = []
        self.admin = _Database(self, self.sync["admin"], Options())

    def timeout_in_force(self) -> float | None:
        """The driver's timeout for a call made now: `pymongo.timeout`'s, else the client's."""
        given = _csot.get_timeout()
        return self.timeout if given is None else given

    def answer(self) -> None:
        """Fail as a driver does when no server can be selected."""
        if self.down:
            raise ServerSelectionTimeoutError("the double is down")

    def fail(self, method: str, error: Exception, times: int = 1,
             effect: Callable[[], None] | None = None) -> None:
        """Make the next `times` calls of `method` raise `error`, after running `effect`
        (say, moving a frozen clock: the call took that long)."""
        self.faults.append(_Fault(method, error, times, effect))

    def inject(self, method: str) -> None:
        for fault in self.faults:
            if fault.method == method and fault.times > 0:
                fault.times -= 1
                if fault.effect is not None:
                    fault.effect()
                raise fault.error

    def get_database(self, name: str, *, read_concern: ReadConcern | None = None,
                     write_concern: WriteConcern | None = None,
                     read_preference: Any = None) -> _Database:
        given = Options(read_concern, write_concern, read_preference)
        # What the connection string set applies where the caller set nothing.
        options = Options(read_concern or self.url_options.read_concern,
                          write_concern or self.url_options.write_concern,
                          read_preference or self.url_options.read_preference)
        self.database_options[name] = given
        return _Database(self, self.sync[name], options)

    def __getitem__(self, name: str) -> _Database:
        return self.get_database(name)

    def start_session(self) -> _Session:
        return _Session(self)

    async def close(self) -> None:
        self.sync.close()

