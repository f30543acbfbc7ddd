"""A Store that keeps the audit trail apart: AuditEvents in their own store, the rest in the
main one. The audit store has its own retention and can be locked down on its own, and the
clinical store is untouched by the audit records of requests that fail."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import Any, cast

from ..model.errors import FhirError
from ..search import IndexEntry, Query
from .schedule import Schedule, Scheduling
from .base import (
    ConditionalCreate,
    ConditionalDelete,
    ConditionalUpdate,
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
)

AUDIT_TYPE = "AuditEvent"


def _type_of(operation: Operation) -> str | None:
    if isinstance(operation, Outbox):
        return None  # kept with the clinical writes it stands beside
    if isinstance(operation, (ConditionalCreate, ConditionalUpdate)):
        return operation.write.resource_type
    if isinstance(operation, ConditionalDelete):
        return operation.query.resource_type
    return operation.resource_type


class RoutingStore:
    """`main` for every type but AuditEvent, which lives in `audit`."""

    def __init__(self, main: Store, audit: Store) -> None:
        self.main = main
        self.audit = audit
        self.jobs = main.jobs

    def _for(self, resource_type: str | None) -> Store:
        return self.audit if resource_type == AUDIT_TYPE else self.main

    async def migrate(self) -> None:
        await self.main.migrate()
        await self.audit.migrate()

    async def open(self) -> None:
        await self.main.open()
        await self.audit.open()

    async def close(self) -> None:
        await self.main.close()
        await self.audit.close()

    async def check(self) -> None:
        await self.main.check()
        await self.audit.check()

    def status(self) -> dict[str, Any]:
        return {**self.main.status(), "audit": self.audit.status()}

    async def read(self, resource_type: str, id: str) -> Version | None:
        return await self._for(resource_type).read(resource_type, id)

    async def vread(self, resource_type: str, id: str, version: int) -> Version | None:
        return await self._for(resource_type).vread(resource_type, id, version)

    async def count(self, resource_type: str) -> int:
        return await self._for(resource_type).count(resource_type)

    async def history(self, query: HistoryQuery) -> HistoryPage:
        return await self._for(query.resource_type).history(query)

    async def search(self, query: Query, cursor: str | None = None) -> SearchPage:
        return await self._for(query.resource_type).search(query, cursor)

    async def gather(self, queries: Sequence[Query]) -> list[Version]:
        audit = [query for query in queries if query.resource_type == AUDIT_TYPE]
        others = [query for query in queries if query.resource_type != AUDIT_TYPE]
        return [*(await self.main.gather(others) if others else []),
                *(await self.audit.gather(audit) if audit else [])]

    async def outbox(self, prefix: str) -> list[tuple[str, bytes]]:
        return await self.main.outbox(prefix)

    @property
    def schedule(self) -> Schedule:
        """The clinical store's schedule (store/schedule.py)."""
        return cast(Scheduling, self.main).schedule

    async def erase(self, compartment: Sequence[Query], last: tuple[str, str],
                    unless_updated_since: datetime | None = None, *,
                    checkpoint: bool = True) -> Erasure:
        # The audit store is never erased: its hash chain covers every AuditEvent, whose
        # personal details shred with the patient's key instead (docs/backup-and-erasure.md).
        return await self.main.erase(compartment, last, unless_updated_since, checkpoint=checkpoint)

    async def erase_each(self, erasures: Sequence[Erase], *,
                         checkpoint: bool = True) -> list[Erasure | FhirError]:
        return await self.main.erase_each(erasures, checkpoint=checkpoint)

    async def checkpoint(self) -> None:
        await self.main.checkpoint()  # the store erasures remove from

    def checkpoints_deferred(self) -> AbstractAsyncContextManager[None]:
        return self.main.checkpoints_deferred()

    def dump(self, count: int = 1000) -> AsyncIterator[list[Version]]:
        return self.main.dump(count)

    async def load(self, versions: Sequence[tuple[Version, Sequence[IndexEntry]]]) -> None:
        await self.main.load(versions)

    async def loaded(self) -> None:
        await self.main.loaded()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[UnitOfWork]:
        # Transactions are clinical: AuditEvents are written by the recorder only.
        async with self.main.transaction() as unit:
            yield unit

    async def commit(self, operations: Sequence[Operation]) -> list[Result]:
        audit = [op for op in operations if _type_of(op) == AUDIT_TYPE]
        if audit and len(audit) != len(operations):
            raise ValueError("AuditEvents are committed on their own")
        return await (self.audit if audit else self.main).commit(operations)
