"""The MongoDB store, on PyMongo's asyncio API (`pymongo.AsyncMongoClient`).

Writes of a unit of work run in one multi-document transaction on a replica set or sharded
cluster, with read concern `snapshot`, write concern `majority` (journaled), read preference
`primary` and a bounded commit; the database's own write concern and read preference are set
here too, whatever the connection string says. A standalone server has no transactions: it
takes single-resource interactions (when accepted, see selfcheck.py) and refuses FHIR
transactions. Concurrent units that touch the same documents conflict; the loser is rolled
back and run again (`TransientConflict`), unless the attempt ran too long to be worth another.

A unit looks its resources up in one query per step (targeted by the shard key it computes,
then through the `ids` guards for what it missed) and sends its writes in one bulk write per
collection. Conditional creates claim their criteria in `claims` first, so that two racing ones
conflict instead of both inserting; the guard of each resource makes two creates of one id in
two compartments conflict as well. Indexes are built by `migrate` (`fhir-server migrate`),
never while serving. Layout and indexes: layout.py and docs/storage.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial, wraps
from typing import Any, ParamSpec, TypeVar

import bson
import pymongo
from bson import ObjectId
from pymongo import AsyncMongoClient, DeleteMany, InsertOne, ReplaceOne, UpdateOne, uri_parser
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DocumentTooLarge,
    DuplicateKeyError,
    ExecutionTimeout,
    PyMongoError,
    ServerSelectionTimeoutError,
    WTimeoutError,
)
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import ReadPreference
from pymongo.write_concern import WriteConcern

from ... import clock
from ...crypto import BodyCodec, PlainCodec
from ...model.errors import FhirError, Kind, fail, incident
from ...search import BlindIndex, IndexEntry, Query, Registry, default_registry
from ..base import (
    RETRY_DELAYS,
    ConditionalCreate,
    ConditionalDelete,
    ConditionalUpdate,
    Delete,
    Erase,
    Erasure,
    HistoryPage,
    HistoryQuery,
    Operation,
    OperationFailed,
    Outbox,
    Result,
    SearchPage,
    TransientConflict,
    Version,
    Write,
    outbox_changed,
)
from ..bodies import (Prepared, Rewrite, opened, opened_history, opened_page, opened_records, opened_versions,
                      prepare, sealed, sealed_records)
from ..versions import stamp
from .. import index_layout
from ..index_layout import StaleIndex
from . import compartment as mongo_compartment
from . import dump as mongo_dump
from . import erase as mongo_erase
from . import layout
from .jobs import MongoJobs
from .search import VERSION_FIELDS, MongoSearch, version_of
from .schedule import MongoSchedule
from .selfcheck import DEFAULT_MAX_DOCUMENT_SIZE, Deployment, inspect, missing_indexes

log = logging.getLogger(__name__)

_TRANSIENT = "TransientTransactionError"
_UNKNOWN_COMMIT = "UnknownTransactionCommitResult"
_RETRYABLE_WRITE = "RetryableWriteError"
_NO_TRANSACTIONS = (
    "This MongoDB server is a standalone server, which has no multi-document transactions: "
    "FHIR transactions need a replica set or a sharded cluster."
)
# Durable once acknowledged: a majority of the data-bearing members, journaled.
DURABLE = WriteConcern("majority", j=True)
# A commit, sent again while its outcome is unknown, ends within this (`pymongo.timeout`: the
# client's timeoutMS would otherwise replace maxCommitTimeMS, and PyMongo drops the latter).
MAX_COMMIT_SECONDS = 5
# One attempt of a unit, its commit included, ends this long after it stamped its versions
# (the driver's deadline: every command carries maxTimeMS of what remains), well inside
# MongoDB's default 60 s transaction lifetime; one that ran longer is not attempted again.
ATTEMPT_SECONDS = 20
# Between the clocks of two server processes stamping versions, and for a commit acknowledged
# by a majority before the deadline to be visible to a majority read: a generous margin.
_MARGIN_SECONDS = 5
# A version is visible at the latest this long after its lastUpdated, or never: `_since`
# answers list only versions older than that, so none can appear later behind them
# (docs/storage.md, `_history?_since=`).
SETTLE_SECONDS = ATTEMPT_SECONDS + _MARGIN_SECONDS
# Per unit of work: MongoDB advises keeping transactions to about 1,000 documents, as they
# share the storage cache. Operations are capped before any work (a Bundle's entries), and
# document writes as they are queued, since one operation (a conditional delete of many) can
# write any number. A version writes 2 documents (resource, history) or 3 (its guard when
# created), so 1,000 creates fit.
MAX_OPERATIONS = 1000
MAX_DOCUMENT_WRITES = 3 * MAX_OPERATIONS
MAX_UNIT_BYTES = 32 * 1024 * 1024
# Driver errors (codeName) that no new attempt can cure.
_TOO_BIG_FOR_A_TRANSACTION = frozenset({
    "TransactionTooLargeForCache", "TransactionExceededLifetimeLimitSeconds"})
# An unsafe deployment is checked again at most this often by requests (/readyz: always).
_RECHECK_SECONDS = 5
# Set while a task checks the index layout: its own reads and writes pass the check it is
# running, every other task's wait for a check of their own (store/index_layout.py).
_CHECKING_LAYOUT: ContextVar[bool] = ContextVar("checking_layout", default=False)
# A standalone server's claim older than this was left by a crashed writer.
_STALE_CLAIM_SECONDS = 30
_HISTORY_SHIFT = 96  # history cursor = lu << 96 | seq (an ObjectId is 96 bits)
_UNREACHABLE = (ConnectionFailure, ServerSelectionTimeoutError, ExecutionTimeout, WTimeoutError)

P = ParamSpec("P")
T = TypeVar("T")


class UnsafeDeployment(Exception):
    """At start: the self-check found settings that break the store's guarantees."""


