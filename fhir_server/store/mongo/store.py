"""The MongoDB store, on PyMongo's asyncio API (`pymongo.AsyncMongoClient`).

Writes of a unit of work run in one multi-document transaction on a replica set or sharded
cluster. A standalone server has no transactions: it takes single-resource interactions and
refuses FHIR transactions with an OperationOutcome, which start-up logs and /readyz report.
There a version is two writes (the resource document, then its history document), so a crash
between them loses that history entry; use a replica set (even of one node) in production. Concurrent units that touch the same documents conflict;
the loser is rolled back and run again (`TransientConflict`). Conditional creates claim their
criteria in the `claims` collection first, so that two racing ones conflict instead of both
inserting. Layout and indexes: layout.py and docs/storage.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from functools import wraps
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from bson import ObjectId
from pymongo import AsyncMongoClient, uri_parser
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import (
    ConnectionFailure,
    DocumentTooLarge,
    DuplicateKeyError,
    ExecutionTimeout,
    PyMongoError,
    ServerSelectionTimeoutError,
    WTimeoutError,
)

from ... import clock
from ...model.errors import FhirError, Kind, fail
from ...search import Query, Registry, default_registry
from . import layout
from ..base import (
    RETRY_DELAYS,
    ConditionalCreate,
    ConditionalDelete,
    ConditionalUpdate,
    Delete,
    HistoryPage,
    HistoryQuery,
    Operation,
    OperationFailed,
    Result,
    SearchPage,
    TransientConflict,
    Version,
    Write,
)
from .search import VERSION_FIELDS, MongoSearch, version_of
from ..versions import stamp

log = logging.getLogger(__name__)

_TRANSIENT = "TransientTransactionError"
_UNKNOWN_COMMIT = "UnknownTransactionCommitResult"
_NO_TRANSACTIONS = (
    "This MongoDB server is a standalone server, which has no multi-document transactions: "
    "FHIR transactions need a replica set or a sharded cluster."
)
# A standalone server's claim older than this was left by a crashed writer.
_STALE_CLAIM_SECONDS = 30
_HISTORY_SHIFT = 96  # history cursor = lu << 96 | seq (an ObjectId is 96 bits)
_UNREACHABLE = (ConnectionFailure, ServerSelectionTimeoutError, ExecutionTimeout, WTimeoutError)

P = ParamSpec("P")
T = TypeVar("T")


def _unavailable(exc: PyMongoError) -> Exception:
    return fail(Kind.BUSY, "transient",
                f"MongoDB does not answer ({type(exc).__name__}); retry later.")


def _answering(method: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Report MongoDB being unreachable or too slow as BUSY (503), not as a server fault."""
    @wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except _UNREACHABLE as exc:
            raise _unavailable(exc) from exc
        except DocumentTooLarge as exc:
            raise fail(Kind.TOO_LARGE, "too-costly", "The resource and its search index entries "
                       "exceed MongoDB's 16 MB document limit.") from exc

    return call


