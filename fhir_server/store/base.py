"""The Store port: what services need from storage, and the value types it trades in.

A store keeps every version of every resource, applies writes given as data (`Write`,
`Delete` and their conditional forms) atomically in one unit of work, and answers reads,
history and searches. It assigns `meta.versionId` and `meta.lastUpdated` itself, inside the
unit of work, so concurrent writers cannot produce the same version. It never sees HTTP,
principals or access rules: services hand it resources, index entries and Query ASTs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from ..model.errors import FhirError, Kind, fail
from ..search import IndexEntry, Query
from .jobs import Jobs

Method = Literal["POST", "PUT", "PATCH", "DELETE"]


@dataclass(frozen=True, slots=True)
class Version:
    """One stored version of a resource; `body` is None for a deletion."""

    resource_type: str
    id: str
    version: int
    last_updated: str
    method: Method
    body: bytes | None

    @property
    def deleted(self) -> bool:
        return self.body is None


@dataclass(frozen=True, slots=True)
class Write:
    """Create or update `resource_type/id` with `resource` (meta is stamped by the store).

    `if_match`: the version that must be current, else PRECONDITION_FAILED.
    `create_only`: fail with CONFLICT if the id is already taken (server-assigned ids).
    """

    resource_type: str
    id: str
    resource: dict[str, Any]
    entries: Sequence[IndexEntry]
    method: Method = "PUT"
    if_match: int | None = None
    create_only: bool = False


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete `resource_type/id`; a missing or already deleted resource is not an error."""

    resource_type: str
    id: str
    if_match: int | None = None


@dataclass(frozen=True, slots=True)
class ConditionalCreate:
    """Apply `write` unless `query` matches: one match is returned, several fail (412)."""

    query: Query
    write: Write


@dataclass(frozen=True, slots=True)
class ConditionalUpdate:
    """Update the one resource `query` matches, or create `write` when none does.

    `id_given`: the body named an id, which must then equal the match's id.
    """

    query: Query
    write: Write
    id_given: bool


@dataclass(frozen=True, slots=True)
class ConditionalDelete:
    """Delete what `query` matches; several matches need `multiple`, else 412."""

    query: Query
    multiple: bool


@dataclass(frozen=True, slots=True)
class Outbox:
    """Records kept beside a unit of work's writes, durable with them, for a step outside the
    store to finish once they are (the audit trail's record of a write until its AuditEvent
    is stored: audit/outbox.py): `put` adds records by key (replacing one of the same key),
    `remove` deletes records that step is done with (missing ones are no error); `expect`
    first checks that each key holds that body (None: no record), else PRECONDITION_FAILED:
    a compare-and-set, for leases and counters (subscriptions/)."""

    put: tuple[tuple[str, bytes], ...] = ()
    remove: tuple[str, ...] = ()
    expect: tuple[tuple[str, bytes | None], ...] = ()


Operation = Write | Delete | ConditionalCreate | ConditionalUpdate | ConditionalDelete | Outbox

Outcome = Literal["created", "updated", "deleted", "unchanged", "matched", "none"]


def outbox_changed(key: str) -> FhirError:
    """The failure of an `Outbox.expect` that does not hold."""
    return fail(Kind.PRECONDITION_FAILED, "conflict", f"The outbox record {key} changed.")