def _unavailable(exc: PyMongoError) -> Exception:
    return fail(Kind.BUSY, "transient",
                f"MongoDB does not answer ({type(exc).__name__}); retry later.")


def _too_large_document() -> FhirError:
    return fail(Kind.TOO_LARGE, "too-costly", "The resource and its search index entries "
                "exceed MongoDB's 16 MB document limit.")


def _too_costly(why: str) -> FhirError:
    return fail(Kind.TOO_LARGE, "too-costly",
                f"{why}; nothing was stored. Send the entries as several smaller Bundles.")


def _answering(method: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Refuse to serve on an unsafe deployment; report MongoDB being unreachable or too slow
    as BUSY (503), not as a server fault."""
    @wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        store = args[0]
        assert isinstance(store, MongoStore)
        try:
            await store.ensure_safe()
            return await method(*args, **kwargs)
        except _UNREACHABLE as exc:
            raise _unavailable(exc) from exc
        except DocumentTooLarge as exc:
            raise _too_large_document() from exc

    return call


class MongoStore:
    """A Store on one MongoDB database (collections `resources`, `history`, `ids`, `claims`).

    `accept_unsafe`: serve even where the self-check finds a problem (development only).
    """

    def __init__(self, client: Any, database: str = "fhir", *,
                 registry: Registry | None = None, accept_unsafe: bool = False,
                 codec: BodyCodec | None = None, blind: BlindIndex | None = None,
                 index_check: bool = False) -> None:
        """`index_check`: record the index layout in an empty store, refuse to serve one
        written under another (store/index_layout.py): the clinical store as the server and
        the command line open it (the audit store has no blind index)."""
        self.client = client
        self.codec = codec or PlainCodec()
        self.blind = blind  # protected parameters indexed as digests (search/blind.py)
        self._layout_unchecked = index_check  # until the first self-check that passes
        # Set here, whatever the connection string says: `w=1` would acknowledge commits a
        # failover can roll back, a secondary read preference fails every transaction, and
        # reads outside transactions (`majority`) must not show what a failover rolls back.
        self.db = client.get_database(database, write_concern=DURABLE,
                                      read_preference=ReadPreference.PRIMARY,
                                      read_concern=ReadConcern("majority"))
        self.resources = self.db["resources"]
        self.history_docs = self.db["history"]
        self.guards = self.db[layout.GUARDS]
        self.claims = self.db["claims"]
        self.outbox_docs = self.db["outbox"]
        self.jobs = MongoJobs(self.db, self.codec)
        self.registry = registry or default_registry()
        self.accept_unsafe = accept_unsafe
        self.deployment: Deployment | None = None  # once the self-check has passed
        self._seen: Deployment | None = None  # what the last self-check found, and when
        self._seen_at = clock.now()

    @classmethod
    def from_url(cls, url: str, *, timeout_seconds: float = 10.0,
                 accept_unsafe: bool = False, codec: BodyCodec | None = None,
                 blind: BlindIndex | None = None, index_check: bool = False) -> MongoStore:
        """Any MongoDB connection string; the database is the URL's path, else `fhir`."""
        given = {name.lower() for name in uri_parser.parse_uri(url)["options"]}
        defaults = {"serverSelectionTimeoutMS": int(timeout_seconds * 1000),
                    "timeoutMS": int(timeout_seconds * 1000), "appname": "fhir-server"}
        # Timeouts in the connection string win over these defaults (not concerns: see above).
        options: dict[str, Any] = {k: v for k, v in defaults.items() if k.lower() not in given}
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, tz_aware=True, **options)
        return cls(client, client.get_default_database("fhir").name, accept_unsafe=accept_unsafe,
                   codec=codec, blind=blind, index_check=index_check)

    @property
    def schedule(self) -> MongoSchedule:
        """Scheduled items and notification preferences (store/schedule.py)."""
        return MongoSchedule(self.db, self.codec)

    @property
    def transactions(self) -> bool:
        return self.deployment is not None and self.deployment.transactions

    # -- lifecycle -------------------------------------------------------------------------

    async def migrate(self) -> None:
        """Build the indexes of layout.py and the guard of every resource that lacks one
        (`fhir-server migrate`, before serving: an index build never runs in a request).
        No time limit: an index build or the backfill on a large collection takes minutes,
        and the client's timeoutMS (10 s) would abort it."""
        with pymongo.timeout(0):  # 0: none (PyMongo's client-side operation timeout)
            await self._migrate()

    async def _migrate(self) -> None:
        for name, models in layout.INDEXES.items():
            if missing := await missing_indexes(self.db[name], models):
                if name == "history" and any(m.document["name"] == "sealed_key" for m in missing):
                    await self._fill_sealing_keys()  # before its index: a crash does it again
                await self.db[name].create_indexes(missing)
        if (await self.guards.estimated_document_count()
                >= await self.resources.estimated_document_count()):
            return  # every resource has its guard (the counts are estimates: cheap)
        missing: list[UpdateOne] = []
        async for doc in self.resources.find({}, {"_id": 1, "shard": 1}):
            missing.append(UpdateOne({"_id": doc["_id"]},
                                     {"$setOnInsert": {"shard": doc["shard"]}}, upsert=True))
            if len(missing) == 1000:
                await self.guards.bulk_write(missing, ordered=False)
                missing.clear()
        if missing:
            await self.guards.bulk_write(missing, ordered=False)

    async def _fill_sealing_keys(self) -> None:
        """Give the history documents written before `key` was kept (layout.py) their key."""
        if not await self.history_docs.estimated_document_count():
            return  # a new database
        filled: list[UpdateOne] = []
        async for doc in self.history_docs.find({"key": {"$exists": False}},
                                                {"_id": 1, "shard": 1, "type": 1, "body": 1}):
            filled.append(UpdateOne({"_id": doc["_id"], "shard": doc["shard"]},
                                    {"$set": {"key": layout.sealing_key(doc["type"], doc["body"])}}))
            if len(filled) == 1000:
                await self.history_docs.bulk_write(filled, ordered=False)
                filled.clear()
        if filled:
            await self.history_docs.bulk_write(filled, ordered=False)

    async def open(self) -> None:
        """Run the self-check; refuse (UnsafeDeployment) on a problem unless accepted. If
        MongoDB does not answer yet, the server starts anyway (/readyz says why it is not
        ready) and the check runs on the first request that reaches it."""
        try:
            await self.ensure_safe(again=True)
        except _UNREACHABLE as exc:
            log.warning("mongodb unreachable at start-up", extra={"error": type(exc).__name__})
        except StaleIndex:
            raise
        except FhirError as exc:
            raise UnsafeDeployment(exc.issues[0].diagnostics) from None

    async def ensure_safe(self, again: bool = False) -> None:
        """The self-check, until it passes (or `again`); FhirError(BUSY) naming the problems
        it found."""
        if self.deployment is None or again:
            await self._inspect(again)
        if self._layout_unchecked and not _CHECKING_LAYOUT.get():
            await self._check_layout()

    async def _inspect(self, again: bool) -> None:
        seen = self._seen
        if (not again and seen is not None and seen.problems and not self.accept_unsafe
                and clock.now() - self._seen_at < timedelta(seconds=_RECHECK_SECONDS)):
            # Refused a moment ago: do not send the whole check again for every request.
            raise fail(Kind.BUSY, "transient", _unsafe(seen))
        found = await inspect(self.client, self.db, attempt_seconds=ATTEMPT_SECONDS)
        if found != self._seen:  # logged when it changes, not at each /readyz
            # The store sets its own concerns; the cluster's defaults are for the operator.
            log.info("mongodb deployment", extra={
                "topology": found.topology, "notes": found.notes, **found.default_concerns})
            if found.problems:
                log.error("mongodb deployment unsafe", extra={
                    "problems": found.problems, "served": self.accept_unsafe})
        self._seen, self._seen_at, self.deployment = found, clock.now(), None
        if found.problems and not self.accept_unsafe:
            raise fail(Kind.BUSY, "transient", _unsafe(found))
        self.deployment = found

    async def _check_layout(self) -> None:
        """StaleIndex unless the index was written under the blind index's layout (recorded
        in an empty store). Requests arriving meanwhile run a check each (it is idempotent):
        none is served on an index not checked yet."""
        checking = _CHECKING_LAYOUT.set(True)
        try:
            await index_layout.ensure(self, index_layout.layout_of(self.blind))
        except BaseException:
            self.deployment = None
            raise
        finally:
            _CHECKING_LAYOUT.reset(checking)
        self._layout_unchecked = False

    async def close(self) -> None:
        await self.client.close()

    async def check(self) -> None:
        """/readyz: the self-check again, so that a dropped index or a changed deployment
        shows."""
        try:
            await self.ensure_safe(again=True)
        except PyMongoError as exc:
            raise _unavailable(exc) from exc

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {"kind": "mongodb", "transactions": self.transactions}
        if self.deployment is None:
            status["note"] = "MongoDB has not answered yet, or its self-check failed."
            return status
        status.update(self.deployment.report())
        if not self.transactions:
            status["note"] = _NO_TRANSACTIONS
        return status

    # -- reads -------------------------------------------------------------------------------

    @_answering
    async def read(self, resource_type: str, id: str) -> Version | None:
        where = {"_id": layout.key(resource_type, id)}
        if resource_type == "Patient":  # its shard is known: a targeted read
            where["shard"] = where["_id"]
        doc = await self.resources.find_one(where, VERSION_FIELDS)
        return opened(self.codec, version_of(doc)) if doc else None

    @_answering
    async def vread(self, resource_type: str, id: str, version: int) -> Version | None:
        doc = await self.history_docs.find_one(
            {"_id": f"{layout.key(resource_type, id)}/{version}"}, VERSION_FIELDS)
        return opened(self.codec, version_of(doc)) if doc else None

    @_answering
    async def count(self, resource_type: str) -> int:
        return int(await self.resources.count_documents({"type": resource_type, "deleted": False}))

    @_answering
    async def outbox(self, prefix: str) -> list[tuple[str, bytes]]:
        found = self.outbox_docs.find({"_id": {"$regex": f"^{re.escape(prefix)}"}}, sort=[("_id", 1)])
        return opened_records(self.codec, [(doc["_id"], bytes(doc["body"])) async for doc in found])

    @_answering
    async def history(self, query: HistoryQuery) -> HistoryPage:
        where: dict[str, Any] = {}
        if query.resource_type is not None:
            where["type"] = query.resource_type
        if query.id is not None:
            where["id"] = query.id
        as_of = None
        if query.since is not None:
            # Only settled versions: a unit still running may commit versions stamped up to
            # SETTLE_SECONDS ago, which would land behind what this answer shows. The answer
            # says so (`as_of`: its Bundle's meta.lastUpdated, the client's next `_since`).
            settled = clock.now() - timedelta(seconds=SETTLE_SECONDS)
            as_of = clock.instant(settled)
            # On `lu`, which the history indexes hold: the scan is bounded at both ends.
            where["lu"] = {"$gte": _micros_of(query.since), "$lte": clock.micros(settled)}
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
        return opened_history(self.codec, HistoryPage(
            tuple(version_of(d) for d in page), next_seq=cursor, as_of=as_of))

    @_answering
    async def search(self, query: Query, cursor: str | None = None) -> SearchPage:
        return opened_page(self.codec,
                           await MongoSearch(self.resources, self.registry, blind=self.blind,
                                             opened=partial(opened, self.codec)).search(query, cursor))

    @_answering
    async def gather(self, queries: Sequence[Query]) -> list[Version]:
        return list(opened_versions(self.codec, await mongo_compartment.gather(self, queries)))

    @_answering
    async def erase(self, compartment: Sequence[Query], last: tuple[str, str],
                    unless_updated_since: datetime | None = None, *,
                    checkpoint: bool = True) -> Erasure:
        if unless_updated_since is None or not self.transactions:
            since = None if unless_updated_since is None else clock.micros(unless_updated_since)
            return await mongo_erase.remove(self, compartment, last, since)

        since = clock.micros(unless_updated_since)

        async def attempt() -> Erasure:
            # Before the transaction, so that its bound does not bound the scan (erase.py).
            found = await mongo_erase.survey(self, compartment, last[1], since)
            async with self.transaction() as unit:
                return await mongo_erase.remove(self, compartment, last, session=unit.session,
                                                found=found)

        return await self._attempts(attempt)

    async def erase_each(self, erasures: Sequence[Erase], *,
                         checkpoint: bool = True) -> list[Erasure | FhirError]:
        """One `erase` after the other: a conditional one is a transaction of its own, which
        MongoDB bounds (60 s of lifetime by default, `transactionLifetimeLimitSeconds`; here
        ATTEMPT_SECONDS), a record's some 120 resources at most; several records' in one
        would near that bound and write conflicts would abort them all."""
        outcomes: list[Erasure | FhirError] = []
        for erasure in erasures:
            try:
                outcomes.append(await self.erase(erasure.compartment, erasure.last,
                                                 erasure.unless_updated_since, checkpoint=checkpoint))
            except FhirError as error:  # its own transaction: the others' stand
                outcomes.append(error)
        return outcomes

    async def checkpoint(self) -> None:
        """Nothing to do: MongoDB has no write-ahead log the application controls. Its
        journal and checkpoints are the server's (WiredTiger's), and so is what an erased
        document leaves in its files until they are rewritten; the erased document is gone
        from every read at once (docs/backup-and-erasure.md)."""

    @asynccontextmanager
    async def checkpoints_deferred(self) -> AsyncIterator[None]:
        """Nothing deferred: `checkpoint` has nothing to do (above)."""
        yield

    async def dump(self, count: int = 1000) -> AsyncIterator[list[Version]]:
        await self.ensure_safe()
        async for versions in mongo_dump.dump(self, count):
            yield versions

    @_answering
    async def load(self, versions: Sequence[tuple[Version, Sequence[IndexEntry]]]) -> None:
        await mongo_dump.load(self, versions)

    async def loaded(self) -> None:
        """Nothing deferred: the collections' indexes are kept up by every load."""

    async def current(self, count: int = 1000) -> AsyncIterator[list[Version]]:
        await self.ensure_safe()
        async for versions in mongo_dump.current(self, count):
            yield versions

    @_answering
    async def reindex(self, versions: Sequence[tuple[Version, Sequence[IndexEntry]]]) -> int:
        return await mongo_dump.reindex(self, versions)

    @_answering
    async def rewrite_bodies(self, rewrite: Rewrite, after: str | None,
                             limit: int) -> tuple[int, str | None]:
        where: dict[str, Any] = {"body": {"$ne": None}}
        if after is not None:
            where["_id"] = {"$gt": after}
        docs = [doc async for doc in self.history_docs.find(
            where, {"_id": 1, "type": 1, "id": 1, "version": 1, "body": 1, "shard": 1},
            sort=[("_id", 1)], limit=limit)]
        rewritten = 0
        for doc in docs:
            new = rewrite(doc["type"], doc["id"], doc["version"], bytes(doc["body"]))
            if new is None:
                continue
            same = {"shard": doc["shard"], "body": doc["body"]}  # unless changed meanwhile
            await self.history_docs.update_one({"_id": doc["_id"], **same}, {
                "$set": {"body": new, "key": layout.sealing_key(doc["type"], new)}})
            await self.resources.update_one(  # the current version's copy
                {"_id": layout.key(doc["type"], doc["id"]), "version": doc["version"], **same},
                {"$set": {"body": new}})
            rewritten += 1
        return rewritten, docs[-1]["_id"] if len(docs) == limit else None

    # -- writes ------------------------------------------------------------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_MongoUnit]:
        try:
            await self.ensure_safe()
        except _UNREACHABLE as exc:
            raise _unavailable(exc) from exc
        if not self.transactions:
            raise fail(Kind.NOT_SUPPORTED, "not-supported", _NO_TRANSACTIONS)
        async with self.client.start_session() as session:
            await session.start_transaction(
                read_concern=ReadConcern("snapshot"), write_concern=DURABLE,
                read_preference=ReadPreference.PRIMARY,
                max_commit_time_ms=MAX_COMMIT_SECONDS * 1000)
            unit = _MongoUnit(self, session)
            try:
                # The driver's deadline for the whole attempt, from the unit's stamp on.
                with pymongo.timeout(ATTEMPT_SECONDS):
                    yield unit
                    await unit.flush()
                    unit.check_time()
                    await _commit(session, unit)
            except BaseException as exc:
                # Ending the session (leaving `start_session`) aborts a transaction still
                # open: outside the attempt's (maybe spent) deadline, and in this task, so no
                # abort outlives the session (a shielded one did, on cancellation).
                translated = _translated(exc, unit)
                if translated is exc:
                    raise
                raise translated from exc

    @_answering
    async def commit(self, operations: Sequence[Operation]) -> list[Result]:
        async def attempt() -> list[Result]:
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

        return await self._attempts(attempt)

    async def _attempts(self, attempt: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """`attempt` run again (after RETRY_DELAYS) while it loses to concurrent writers."""
        for delay in RETRY_DELAYS:
            await asyncio.sleep(delay)
            try:
                return await attempt()
            except TransientConflict:
                continue
        raise fail(Kind.BUSY, "transient", "Too many concurrent writes to the same resources; "
                   "retry later.")


def _unsafe(found: Deployment) -> str:
    return ("The MongoDB deployment is not safe to serve: " + "; ".join(found.problems)
            + ". Fix it, or set FHIR_SERVER_ACCEPT_UNSAFE_STORE=true to serve anyway.")


def _code_name(exc: PyMongoError) -> str | None:
    details = getattr(exc, "details", None)
    return details.get("codeName") if isinstance(details, dict) else None


def _translated(exc: BaseException, unit: _MongoUnit) -> BaseException:
    """What a failed unit tells its caller: run me again (TransientConflict) only when
    another attempt can succeed; for every other driver error an OperationOutcome, 503 only
    where a later try can succeed (unreachable, timed out, labelled retryable)."""
    if not isinstance(exc, PyMongoError):
        return exc
    if _code_name(exc) in _TOO_BIG_FOR_A_TRANSACTION:
        return _too_costly(f"MongoDB gave up the transaction ({_code_name(exc)})")
    if exc.has_error_label(_TRANSIENT) or exc.timeout:
        unit.check_time()  # one that ran too long would only run too long again
    if exc.has_error_label(_TRANSIENT):
        return TransientConflict(str(exc))
    if isinstance(exc, _UNREACHABLE) or exc.has_error_label(_RETRYABLE_WRITE):
        return _unavailable(exc)
    # Deterministic: the same unit would fail the same way, so "retry later" would be a lie.
    return incident(log)


async def _commit(session: AsyncClientSession, unit: _MongoUnit) -> None:
    """Commit within MAX_COMMIT_SECONDS (and the attempt's deadline), sending the commit again
    while its outcome is unknown (a commit is idempotent), never past that bound."""
    began = clock.now()
    with pymongo.timeout(MAX_COMMIT_SECONDS):
        for delay in RETRY_DELAYS:
            await asyncio.sleep(delay)
            try:
                await session.commit_transaction()
                return
            except PyMongoError as exc:
                if not exc.has_error_label(_UNKNOWN_COMMIT) or exc.has_error_label(_TRANSIENT):
                    raise
                unknown = exc
            # The driver's deadline ends the commit; this ends the loop on the same bounds.
            if (unit.spent() > ATTEMPT_SECONDS
                    or (clock.now() - began).total_seconds() > MAX_COMMIT_SECONDS):
                break
    raise _outcome_unknown(unknown)


def _outcome_unknown(exc: PyMongoError) -> FhirError:
    return fail(Kind.BUSY, "transient", "MongoDB did not confirm the commit "
                f"({_code_name(exc) or type(exc).__name__}): the changes may or may not have "
                "been stored. Read the resources to find out before sending them again.")


def _micros_of(instant: str) -> int:
    """`lu` of a stored UTC instant (`2024-01-31T10:00:00.000000Z`)."""
    return clock.micros(datetime.fromisoformat(instant.replace("Z", "+00:00")))


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


def _duplicate(exc: PyMongoError) -> bool:
    if isinstance(exc, DuplicateKeyError):
        return True
    errors = exc.details.get("writeErrors", []) if isinstance(exc, BulkWriteError) else []
    return any(error.get("code") == 11000 for error in errors)


@dataclass
class _Writes:
    """Writes of a unit not sent yet: one bulk write per collection when flushed."""

    resources: list[InsertOne[Any] | ReplaceOne[Any]] = field(default_factory=list)
    replaced: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    guards: list[UpdateOne] = field(default_factory=list)
    fences: set[str] = field(default_factory=set)  # patients whose compartment fence is bumped


# `ref` too: the compartments a write adds the resource to (layout.members_of).
_CURRENT_FIELDS = {"type": 1, "id": 1, "version": 1, "deleted": 1, "pk": 1, "shard": 1, "ref": 1}


class _MongoUnit:
    """One unit of work: inside `session`'s transaction, or (standalone) write by write."""

    def __init__(self, store: MongoStore, session: AsyncClientSession | None) -> None:
        self.store = store
        self.session = session
        self.search = MongoSearch(store.resources, store.registry, session, store.blind,
                                  partial(opened, store.codec))
        self.started = clock.now()
        self.last_updated, self.micros = clock.instant_and_micros()
        self._claims: list[str] = []
        # Resource key -> its current state as this unit sees it (None: does not exist).
        self._current: dict[str, dict[str, Any] | None] = {}
        self._writes = _Writes()
        self._operations = 0
        self._documents = 0  # document writes queued or sent
        self._prepared: Prepared = {}  # the compartments of the writes of `apply` (bodies.prepare)
        self._bytes = 0
        deployment = store.deployment
        self._max_document = (deployment.max_document_size if deployment
                              else DEFAULT_MAX_DOCUMENT_SIZE)

    def spent(self) -> float:
        """Seconds since the unit stamped its versions."""
        return (clock.now() - self.started).total_seconds()

    def check_time(self) -> None:
        """Refuse (no new attempt) a unit that ran past ATTEMPT_SECONDS."""
        spent = self.spent()
        if spent > ATTEMPT_SECONDS:
            raise _too_costly(f"The transaction ran {spent:.0f} s, more than this server's "
                              f"{ATTEMPT_SECONDS} s per MongoDB transaction")

    def count_writes(self, documents: int) -> None:
        """Count document writes; refuse a unit over MAX_DOCUMENT_WRITES."""
        self._documents += documents
        if self._documents > MAX_DOCUMENT_WRITES:
            raise _too_costly(f"The transaction writes more than {MAX_DOCUMENT_WRITES} "
                              "documents, this server's limit per MongoDB transaction (a "
                              "resource version writes 2 or 3)")

    async def apply(self, operations: Sequence[Operation]) -> list[Result]:
        self._operations += len(operations)
        if self._operations > MAX_OPERATIONS:
            raise _too_costly(f"The transaction has {self._operations} operations, more than "
                              f"this server's limit of {MAX_OPERATIONS} per MongoDB transaction")
        await self._look_up([(op.resource_type, op.id, _shard_of(op)) for op in operations
                             if isinstance(op, (Write, Delete))])
        self._prepared = prepare(self.store.codec, self.store.registry, operations)
        results: list[Result] = []
        for index, op in enumerate(operations):
            try:
                results.append(await self._apply(op))
            except FhirError as error:
                raise OperationFailed.at(index, error) from None
        await self.flush()
        return results

    async def match_ids(self, query: Query, limit: int | None = None) -> list[str]:
        await self.flush()  # the search sees this unit's writes
        await self._claim(query)
        return await self.search.match_ids(query, limit)

    async def _apply(self, op: Operation) -> Result:
        match op:
            case Write():
                return self.write(op)
            case Delete():
                return self.delete(op.resource_type, op.id, op.if_match)
            case ConditionalCreate():
                found = await self.match_ids(op.query, 2)
                if not found:
                    await self._look_up([(op.write.resource_type, op.write.id, _shard_of(op.write))])
                    return self.write(op.write)
                if len(found) > 1:
                    raise _ambiguous(op.query)
                what = layout.key(op.write.resource_type, found[0])
                current = await self.store.resources.find_one(
                    {"_id": what, "shard": await self._shard(op.write.resource_type, found[0])},
                    VERSION_FIELDS, session=self.session)
                assert current is not None
                return Result("matched", (opened(self.store.codec, version_of(current)),))
            case ConditionalUpdate():
                found = await self.match_ids(op.query, 2)
                if len(found) > 1:
                    raise _ambiguous(op.query)
                write = op.write if not found else replace(op.write, id=found[0])
                if found and op.id_given and op.write.id != found[0]:
                    raise fail(Kind.INVALID, "invalid",
                               f"The resource id '{op.write.id}' differs from the id of the "
                               "resource matching the condition.",
                               expression=f"{op.write.resource_type}.id",
                               details_code="MSG_RESOURCE_ID_MISMATCH")
                await self._look_up([(write.resource_type, write.id, _shard_of(write))])
                return self.write(write)
            case ConditionalDelete():
                await self.flush()
                found = await self.search.match_ids(op.query, None)
                if len(found) > 1 and not op.multiple:
                    raise _ambiguous(op.query)
                resource_type = op.query.resource_type or ""
                await self._look_up([(resource_type, id, None) for id in found])
                versions: list[Version] = []
                for id in found:
                    versions.extend(self.delete(resource_type, id, None).versions)
                return Result("deleted" if versions else "none", tuple(versions))
            case Outbox():
                for key, body in op.expect:
                    doc = await self.store.outbox_docs.find_one({"_id": key}, session=self.session)
                    found = doc and opened_records(self.store.codec, [(key, bytes(doc["body"]))])[0][1]
                    if found != body:
                        raise outbox_changed(key)
                self.count_writes(len(op.put) + (1 if op.remove else 0))
                # One round trip for the records kept and those done with.
                writes: list[ReplaceOne[Any] | DeleteMany] = [
                    ReplaceOne({"_id": key}, {"_id": key, "body": body}, upsert=True)
                    for key, body in sealed_records(self.store.codec, op.put)]
                if op.remove:
                    writes.append(DeleteMany({"_id": {"$in": list(op.remove)}}))
                if writes:
                    await self.store.outbox_docs.bulk_write(writes, session=self.session)
                return Result("none")
        raise TypeError(f"unknown operation {op!r}")

    # -- look-ups ----------------------------------------------------------------------------

    async def _look_up(self, wanted: Sequence[tuple[str, str, str | None]]) -> None:
        """Learn the current state of the resources `wanted` names (type, id, the shard it
        would have), in as few queries as the cluster allows, each carrying the shard key:
        first where each would live; for those not found there, their guard tells whether
        and where they live."""
        keys = {layout.key(t, i): shard for t, i, shard in wanted}
        keys = {k: shard for k, shard in keys.items() if k not in self._current}
        if not keys:
            return
        shards = {shard for shard in keys.values() if shard is not None}
        if shards:
            await self._fetch([k for k, shard in keys.items() if shard is not None], shards)
        missed = [k for k in keys if k not in self._current]
        if not missed:
            return
        guards = self.store.guards.find({"_id": {"$in": missed}}, session=self.session)
        elsewhere = {doc["_id"]: doc["shard"] async for doc in guards}
        if elsewhere:
            await self._fetch(list(elsewhere), set(elsewhere.values()))
        for k in missed:
            self._current.setdefault(k, None)

    async def _fetch(self, keys: list[str], shards: set[str]) -> None:
        found = self.store.resources.find(
            {"_id": {"$in": keys}, "shard": {"$in": sorted(shards)}}, _CURRENT_FIELDS,
            session=self.session)
        async for doc in found:
            self._current[doc["_id"]] = doc

    async def _shard(self, resource_type: str, id: str) -> str:
        await self._look_up([(resource_type, id, None)])
        current = self._current[layout.key(resource_type, id)]
        assert current is not None
        return str(current["shard"])

    # -- claims ------------------------------------------------------------------------------

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
            self.count_writes(1)
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

    # -- writes ------------------------------------------------------------------------------

    def _queue(self, current: dict[str, Any] | None, doc: dict[str, Any]) -> None:
        """Queue the resource document, its history document and its guard.

        The resource document is replaced only if it still holds the version read, a history
        document's id names its version, and a create writes the guard of its key: a
        concurrent writer of the same resource, in any compartment, makes this unit lose (in
        a transaction the server reports the conflict on the guard itself). A write that puts
        the resource in a patient's compartment it was not in (a create, or an update adding
        a compartment reference: `subject` where only `focus` named the patient) bumps that
        compartment's fence, so that a conditional erasure of it conflicts with the write
        (erase.py). The bump goes in the guards' bulk write, which a create sends anyway; an
        update joining a compartment without moving (rare) sends one for it. Any other write
        (an update, leaving a compartment, a deletion) conflicts with the erasure's delete of
        the member's document, or touches no member.
        """
        size = len(bson.encode(doc))
        if size > self._max_document:
            raise _too_large_document()
        guarded = current is None or current["shard"] != doc["shard"]
        self.count_writes(3 if guarded else 2)
        self._bytes += 2 * size  # the resource and its history document
        if self._bytes > MAX_UNIT_BYTES:
            raise _too_costly(f"The transaction writes more than this server's limit of "
                              f"{MAX_UNIT_BYTES // (1024 * 1024)} MiB per MongoDB transaction")
        writes, key, shard = self._writes, doc["_id"], doc["shard"]
        if self.session is not None:
            codes = self.store.registry.patient_compartment(doc["type"])
            joined = layout.members_of(doc, codes) - layout.members_of(current, codes)
            fences = joined - writes.fences
            self.count_writes(len(fences))
            writes.fences |= fences
        if guarded:  # new, or moved to another shard
            # Upserted, not inserted: a guard left by a standalone writer that crashed
            # before its resource was stored must not block the id for ever.
            writes.guards.append(UpdateOne({"_id": key}, {"$set": {"shard": shard}}, upsert=True))
        if current is None:
            writes.resources.append(InsertOne(doc))
        else:
            # The full current shard key in the filter lets a sharded cluster move the
            # document when its compartment changes.
            writes.resources.append(ReplaceOne(
                {"_id": key, "shard": current["shard"], "version": current["version"]}, doc))
            writes.replaced += 1
        writes.history.append(layout.history_document(
            resource_type=doc["type"], id=doc["id"], version=doc["version"],
            last_updated=doc["lastUpdated"], lu=doc["lu"], seq=ObjectId(),
            method=doc["method"], body=doc["body"], shard=shard))
        self._current[key] = {k: doc[k] for k in _CURRENT_FIELDS if k in doc}

    async def flush(self) -> None:
        """Send the queued writes: one ordered bulk write per collection."""
        writes, self._writes = self._writes, _Writes()
        session = self.session
        try:
            guards = [*(mongo_erase.fence(p) for p in sorted(writes.fences)), *writes.guards]
            if guards:
                await self.store.guards.bulk_write(guards, session=session)
            if writes.resources:
                done = await self.store.resources.bulk_write(writes.resources, session=session)
                if done.matched_count != writes.replaced:
                    raise TransientConflict("a resource changed while being written")
            if writes.history:
                await self.store.history_docs.insert_many(writes.history, session=session)
        except PyMongoError as exc:
            if _duplicate(exc):
                raise TransientConflict("a resource was written concurrently") from None
            raise

    def write(self, op: Write) -> Result:
        what = layout.key(op.resource_type, op.id)
        current = self._current[what]
        if op.create_only and current is not None:
            raise fail(Kind.CONFLICT, "duplicate", f"{what} already exists.")
        if op.if_match is not None and (
                current is None or current["version"] != op.if_match or current["deleted"]):
            raise _version_conflict(op.if_match, what)
        version = 1 if current is None else current["version"] + 1
        body = stamp(op.resource, op.id, version, self.last_updated)
        stored_body = sealed(self.store.codec, self.store.registry, op, version, body, self._prepared)
        doc = layout.resource_document(
            resource_type=op.resource_type, id=op.id,
            pk=current["pk"] if current else ObjectId(), version=version,
            last_updated=self.last_updated, lu=self.micros, method=op.method, body=stored_body,
            shard=_shard_of(op), entries=op.entries, blind=self.store.blind)
        self._queue(current, doc)
        stored = Version(op.resource_type, op.id, version, self.last_updated, op.method, body)
        created = current is None or current["deleted"]
        return Result("created" if created else "updated", (stored,))

    def delete(self, resource_type: str, id: str, if_match: int | None) -> Result:
        what = layout.key(resource_type, id)
        current = self._current[what]
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
        self._queue(current, doc)
        return Result("deleted", (Version(resource_type, id, version, self.last_updated,
                                          "DELETE", None),))


def _shard_of(op: Write | Delete) -> str | None:
    """Where the resource a write leaves lives; unknown for a deletion."""
    if isinstance(op, Delete):
        return None
    return layout.shard_key(op.resource_type, op.id, op.entries)
