"""Writing AuditEvents: stored like any resource (so a patient's own can be searched), then
linked into the hash chain (audit/chain.py).

Public API (the HTTP middleware, the sign-in and token endpoints and the command line use it):
`record(event)` and `record_all(events)` return once the events are durable and linked;
`begin(events_of)` starts the record of a request that may write (audit/outbox.py: its
writes keep their audit record in the clinical store until its events are linked), and its
`finish(status)` records them; `recover()` completes, at start-up, what a recorder that died
left half done; `close()`.

Events recorded while a batch is being written wait for it and then go together, in the next
batch: one commit of the audit store and one link of the chain for all of them, so requests
served together share the cost of durability instead of paying it one after the other. A
batch is written in two steps: the events in the audit store, with a note naming them (an
outbox record `chain/<recorder>/<first event id>` in the same commit), then their link. The
note is done with once the link is durable, and removed by the recorder's next batch (no
commit of its own). A crash between the two steps leaves a note of stored, unlinked events,
which `recover` links (a note whose batch is linked already is just removed); then the outbox
records of its requests whose events never reached the trail become AuditEvents.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson

from ..model.ids import new_id
from ..search import IndexEntry, extract
from ..store.base import Outbox, Store, Write
from ..store.bodies import stored
from .chain import Chain
from .outbox import PREFIX, AuditedStore, Intent, Settled, event_ids, request_of
from .owners import Owner
from .trail import Trail

Event = dict[str, Any]
NOTES = "chain/"  # the audit store's outbox records naming a batch until it is linked
log = logging.getLogger(__name__)
T = TypeVar("T")


class AuditRecorder:
    """Stores AuditEvents and links them, a batch at a time."""

    def __init__(self, store: Store, chain: Chain, clinical: Store | None = None) -> None:
        """Events go to `store` and `chain`; requests' outbox records to `clinical`."""
        self.store = store
        self.chain = chain
        self.clinical = clinical
        self.settled = Settled()
        self._owner: Owner | None = None
        self._linked: tuple[str, ...] = ()  # notes of linked batches, for the next batch to remove
        self._queue: list[tuple[list[Event], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._chain_thread: ThreadPoolExecutor | None = None

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

    async def _on_chain(self, work: Callable[..., T], *args: Any) -> T:
        """`work(*args)` on the chain's thread. One thread: the chain's file takes one writer
        at a time anyway, and `close` can wait for what runs there before it closes the
        connections (closing one a statement is running on crashes the interpreter)."""
        if self._chain_thread is None:
            self._chain_thread = ThreadPoolExecutor(1, thread_name_prefix="audit-chain")
        return await asyncio.get_running_loop().run_in_executor(self._chain_thread, work, *args)

    def begin(self, events_of: Callable[[Trail, int], list[Event]]) -> RequestRecord:
        """The record of one request; `events_of(trail, status)` builds its AuditEvents."""
        return RequestRecord(self, events_of)

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
        note = f"{NOTES}{self.owner.name}/{events[0]['id']}"
        done, self._linked = self._linked, ()
        try:
            await self.store.commit([
                *(Write("AuditEvent", event["id"], event, entries, "POST", create_only=True)
                  for event, entries in zip(events, index_entries(events))),
                Outbox(put=((note, " ".join(event["id"] for event in events).encode()),),
                       remove=done)])
        except BaseException:
            self._linked += done  # still to remove
            raise
        await self._on_chain(self.chain.append, events)
        self._linked += (note,)

    async def recover(self) -> int:
        """Complete what recorders that stopped left half done: link the batches their notes
        name that are not linked yet, then record the requests their outbox records name that have
        no AuditEvent yet. Returns how many events were linked or recorded."""
        done = 0
        for name in self.owner.ended():
            notes = await self.store.outbox(f"{NOTES}{name}/")
            for _, body in notes:
                ids = body.decode().split(" ")
                if not await self._on_chain(self.chain.linked, ids):
                    done += await self._link_stored(ids)
            if notes:
                await self.store.commit([Outbox(remove=tuple(key for key, _ in notes))])
            # Notes in the chain's file, left by a recorder of an earlier release.
            ids = await self._on_chain(self.chain.pending, name)
            done += await self._link_stored(ids)
            await self._on_chain(self.chain.forget, ids)
            done += await self._recover_outbox(name)
        if done:
            log.warning("audit trail completed after a stop", extra={"events": done})
        return done

    async def _link_stored(self, ids: Sequence[str]) -> int:
        """Link those of the events `ids` that are stored (the others were never answered
        for); returns how many."""
        stored = [await self.store.read("AuditEvent", id) for id in ids]
        events = [orjson.loads(v.body) for v in stored if v is not None and v.body is not None]
        if events:
            await self._on_chain(self.chain.append, events)
        return len(events)

    async def _recover_outbox(self, name: str) -> int:
        """Record the requests of `name` that wrote but never reached the trail, each from
        its latest outbox record (written with its last unit of work)."""
        if self.clinical is None:
            return 0
        records = await self.clinical.outbox(f"{PREFIX}{name}/")
        latest: dict[str, tuple[int, bytes]] = {}
        for key, body in records:
            n = int(key.rsplit("/", 1)[1])
            if n > latest.get(request_of(key), (0, b""))[0]:
                latest[request_of(key)] = (n, body)
        recorded = 0
        for request_id, (_, body) in latest.items():
            if not await stored(self.store.read("AuditEvent", request_id)):  # shredded: it was
                events: list[Event] = orjson.loads(body)
                await self.record_all(events, [event["id"] for event in events])
                recorded += len(events)
        if records:
            await self.clinical.commit([Outbox(remove=tuple(key for key, _ in records))])
        return recorded

    def close(self) -> None:
        """Release the chain's connections and this recorder's name (at shutdown), once what
        runs on the chain's thread is done: a request cancelled by the shutdown leaves its
        link being written there."""
        if self._chain_thread is not None:
            self._chain_thread.shutdown(wait=True)
            self._chain_thread = None
        self.chain.close()
        if self._owner is not None:
            self._owner.close()
            self._owner = None


def index_entries(events: Sequence[Event]) -> list[list[IndexEntry]]:
    """The index entries of each event. The events of one request share every value but
    their id and entities (events.py: the very same objects), so the part they share is
    extracted once: a search returning 20 patients leaves 21 events."""
    requests: dict[tuple[tuple[str, int], ...], list[int]] = {}
    for n, event in enumerate(events):
        # Objects of the same identity have the same value: every event of `events` is alive,
        # so no identity was reused.
        key = tuple((name, id(value)) for name, value in event.items() if name not in _OWN)
        requests.setdefault(key, []).append(n)
    found: list[list[IndexEntry]] = [[] for _ in events]
    for group in requests.values():
        if len(group) == 1:
            found[group[0]] = extract(events[group[0]])
            continue
        common = extract({k: v for k, v in events[group[0]].items() if k not in _OWN})
        for n in group:
            own = {k: events[n][k] for k in _OWN if k in events[n]}
            found[n] = common + extract({"resourceType": events[n]["resourceType"], **own})
    return found


_OWN = ("id", "entity")  # what each event of a request has of its own


class RequestRecord:
    """The audit record of one request: what it touches (`trail`), the clinical store as it
    writes through it (`store`: each unit of work keeps the request's outbox record), and
    `finish`, which records its AuditEvents."""

    def __init__(self, recorder: AuditRecorder, events_of: Callable[[Trail, int], list[Event]]) -> None:
        self.recorder = recorder
        self.trail = Trail()
        self.intent = Intent(recorder.owner.name, lambda written: events_of(written, 200))
        self._events_of = events_of
        self.store: Store | None = None
        if recorder.clinical is not None:
            self.store = AuditedStore(recorder.clinical, self.trail, self.intent, recorder.settled)

    async def finish(self, status: int) -> list[str]:
        """Record the request's events (answered with `status`); returns their ids. Its outbox
        records are done with once they are durable."""
        events = self._events_of(self.trail, status)
        ids = await self.recorder.record_all(events, event_ids(self.intent.request_id, len(events)))
        self.recorder.settled.give_back(self.intent.keys)
        return ids
