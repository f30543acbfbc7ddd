"""Writing AuditEvents: stored like any resource (so a patient's own can be searched), then
linked into the hash chain (audit/chain.py).

Public API (the HTTP middleware, the sign-in and token endpoints and the command line use it):
`record(event)` and `record_all(events)` return once the events are durable and linked;
`recover()` completes, at start-up, what a recorder that died left half done; `close()`.

Events recorded while a batch is being written wait for it and then go together, in the next
batch: one commit of the audit store and one link of the chain for all of them, so requests
served together share the cost of durability instead of paying it one after the other. A
batch is written in three steps: a pending note in the chain's file, the events in the audit
store, the link (which clears the note). A crash between them leaves a note that `recover`
completes: stored events are linked, the others (never answered for) forgotten.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson

from ..model.ids import new_id
from ..search import extract
from ..store.base import Store, Write
from .chain import Chain
from .owners import Owner

Event = dict[str, Any]


class AuditRecorder:
    """Stores AuditEvents and links them, a batch at a time."""

    def __init__(self, store: Store, chain: Chain) -> None:
        self.store = store
        self.chain = chain
        self._owner: Owner | None = None
        self._queue: list[tuple[list[Event], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    @property
    def owner(self) -> Owner:
        """This process's name on the notes it leaves (audit/owners.py), taken at first use."""
        if self._owner is None:
            self._owner = Owner(self.chain.path.with_name("audit-owners"))
        return self._owner

    async def record(self, event: Event) -> str:
        """Store `event` under a new id and chain it; returns the id."""
        [id] = await self.record_all([event])
        return id

    async def record_all(self, events: Sequence[Event], ids: Sequence[str] | None = None) -> list[str]:
        """Store and chain `events`, all or none, under `ids` (default: new ids); returns the
        ids once the events are durable and linked. Raises what the store raised."""
        given = list(ids) if ids is not None else [new_id() for _ in events]
        resources = [{**event, "id": id} for event, id in zip(events, given, strict=True)]
        if not resources:
            return []
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queue.append((resources, done))
        if self._writer is None or self._writer.done() or self._writer.get_loop() is not loop:
            self._writer = loop.create_task(self._write_queued())
        await done
        return given

    async def _write_queued(self) -> None:
        """Write what is queued, a batch at a time, until nothing is."""
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                await self._write([event for events, _ in batch for event in events])
            except Exception as exc:  # every waiter of the batch learns it failed
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)

    async def _write(self, events: list[Event]) -> None:
        owner = self.owner.name
        await asyncio.to_thread(self.chain.intend, owner, [event["id"] for event in events])
        await self.store.commit([Write("AuditEvent", event["id"], event, extract(event), "POST",
                                       create_only=True) for event in events])
        await asyncio.to_thread(self.chain.append, events)

    async def recover(self) -> int:
        """Complete the pending batches of recorders that stopped; returns how many events
        were linked."""
        linked = 0
        for name in self.owner.ended():
            ids = await asyncio.to_thread(self.chain.pending, name)
            stored = [await self.store.read("AuditEvent", id) for id in ids]
            events = [orjson.loads(v.body) for v in stored if v is not None and v.body is not None]
            if events:
                await asyncio.to_thread(self.chain.append, events)
            await asyncio.to_thread(self.chain.forget, ids)
            linked += len(events)
        return linked

    def close(self) -> None:
        """Release the chain's connections and this recorder's name (at shutdown)."""
        self.chain.close()
        if self._owner is not None:
            self._owner.close()
            self._owner = None
