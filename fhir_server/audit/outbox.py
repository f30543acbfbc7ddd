"""The audit record of a write, kept with the write itself (a transactional outbox).

The clinical and audit stores are separate databases, so no single commit covers a write
and its AuditEvent. Instead, every unit of work a request commits to the clinical store also
keeps, as an outbox record, the AuditEvents the request would leave if it ended there (the
same events, built from what it has read and is writing): durable in the same step as the
write. Once the request's own events are durable in the audit trail, its records are done
with; they are removed by the next unit of work of the same process (no commit of its own).
A record whose process died is turned into AuditEvents by `AuditRecorder.recover` at the
next start, unless the request's events are already in the trail.

Record keys are `audit/<recorder>/<request id>/<n>`; a request's events have ids `<request
id>`, `<request id>-2`, ...: so recovery knows whether a request was recorded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import Any, cast

import orjson

from ..model.errors import FhirError
from ..model.ids import new_id
from ..search import Query, Registry, default_registry
from ..store.base import (
    ConditionalCreate,
    ConditionalUpdate,
    Delete,
    Erase,
    Erasure,
    HistoryPage,
    HistoryQuery,
    Operation,
    Outbox,
    Result,
    SearchPage,
    Store,
    UnitOfWork,
    Version,
    Write,
)
from ..store.schedule import Schedule, Scheduling
from .trail import Trail, owners_of

PREFIX = "audit/"
Event = dict[str, Any]


def event_ids(request_id: str, count: int) -> list[str]:
    """The ids of a request's AuditEvents: the first is the request's id."""
    return [request_id, *(f"{request_id}-{n}" for n in range(2, count + 1))]


def request_of(key: str) -> str:
    """The request id of an outbox record key."""
    return key.split("/")[2]


class Settled:
    """Outbox records whose events are durable in the trail, waiting to be removed by the
    next unit of work of this process."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def take(self) -> tuple[str, ...]:
        keys, self.keys = tuple(self.keys), []
        return keys

    def give_back(self, keys: Sequence[str]) -> None:
        self.keys.extend(keys)


class Intent:
    """One request's audit record, as its units of work keep it."""

    def __init__(self, owner: str, events: Callable[[Trail], list[Event]]) -> None:
        self.request_id = new_id()
        self.keys: list[str] = []
        self._owner = owner
        self._events = events

    def put(self, registry: Registry, trail: Trail,
            operations: Sequence[Operation]) -> tuple[str, bytes]:
        """The record of the request so far, with `operations` written."""
        written = Trail(dict(trail.owners), set(trail.asked))
        for operation in operations:
            if isinstance(operation, (ConditionalCreate, ConditionalUpdate)):
                operation = operation.write
            if isinstance(operation, Write):
                written.owners.setdefault(f"{operation.resource_type}/{operation.id}", owners_of(
                    registry, operation.resource_type, operation.id, operation.entries))
            elif isinstance(operation, Delete):
                written.owners.setdefault(f"{operation.resource_type}/{operation.id}", frozenset())
        events = self._events(written)
        key = f"{PREFIX}{self._owner}/{self.request_id}/{len(self.keys) + 1}"
        self.keys.append(key)
        body = [{**event, "id": id} for event, id in
                zip(events, event_ids(self.request_id, len(events)), strict=True)]
        return key, orjson.dumps(body)


class AuditedStore:
    """The clinical store as one request sees it: each unit of work it commits also keeps the
    request's audit record (and removes records settled earlier). Reads pass through."""

    def __init__(self, inner: Store, trail: Trail, intent: Intent, settled: Settled) -> None:
        self.inner = inner
        self.jobs = inner.jobs  # jobs are no unit of work of the request's
        self.trail = trail
        self.intent = intent
        self.settled = settled

    def _outbox(self, operations: Sequence[Operation]) -> Outbox | None:
        """The outbox operation of a unit of work; None where the store cannot keep it in
        the same unit (a standalone MongoDB server, without transactions)."""
        if not self.inner.status().get("transactions", True):
            return None
        return Outbox(put=(self.intent.put(default_registry(), self.trail, operations),),
                      remove=self.settled.take())

    async def commit(self, operations: Sequence[Operation]) -> list[Result]:
        outbox = self._outbox(operations)
        if outbox is None:
            return await self.inner.commit(operations)
        try:
            results = await self.inner.commit([*operations, outbox])
        except BaseException:
            self.settled.give_back(outbox.remove)
            raise
        return results[:-1]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[UnitOfWork]:
        async with self.inner.transaction() as unit:
            recording = _RecordingUnit(unit)
            yield recording
            outbox = self._outbox(recording.applied)
            if outbox is None:
                return
            try:
                await unit.apply([outbox])
            except BaseException:
                self.settled.give_back(outbox.remove)
                raise

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def check(self) -> None:
        await self.inner.check()

    def status(self) -> dict[str, Any]:
        return self.inner.status()

    async def read(self, resource_type: str, id: str) -> Version | None:
        return await self.inner.read(resource_type, id)

    async def vread(self, resource_type: str, id: str, version: int) -> Version | None:
        return await self.inner.vread(resource_type, id, version)

    async def history(self, query: HistoryQuery) -> HistoryPage:
        return await self.inner.history(query)

    async def search(self, query: Query, cursor: str | None = None) -> SearchPage:
        return await self.inner.search(query, cursor)

    async def gather(self, queries: Sequence[Query]) -> list[Version]:
        return await self.inner.gather(queries)

    async def count(self, resource_type: str) -> int:
        return await self.inner.count(resource_type)

    async def outbox(self, prefix: str) -> list[tuple[str, bytes]]:
        return await self.inner.outbox(prefix)

    @property
    def schedule(self) -> Schedule:
        """The inner store's schedule (store/schedule.py): notices are not audited writes."""
        return cast(Scheduling, self.inner).schedule

    async def erase(self, compartment: Sequence[Query], last: tuple[str, str],
                    unless_updated_since: datetime | None = None, *,
                    checkpoint: bool = True) -> Erasure:
        # No outbox record: the erasure's AuditEvent is recorded by services/erase.py, and
        # its erasure ledger entry is written before it.
        return await self.inner.erase(compartment, last, unless_updated_since, checkpoint=checkpoint)

    async def erase_each(self, erasures: Sequence[Erase], *,
                         checkpoint: bool = True) -> list[Erasure | FhirError]:
        return await self.inner.erase_each(erasures, checkpoint=checkpoint)

    async def checkpoint(self) -> None:
        await self.inner.checkpoint()

    def checkpoints_deferred(self) -> AbstractAsyncContextManager[None]:
        return self.inner.checkpoints_deferred()


class _RecordingUnit:
    """A unit of work that remembers what was applied through it."""

    def __init__(self, unit: UnitOfWork) -> None:
        self.unit = unit
        self.applied: list[Operation] = []

    async def apply(self, operations: Sequence[Operation]) -> list[Result]:
        results = await self.unit.apply(operations)
        self.applied.extend(operations)
        return results

    async def match_ids(self, query: Query, limit: int | None = None) -> list[str]:
        return await self.unit.match_ids(query, limit)