@dataclass(frozen=True, slots=True)
class Result:
    """What one operation did; `versions` holds the versions written or matched."""

    outcome: Outcome
    versions: tuple[Version, ...] = ()

    @property
    def version(self) -> Version | None:
        return self.versions[0] if self.versions else None


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """A history request: system level (no type), type level, or instance level (type and id)."""

    resource_type: str | None = None
    id: str | None = None
    since: str | None = None  # FHIR instant, inclusive
    count: int = 20
    before_seq: int | None = None  # keyset cursor: only entries older than this


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Newest first; `next_seq` is the cursor of the following page, None at the end."""

    versions: tuple[Version, ...]
    next_seq: int | None
    total: int | None = None
    # The instant up to which the answer lists every version, when that is before now (a
    # MongoDB `_since` answer lists only settled versions): the client's next `_since`.
    as_of: str | None = None


@dataclass(frozen=True, slots=True)
class SearchPage:
    """One page of matches, plus included resources and the cursor of the next page."""

    matches: tuple[Version, ...]
    included: tuple[Version, ...] = ()
    next_cursor: str | None = None
    prev_cursor: str | None = None
    total: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Erasure:
    """What `Store.erase` removed, by resource type: resources, and versions (every one, the
    deletions included)."""

    resources: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Erase:
    """One patient's erasure, as `Store.erase` takes it: the compartment's queries, the
    Patient removed last, and the condition instant if any."""

    compartment: Sequence[Query]
    last: tuple[str, str]
    unless_updated_since: datetime | None = None


class TransientConflict(Exception):
    """A unit of work lost a race with a concurrent one and was rolled back; running it again
    may succeed. `Store.commit` retries by itself; callers of `Store.transaction` retry
    their block (see `RETRY_DELAYS`)."""


@dataclass(eq=False)
class OperationFailed(FhirError):
    """The FhirError of `operations[index]`, raised by `UnitOfWork.apply` and `Store.commit`
    so that a caller can tell its client which of its requests failed (a Bundle entry)."""

    index: int = 0

    @classmethod
    def at(cls, index: int, error: FhirError) -> OperationFailed:
        return cls(error.kind, error.issues, index)


# Seconds to wait before each new attempt of a unit of work that lost a race.
RETRY_DELAYS = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.5, 1.0, 1.0)


class UnitOfWork(Protocol):
    """An open write transaction: what it applies becomes visible to others only on commit.

    Conditional logic that must not race (a transaction Bundle's conditional creates and
    references) runs through it, under the store's write lock.
    """

    async def apply(self, operations: Sequence[Operation]) -> list[Result]:
        """Apply `operations` in order, in one call (one trip to the store, however many).

        Raises OperationFailed (a FhirError) naming the operation that failed.
        """

    async def match_ids(self, query: Query, limit: int | None = None) -> list[str]:
        """Ids of current resources matching `query`, this transaction's writes included."""


