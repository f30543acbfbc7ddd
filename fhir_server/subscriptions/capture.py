"""Events kept with the writes that cause them: each unit of work that writes a resource some
subscription watches also puts, in the same unit, one outbox record per matching subscription
(records.py). Nothing is kept beside a write no subscription watches, and finding that out is
a set look-up per operation.

Subscription writes themselves are read here too: refused with 400 (nothing stored) when
the topic, a filter, the channel, the payload or the endpoint is not one this server serves;
stored with their header values and signing secret masked, the real ones kept apart in the
same unit of work (credentials.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import orjson

from .. import clock
from ..model.errors import Kind, fail
from ..search import Registry, extract, matches, patients_of
from ..store.base import (
    RETRY_DELAYS,
    ConditionalCreate,
    ConditionalUpdate,
    Operation,
    Outbox,
    Result,
    Store,
    TransientConflict,
    UnitOfWork,
    Version,
    Write,
)
from ..store.routing import RoutingStore
from .addresses import Refused, Unresolved, resolve
from .credentials import Credentials, resolve_masks, split, unmask
from .credentials import dump as dump_credentials
from .credentials import load as load_credentials
from .criteria import Plan, Policy, endpoint_refused, plan
from .records import (Event, credentials_key, dump, events_prefix, one, pending_key, pending_prefix,
                      subscription_keys)

log = logging.getLogger("fhir_server.subscriptions")
SERVED = ("requested", "active")  # statuses whose events are kept


class Watch:
    """The subscriptions served, by the resource type they watch; `changed` wakes the
    dispatcher when an event is kept. Until they are first read from the store (`loaded`,
    by `reader`: the dispatcher's) nobody knows which writes have events: the first write
    reads them, or is refused while they cannot be read."""

    def __init__(self, registry: Registry, policy: Policy) -> None:
        self.registry = registry
        self.policy = policy
        self.by_type: dict[str, dict[str, Plan]] = {}
        self.puts = 0  # a reload reading while one is made reads again (dispatcher.py)
        self.loaded = False
        self.reader: Callable[[], Awaitable[None]] | None = None
        self._reading = asyncio.Lock()
        self.broken: dict[str, str] = {}  # subscription id: why; the dispatcher sets them to error
        self.changed = asyncio.Event()

    def plans(self) -> list[Plan]:
        return [p for plans in self.by_type.values() for p in plans.values()]

    def replace(self, plans: Iterable[Plan]) -> None:
        by_type: dict[str, dict[str, Plan]] = {}
        for found in plans:
            by_type.setdefault(found.resource_type, {})[found.id] = found
        self.by_type = by_type
        self.loaded = True

    async def ready(self) -> None:
        """Read the subscriptions served unless they were (a process just started, its
        store away then); 503 while they cannot be read."""
        if self.loaded:
            return
        async with self._reading:
            if self.loaded:
                return
            if self.reader is None:
                raise fail(Kind.BUSY, "transient", "The subscriptions are not read yet; retry later.")
            await self.reader()

    def put(self, found: Plan | None, id: str) -> None:
        """Serve `found` (None, or a status not served: stop serving subscription `id`)."""
        self.puts += 1
        for plans in self.by_type.values():
            plans.pop(id, None)
        if found is not None and found.status in SERVED:
            self.by_type.setdefault(found.resource_type, {})[id] = found

    def broke(self, id: str, why: str) -> None:
        """Stop serving subscription `id` at once; the dispatcher records it as `error`."""
        self.put(None, id)
        self.broken[id] = why
        self.changed.set()

    def concerns(self, operations: Sequence[Operation]) -> bool:
        return any(_type_of(op) in self.by_type or _type_of(op) == "Subscription" for op in operations)


def _type_of(operation: Operation) -> str | None:
    if isinstance(operation, (ConditionalCreate, ConditionalUpdate)):
        return operation.write.resource_type
    return getattr(operation, "resource_type", None)


def _with_resource(operation: Operation, write: Write) -> Operation:
    """`operation` writing `write` in place of its own."""
    if isinstance(operation, (ConditionalCreate, ConditionalUpdate)):
        return replace(operation, write=write)
    return write


def _write_of(operation: Operation) -> Write | None:
    if isinstance(operation, (ConditionalCreate, ConditionalUpdate)):
        return operation.write
    return operation if isinstance(operation, Write) else None


class SubscribedStore(RoutingStore):
    """The server's store, keeping the events of its writes (see the module docstring)."""

    def __init__(self, main: Store, audit: Store, watch: Watch) -> None:
        super().__init__(main, audit)
        self.watch = watch

    async def commit(self, operations: Sequence[Operation]) -> list[Result]:
        if not self.watch.loaded and any(_type_of(op) is not None for op in operations):
            await self.watch.ready()  # a write (not outbox records) could lack its events
        if not self.watch.concerns(operations):
            return await super().commit(operations)
        operations, given = await self.check_subscriptions(operations)
        if not self.main.status().get("transactions", True):
            return await super().commit(operations)  # no Subscription can be stored here
        for delay in RETRY_DELAYS:
            await asyncio.sleep(delay)
            try:
                async with super().transaction() as unit:
                    results = await unit.apply(operations)
                    credentials = await self._keep(unit, operations, results, given)
                break
            except TransientConflict:
                continue
        else:
            raise TransientConflict("the unit of work lost every race")
        self._served(results, credentials)
        return results

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[UnitOfWork]:
        await self.watch.ready()  # not inside the unit: reading them may write (dispatcher.py)
        async with super().transaction() as unit:
            recording = _Recording(unit, self)
            yield recording
            credentials = await self._keep(unit, recording.operations, recording.results,
                                           recording.credentials)
        self._served(recording.results, credentials)

    async def check_subscriptions(self, operations: Sequence[Operation]
                                  ) -> tuple[list[Operation], list[Credentials | None]]:
        """400 for a Subscription this server cannot serve (before anything is written), its
        endpoint's host resolving to an address that is not public included; 501
        on a store that cannot keep events in the unit of work of their write (a standalone
        MongoDB server, without transactions). The operations to apply, each Subscription
        with its header values and secret masked, and what each one's masks hide."""
        masked: list[Operation] = []
        given: list[Credentials | None] = []
        for operation in operations:
            write = _write_of(operation)
            if write is None or write.resource_type != "Subscription":
                masked.append(operation)
                given.append(None)
                continue
            if not self.main.status().get("transactions", True):
                raise fail(Kind.NOT_SUPPORTED, "not-supported", "Subscriptions need a store "
                           "with transactions (a MongoDB replica set or SQLite).")
            found = plan(write.resource, self.watch.registry, self.watch.policy)
            try:
                await resolve(urlsplit(found.endpoint), self.watch.policy.loopback_http)
            except Unresolved:
                pass  # perhaps not yet; checked again before each notification
            except Refused as refused:
                raise endpoint_refused(refused) from None
            stored, credentials = split(write.resource)
            masked.append(_with_resource(operation, replace(write, resource=stored)))
            given.append(credentials)
        return masked, given

    def _served(self, results: Sequence[Result], credentials: dict[str, Credentials]) -> None:
        """Serve the Subscriptions just written, as written (the dispatcher reloads them all
        every `poll` anyway: this makes a new one effective at once in this process)."""
        for result in results:
            for version in result.versions:
                if version.resource_type == "Subscription":
                    self.watch.put(self._plan(version, credentials.get(version.id)), version.id)

    def _plan(self, version: Version, credentials: Credentials | None) -> Plan | None:
        if version.body is None:
            return None
        return plan(unmask(orjson.loads(version.body), credentials or Credentials()),
                    self.watch.registry, self.watch.policy)

    async def _keep(self, unit: UnitOfWork, operations: Sequence[Operation],
                    results: Sequence[Result], given: Sequence[Credentials | None]
                    ) -> dict[str, Credentials]:
        """Put the events of `results` and the credentials of the Subscriptions written in the
        unit's outbox; the credentials by subscription id."""
        records: list[tuple[str, bytes]] = []
        records_gone: list[str] = []
        credentials: dict[str, Credentials] = {}
        micros = clock.micros(clock.now())
        for operation, result, masked in zip(operations, results, given, strict=False):
            if result.outcome not in ("created", "updated", "deleted"):
                continue
            write = _write_of(operation)
            for version in result.versions:
                if version.resource_type == "Subscription" and version.body is None:
                    records_gone.extend(await self._records_of(version.id))
                elif masked is not None:
                    key = credentials_key(version.id)
                    kept = credentials[version.id] = resolve_masks(
                        masked, load_credentials(await one(self.main, key)))
                    if kept:
                        records.append((key, dump_credentials(kept)))
                    else:
                        records_gone.append(key)
                plans = self.watch.by_type.get(version.resource_type)
                if plans:
                    records.extend(await self._events(plans, version, write, micros))
        if records or records_gone:
            await unit.apply([Outbox(put=tuple(records), remove=tuple(records_gone))])
            self.watch.changed.set()
        return credentials

    async def _records_of(self, subscription: str) -> list[str]:
        """Every record a deleted subscription leaves: its events go with it."""
        listed = [key for prefix in (pending_prefix(subscription), events_prefix(subscription))
                  for key, _ in await self.main.outbox(prefix)]
        return [*subscription_keys(subscription), *listed]

    async def _events(self, plans: dict[str, Plan], version: Version, write: Write | None,
                      micros: int) -> list[tuple[str, bytes]]:
        current = orjson.loads(version.body) if version.body is not None else None
        interaction = "delete" if current is None else "create" if version.version == 1 else "update"
        entries: Sequence[Any] | None = None
        record = b""
        kept = []
        for found in list(plans.values()):  # one found broken leaves `plans`
            if found.topic is None:
                if interaction == "delete":
                    continue  # a classic subscription is told of creates and updates
            elif not found.topic.triggered(interaction, current):
                continue
            if entries is None:
                entries = await self._entries(version, current, write)
            try:
                if not all(matches(query, entries) for query in found.filters):
                    continue
            except Exception:  # noqa: BLE001 - a subscription never fails the write it watches
                log.exception("subscription %s cannot be matched; set to error", found.id)
                self.watch.broke(found.id, "Its criteria cannot be matched against written resources.")
                continue
            if not record:  # the same for every subscription
                patients = tuple(sorted(patients_of(self.watch.registry, version.resource_type,
                                                    entries, version.id)))
                record = dump(Event(version.resource_type, version.id, version.version,
                                    interaction, version.method, version.last_updated, patients))
            kept.append((pending_key(found.id, micros), record))
        return kept

    async def _entries(self, version: Version, current: dict[str, Any] | None,
                       write: Write | None) -> Sequence[Any]:
        """The index entries filters match against: the written ones, or for a deletion
        those of the version it deleted."""
        if current is not None:
            return write.entries if write is not None else extract(current)
        previous = await self.main.vread(version.resource_type, version.id, version.version - 1)
        if previous is None or previous.body is None:
            return ()
        return extract(orjson.loads(previous.body))


class _Recording:
    """A unit of work that remembers what was applied through it and checks Subscriptions."""

    def __init__(self, unit: UnitOfWork, store: SubscribedStore) -> None:
        self.unit = unit
        self.store = store
        self.operations: list[Operation] = []
        self.results: list[Result] = []
        self.credentials: list[Credentials | None] = []

    async def apply(self, operations: Sequence[Operation]) -> list[Result]:
        given: Sequence[Credentials | None] = [None] * len(operations)
        if self.store.watch.concerns(operations):
            operations, given = await self.store.check_subscriptions(operations)
        results = await self.unit.apply(operations)
        self.operations.extend(operations)
        self.results.extend(results)
        self.credentials.extend(given)
        return results

    async def match_ids(self, query: Any, limit: int | None = None) -> list[str]:
        return await self.unit.match_ids(query, limit)