class MongoStore:
    """A Store on one MongoDB database (collections `resources`, `history`, `claims`)."""

    def __init__(self, client: Any, database: str = "fhir", *,
                 registry: Registry | None = None) -> None:
        self.client = client
        self.db = client[database]
        self.resources = self.db["resources"]
        self.history_docs = self.db["history"]
        self.claims = self.db["claims"]
        self.registry = registry or default_registry()
        self.transactions = False
        self._prepared = False

    @classmethod
    def from_url(cls, url: str, *, timeout_seconds: float = 10.0) -> MongoStore:
        """Any MongoDB connection string; the database is the URL's path, else `fhir`."""
        given = {name.lower() for name in uri_parser.parse_uri(url)["options"]}
        defaults = {"serverSelectionTimeoutMS": int(timeout_seconds * 1000),
                    "timeoutMS": int(timeout_seconds * 1000), "appname": "fhir-server"}
        # Options in the connection string win over these defaults.
        options: dict[str, Any] = {k: v for k, v in defaults.items() if k.lower() not in given}
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, tz_aware=True, **options)
        return cls(client, client.get_default_database("fhir").name)

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Learn the topology and create the indexes; if MongoDB does not answer yet, the
        server starts anyway (/readyz says why it is not ready) and this is done later."""
        try:
            await self._prepare()
        except _UNREACHABLE as exc:
            log.warning("mongodb unreachable at start-up", extra={"error": type(exc).__name__})

    async def _prepare(self) -> None:
        if self._prepared:
            return
        hello = await self.client.admin.command("hello")
        self.transactions = "setName" in hello or hello.get("msg") == "isdbgrid"
        if not self.transactions:
            log.warning("mongodb standalone: FHIR transactions are refused",
                        extra={"reason": _NO_TRANSACTIONS})
        await self.resources.create_indexes(list(layout.RESOURCE_INDEXES))
        await self.history_docs.create_indexes(list(layout.HISTORY_INDEXES))
        await self.claims.create_indexes(list(layout.CLAIM_INDEXES))
        self._prepared = True

    async def close(self) -> None:
        await self.client.close()

    async def check(self) -> None:
        try:
            await self.db.command("ping")
            await self._prepare()
        except PyMongoError as exc:
            raise _unavailable(exc) from exc

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {"kind": "mongodb", "transactions": self.transactions}
        if not self._prepared:
            status["note"] = "MongoDB has not answered yet."
        elif not self.transactions:
            status["note"] = _NO_TRANSACTIONS
        return status

    # -- reads -------------------------------------------------------------------------------

    @_answering
    async def read(self, resource_type: str, id: str) -> Version | None:
        where = {"_id": layout.key(resource_type, id)}
        if resource_type == "Patient":  # its shard is known: a targeted read
            where["shard"] = where["_id"]
        doc = await self.resources.find_one(where, VERSION_FIELDS)
        return version_of(doc) if doc else None

    @_answering
    async def vread(self, resource_type: str, id: str, version: int) -> Version | None:
        doc = await self.history_docs.find_one(
            {"_id": f"{layout.key(resource_type, id)}/{version}"}, VERSION_FIELDS)
        return version_of(doc) if doc else None

    @_answering
    async def count(self, resource_type: str) -> int:
        return int(await self.resources.count_documents({"type": resource_type, "deleted": False}))

    @_answering
    async def history(self, query: HistoryQuery) -> HistoryPage:
        where: dict[str, Any] = {}
        if query.resource_type is not None:
            where["type"] = query.resource_type
        if query.id is not None:
            where["id"] = query.id
        if query.since is not None:
            where["lastUpdated"] = {"$gte": query.since}
        if query.before_seq is not None:
            lu, seq = _split_history_cursor(query.before_seq)
            where["$or"] = [{"lu": {"$lt": lu}}, {"lu": lu, "seq": {"$lt": seq}}]
        found = self.history_docs.find(
            where, {**VERSION_FIELDS, "lu": 1, "seq": 1},
            sort=[("lu", -1), ("seq", -1)], limit=query.count + 1)
        docs = [doc async for doc in found]
        page = docs[: query.count]
        more = len(docs) > query.count
        cursor = (page[-1]["lu"] << _HISTORY_SHIFT | int(str(page[-1]["seq"]), 16)) if more else None
        return HistoryPage(tuple(version_of(d) for d in page), next_seq=cursor)

    @_answering
    async def search(self, query: Query, cursor: str | None = None) -> SearchPage:
        return await MongoSearch(self.resources, self.registry).search(query, cursor)

    # -- writes ------------------------------------------------------------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_MongoUnit]:
        try:
            await self._prepare()
        except _UNREACHABLE as exc:
            raise _unavailable(exc) from exc
        if not self.transactions:
            raise fail(Kind.NOT_SUPPORTED, "not-supported", _NO_TRANSACTIONS)
        async with self.client.start_session() as session:
            await session.start_transaction()
            unit = _MongoUnit(self, session)
            try:
                yield unit
            except BaseException as exc:
                if session.in_transaction:
                    await asyncio.shield(session.abort_transaction())
                if isinstance(exc, PyMongoError) and exc.has_error_label(_TRANSIENT):
                    raise TransientConflict(str(exc)) from exc
                if isinstance(exc, _UNREACHABLE):
                    raise _unavailable(exc) from exc
                raise
            await _commit(session)

    @_answering
    async def commit(self, operations: Sequence[Operation]) -> list[Result]:
        await self._prepare()
        for delay in RETRY_DELAYS:
            await asyncio.sleep(delay)
            try:
                if self.transactions:
                    async with self.transaction() as unit:
                        return await unit.apply(operations)
                if len(operations) > 1:
                    raise fail(Kind.NOT_SUPPORTED, "not-supported", _NO_TRANSACTIONS)
                unit = _MongoUnit(self, None)
                try:
                    return await unit.apply(operations)
                finally:
                    await unit.release_claims()
            except TransientConflict:
                continue
        raise fail(Kind.BUSY, "transient", "Too many concurrent writes to the same resources; "
                   "retry later.")


async def _commit(session: AsyncClientSession) -> None:
    """Commit, retrying while the outcome is unknown (the commit is idempotent)."""
    for delay in RETRY_DELAYS:
        await asyncio.sleep(delay)
        try:
            await session.commit_transaction()
            return
        except PyMongoError as exc:
            if exc.has_error_label(_TRANSIENT):
                raise TransientConflict(str(exc)) from exc
            if not exc.has_error_label(_UNKNOWN_COMMIT):
                raise
    raise fail(Kind.BUSY, "transient", "MongoDB did not confirm the commit; retry later.")


def _split_history_cursor(cursor: int) -> tuple[int, ObjectId]:
    seq = cursor & ((1 << _HISTORY_SHIFT) - 1)
    return cursor >> _HISTORY_SHIFT, ObjectId(seq.to_bytes(12, "big"))


def _claim_key(query: Query) -> str:
    """The claim of a condition: equal criteria (as parsed) give the same key."""
    text = repr((query.resource_type, query.clauses))
    return hashlib.sha256(text.encode()).hexdigest()


def _ambiguous(query: Query) -> Exception:
    return fail(Kind.PRECONDITION_FAILED, "multiple-matches",
                f"The search criteria match more than one {query.resource_type}.",
                details_code="MSG_TRANSACTION_DUPLICATE_ID")


def _version_conflict(expected: int, what: str) -> Exception:
    return fail(Kind.PRECONDITION_FAILED, "conflict",
                f"Version {expected} of {what} is not the current version.",
                details_code="MSG_VERSION_AWARE_CONFLICT")


class _MongoUnit:
    """One unit of work: inside `session`'s transaction, or (standalone) write by write."""

    def __init__(self, store: MongoStore, session: AsyncClientSession | None) -> None:
        self.store = store
        self.session = session
        self.search = MongoSearch(store.resources, store.registry, session)
        self.last_updated, self.micros = clock.instant_and_micros()
        self._claims: list[str] = []

    async def apply(self, operations: Sequence[Operation]) -> list[Result]:
        results: list[Result] = []
        for index, op in enumerate(operations):
            try:
                results.append(await self._apply(op))
            except FhirError as error:
                raise OperationFailed.at(index, error) from None
        return results

    async def match_ids(self, query: Query, limit: int | None = None) -> list[str]:
        await self._claim(query)
        return await self.search.match_ids(query, limit)

    async def _apply(self, op: Operation) -> Result:
        match op:
            case Write():
                return await self.write(op)
            case Delete():
                return await self.delete(op.resource_type, op.id, op.if_match)
            case ConditionalCreate():
                found = await self.match_ids(op.query, 2)
                if not found:
                    return await self.write(op.write)
                if len(found) > 1:
                    raise _ambiguous(op.query)
                current = await self.store.resources.find_one(
                    {"_id": layout.key(op.write.resource_type, found[0])}, VERSION_FIELDS,
                    session=self.session)
                assert current is not None
                return Result("matched", (version_of(current),))
            case ConditionalUpdate():
                found = await self.match_ids(op.query, 2)
                if len(found) > 1:
                    raise _ambiguous(op.query)
                if not found:
                    return await self.write(op.write)
                if op.id_given and op.write.id != found[0]:
                    raise fail(Kind.INVALID, "invalid",
                               f"The resource id '{op.write.id}' differs from the id of the "
                               "resource matching the condition.",
                               expression=f"{op.write.resource_type}.id",
                               details_code="MSG_RESOURCE_ID_MISMATCH")
                return await self.write(replace(op.write, id=found[0]))
            case ConditionalDelete():
                found = await self.search.match_ids(op.query, None)
                if len(found) > 1 and not op.multiple:
                    raise _ambiguous(op.query)
                versions: list[Version] = []
                for id in found:
                    deleted = await self.delete(op.query.resource_type or "", id, None)
                    versions.extend(deleted.versions)
                return Result("deleted" if versions else "none", tuple(versions))
        raise TypeError(f"unknown operation {op!r}")

    async def _claim(self, query: Query) -> None:
        """Take the claim of `query`'s criteria for the rest of this unit.

        In a transaction, writing the claim document makes a concurrent unit claiming the same
        criteria conflict (one of the two is rolled back and run again, then sees the other's
        resource). A standalone server has no such conflicts: the claim is a unique insert,
        released when the unit ends, and a unit finding it taken runs again later.
        """
        claim = _claim_key(query)
        moment = clock.now()
        if self.session is not None:
            await self.store.claims.update_one({"_id": claim}, {"$set": {"at": moment}},
                                               upsert=True, session=self.session)
            return
        if claim in self._claims:
            return
        try:
            await self.store.claims.insert_one({"_id": claim, "at": moment})
        except DuplicateKeyError:
            held = await self.store.claims.find_one({"_id": claim})
            # BSON dates are UTC; a client made without tz_aware returns them naive.
            at = held["at"].replace(tzinfo=UTC) if held else moment
            if held and (moment - at).total_seconds() > _STALE_CLAIM_SECONDS:
                await self.store.claims.delete_one({"_id": claim, "at": held["at"]})
            raise TransientConflict(f"criteria claimed by another writer: {claim}") from None
        self._claims.append(claim)

    async def release_claims(self) -> None:
        """End a standalone unit: free the claims it took."""
        if self._claims:
            await self.store.claims.delete_many({"_id": {"$in": self._claims}})
            self._claims.clear()

    async def _current(self, resource_type: str, id: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = await self.store.resources.find_one(
            {"_id": layout.key(resource_type, id)},
            {"version": 1, "deleted": 1, "pk": 1, "shard": 1}, session=self.session)
        return found

    async def _store_version(self, current: dict[str, Any] | None, doc: dict[str, Any]) -> None:
        """Write the resource document and its history document.

        The resource document is replaced only if it still holds the version read, and a
        history document's id names its version: a concurrent writer of the same resource
        makes this unit lose (in a transaction the server reports the conflict itself).
        """
        resources, session = self.store.resources, self.session
        try:
            if current is None:
                await resources.insert_one(doc, session=session)
            else:
                # The shard key in the filter lets a sharded cluster move the document when its
                # compartment changes.
                replaced = await resources.replace_one(
                    {"_id": doc["_id"], "shard": current["shard"], "version": current["version"]},
                    doc, session=session)
                if replaced.matched_count == 0:
                    raise TransientConflict(f"{doc['_id']} changed while being written")
            await self.store.history_docs.insert_one(layout.history_document(
                resource_type=doc["type"], id=doc["id"], version=doc["version"],
                last_updated=doc["lastUpdated"], lu=doc["lu"], seq=ObjectId(),
                method=doc["method"], body=doc["body"], shard=doc["shard"]), session=session)
        except DuplicateKeyError:
            raise TransientConflict(f"{doc['_id']} was written concurrently") from None

    async def write(self, op: Write) -> Result:
        current = await self._current(op.resource_type, op.id)
        what = layout.key(op.resource_type, op.id)
        if op.create_only and current is not None:
            raise fail(Kind.CONFLICT, "duplicate", f"{what} already exists.")
        if op.if_match is not None and (
                current is None or current["version"] != op.if_match or current["deleted"]):
            raise _version_conflict(op.if_match, what)
        version = 1 if current is None else current["version"] + 1
        body = stamp(op.resource, op.id, version, self.last_updated)
        doc = layout.resource_document(
            resource_type=op.resource_type, id=op.id,
            pk=current["pk"] if current else ObjectId(), version=version,
            last_updated=self.last_updated, lu=self.micros, method=op.method, body=body,
            shard=layout.shard_key(op.resource_type, op.id, op.entries),
            entries=op.entries)
        await self._store_version(current, doc)
        stored = Version(op.resource_type, op.id, version, self.last_updated, op.method, body)
        created = current is None or current["deleted"]
        return Result("created" if created else "updated", (stored,))

    async def delete(self, resource_type: str, id: str, if_match: int | None) -> Result:
        current = await self._current(resource_type, id)
        what = layout.key(resource_type, id)
        if if_match is not None and (
                current is None or current["version"] != if_match or current["deleted"]):
            raise _version_conflict(if_match, what)
        if current is None or current["deleted"]:
            return Result("none")
        version = current["version"] + 1
        doc = layout.resource_document(
            resource_type=resource_type, id=id, pk=current["pk"], version=version,
            last_updated=self.last_updated, lu=self.micros, method="DELETE", body=None,
            shard=current["shard"], entries=())
        await self._store_version(current, doc)
        return Result("deleted", (Version(resource_type, id, version, self.last_updated,
                                          "DELETE", None),))