class Store(Protocol):
    """Storage of versioned FHIR resources. Every method is safe to call concurrently."""

    jobs: Jobs  # asynchronous jobs and their files (store/jobs.py)

    async def migrate(self) -> None:
        """Create or update the schema and indexes (`fhir-server migrate`, idempotent); slow
        work such as index builds happens here, before serving, never in a request."""

    async def open(self) -> None:
        """Connect and check that the store can serve; SQLite also migrates its schema."""

    async def close(self) -> None:
        """Release connections; pending writes have already committed or rolled back."""

    async def check(self) -> None:
        """Raise FhirError(BUSY) if the store cannot serve requests now (for /readyz)."""

    def status(self) -> dict[str, Any]:
        """What /readyz reports about the store: its kind and what it can do."""

    async def read(self, resource_type: str, id: str) -> Version | None:
        """The current version (a deletion if the resource is deleted), or None if never existed."""

    async def vread(self, resource_type: str, id: str, version: int) -> Version | None:
        """One version, or None if it does not exist."""

    def transaction(self) -> AbstractAsyncContextManager[UnitOfWork]:
        """Open a unit of work; it commits when the block ends and rolls back on any exception.

        Raises FhirError(NOT_SUPPORTED) where the store cannot run multi-resource
        transactions, and TransientConflict when the unit lost a race.
        """

    async def commit(self, operations: Sequence[Operation]) -> list[Result]:
        """Apply `operations` atomically, in order, in one unit of work.

        Raises FhirError (PRECONDITION_FAILED on a version mismatch or ambiguous condition,
        CONFLICT when a create-only id exists, INVALID on an id mismatch: an OperationFailed
        naming the operation; BUSY if the store is locked too long); then nothing of the
        unit is stored.
        """

    async def history(self, query: HistoryQuery) -> HistoryPage:
        """Versions newest first, deletions included."""

    async def search(self, query: Query, cursor: str | None = None) -> SearchPage:
        """Resources matching `query`, one page, with `_include`/`_revinclude` results.

        `cursor` is a page's `next_cursor` or `prev_cursor`; a malformed one is INVALID.
        """

    async def gather(self, queries: Sequence[Query]) -> list[Version]:
        """Every current resource that one of `queries` (each of one type, no paging)
        matches, each once, in one read: a patient's compartment at once (one query per
        type, most of them empty), where a search per query costs a round trip each."""

    async def count(self, resource_type: str) -> int:
        """Number of current (not deleted) resources of a type."""

    async def outbox(self, prefix: str) -> list[tuple[str, bytes]]:
        """The outbox records whose key starts with `prefix`, by key."""

    async def erase(self, compartment: Sequence[Query], last: tuple[str, str],
                    unless_updated_since: datetime | None = None, *,
                    checkpoint: bool = True) -> Erasure:
        """Remove for good every version and index entry of the resources each query of
        `compartment` matches (one query per type), of the deleted resources of those types
        whose last stored version matched it, and of `last` (a Patient), removed after the
        others, so that an erasure cut short is finished by running it again. Nothing
        removed can be read again; what was never there is no error (store/erasure.py).

        Conditional (`unless_updated_since`): CONFLICT, and nothing removed, if a current
        resource `compartment` matches was created or updated at that instant or later
        (`_lastUpdated`), checked in the same transaction as the removal, so that no write
        lands between the check and the removal (store/erasure.py `updated_since`).

        The store's write-ahead log is then checkpointed (`checkpoint`), so that it holds
        nothing erased either; with `checkpoint` False that is left to the caller's next
        `checkpoint` (many erasures in a row, inside `checkpoints_deferred`)."""

    async def erase_each(self, erasures: Sequence[Erase], *,
                         checkpoint: bool = True) -> list[Erasure | FhirError]:
        """`erase` of each of `erasures`, as few transactions as the store allows (SQLite:
        one, so that the pages the compartments share are written once; MongoDB: one each,
        a transaction of its own being bounded), in order; what each removed, or its
        CONFLICT (its condition refused it: nothing of it removed, the others erased all
        the same). A failure of another kind is raised by a store erasing them in one
        transaction (none made: running them again finishes them), and is that erasure's
        outcome in a store erasing each in its own (the others stand)."""

    async def checkpoint(self) -> None:
        """Copy the write-ahead log into the store's files and empty it: what it held of rows
        removed since (an erasure's) is gone from it, and from the pages of before in the
        files. A reader holding an older snapshot past the busy timeout leaves the log to the
        next checkpoint (SQLite). A store with no log of its own to empty does nothing
        (MongoDB's journal is the server's)."""

    def checkpoints_deferred(self) -> AbstractAsyncContextManager[None]:
        """A block of many erasures (`erase(checkpoint=False)`, then `checkpoint` now and
        then): the log is checkpointed as the block starts and as it ends, however it ends;
        meanwhile the store checkpoints only when asked, so that a page many erasures change
        is copied home once. A store with no log of its own to empty does nothing."""

    def dump(self, count: int = 1000) -> AsyncIterator[list[Version]]:
        """Every version stored when the dump starts, `count` at a time, in write order
        (oldest first), bodies as stored: what a backup keeps (backup/)."""

    async def load(self, versions: Sequence[tuple[Version, Sequence[IndexEntry]]]) -> None:
        """Restore: append `versions`, bodies as stored, each with its index entries (none for
        a deletion), as the latest version of their resources, atomically; into a store being
        rebuilt by `fhir-server restore` (versions of a resource come in order)."""

    async def loaded(self) -> None:
        """The restore's last `load` is done: build what loading deferred (SQLite builds the
        search indexes' lookup B-trees once, sorted, instead of one random insert per row).
        Searches wait for it: before, SQLite has no lookups to seek."""
