"""The dispatcher: numbers the events writes left for each subscription and sends them, in
number order, to its endpoint.

Each subscription is served by one dispatcher at a time, the holder of its lease (an outbox
record set by compare-and-set, renewed while held, taken over once expired): several server
processes may run one each. Each announces itself, and holds an equal share of the
subscriptions among the dispatchers alive, giving back what it holds beyond it. A round serves each subscription in its own task (a slow
endpoint holds back its own subscription only), and for each:

1. pending events (records.py) are numbered in stamp order, in one unit of work that also
   advances the state and removes them; the numbered events stay for `$events`;
2. a `requested` topic-based subscription gets its handshake: `active` if the endpoint
   answers 2xx, else `error` (a classic R4 one becomes `active` at once);
3. the next events (at most the subscription's max count) whose resource the owner still
   reaches are sent as one notification; the others are withheld. A failure is retried
   after an exponential backoff with jitter; past the retry window the subscription is set
   to `error`, its events kept; once it is `requested` again they are sent from where
   delivery stopped;
4. with nothing to send, a heartbeat when its period has passed.

Nothing is sent for a subscription whose owner's user account is suspended or closed: it is
set to `error` saying so, its events kept (numbered still) for when it is `requested` again.

Delivery is at least once: a process killed after a send and before its state is committed
sends that notification again; receivers tell repeats by their event numbers.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import orjson

from .. import clock
from ..model.errors import FhirError, Kind
from ..model.ids import new_id
from ..store.base import Outbox, Store, Version
from .capture import Watch
from .criteria import Plan, plan
from .delivery import Sender, delivered
from .records import (DISPATCHERS, LEASES, Event, State, dump, event, event_key, lease_key,
                      numbered, one, pending_prefix, state, state_key)

log = logging.getLogger("fhir_server.subscriptions")
SECOND = 1_000_000  # microseconds


class Desk(Protocol):
    """What the dispatcher asks the service layer (services/subscriptions.py `Desk`)."""

    async def served(self) -> list[dict[str, Any]]: ...

    async def owned(self, subscription: str) -> bool: ...

    async def owner_stopped(self, subscription: str) -> str | None: ...

    async def reached(self, plan: Plan, found: Sequence[Event]) -> list[tuple[Event, Version | None]]: ...

    async def set_status(self, subscription: str, to: str, why: str | None = None) -> None: ...

    async def audit(self, subscription: str, endpoint: str, answered: int, kind: str,
                    sent: Sequence[tuple[Event, Version | None]]) -> None: ...

    def bundle(self, plan: Plan, kind: str, numbered: int,
               sent: Sequence[tuple[Event, Version | None]]) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Timing:
    """Seconds: the retry window before `error`, the first and the longest backoff, the
    lease (longer while a send may take longer), how often subscriptions are read again and
    retries looked at, how long a round waits after a write woke it, and how long for the
    subscriptions it serves."""

    retry_window: float = 24 * 3600
    first_retry: float = 1.0
    longest_retry: float = 3600.0
    lease: float = 30.0
    poll: float = 1.0
    gather: float = 0.25
    wait: float = 1.0


class Dispatcher:
    def __init__(self, store: Store, watch: Watch, desk: Desk, sender: Sender,
                 timing: Timing = Timing(), jitter: random.Random | None = None) -> None:
        self.store = store
        self.watch = watch
        self.desk = desk
        self.sender = sender
        self.timing = timing
        self.holder = new_id()
        self.jitter = jitter or random.Random()
        self._read_at = -1
        self._round = asyncio.Lock()  # one round at a time (a test may run one itself)
        self.serving: dict[str, asyncio.Task[None]] = {}  # by subscription id
        self.room: int | None = None  # leases it may take still (its share; None: any)
        watch.reader = self.reload  # for a write that comes before any round (capture.py)

    async def run(self) -> None:
        """Serve until cancelled: a round each time a write keeps an event, and each `poll`."""
        while True:
            self.watch.changed.clear()
            try:
                await self.round()
            except Exception:  # a round that failed is the next round's work; never stop
                log.exception("subscription round failed")
            try:
                await asyncio.wait_for(self.watch.changed.wait(), self.timing.poll)
                # Let the writes of the next moments join this round: fewer, fuller rounds.
                await asyncio.sleep(self.timing.gather)
            except TimeoutError:
                pass

    async def round(self) -> None:
        """Serve every subscription once (reading them from the store each `poll`), each in
        its own task so that a slow endpoint holds back its own subscription only: the round
        waits for them at most `wait` seconds; one still running is not started again."""
        async with self._round:
            now = clock.micros(clock.now())
            if now - self._read_at >= self.timing.poll * SECOND or self._read_at > now or self.watch.broken:
                await self.reload()
                self._read_at = now
            self.serving = {id: task for id, task in self.serving.items() if not task.done()}
            plans = self.watch.plans()
            await self._share(len(plans))
            for found in plans:
                if found.id not in self.serving:
                    self.serving[found.id] = asyncio.create_task(self._serve_safely(found))
            if self.serving:
                await asyncio.wait(self.serving.values(), timeout=self.timing.wait)

    async def _share(self, served: int) -> None:
        """Announce this dispatcher alive, and set how many more leases it may take: an equal
        share of `served` among the dispatchers alive; what it holds beyond that, and is not
        sending for, it gives back (another takes it in its next round)."""
        now = clock.micros(clock.now())
        me = f"{DISPATCHERS}{self.holder}"
        alive = {key: orjson.loads(body)["until"] for key, body in await self.store.outbox(DISPATCHERS)}
        gone = tuple(key for key, until in alive.items() if until <= now and key != me)
        if alive.get(me, 0) - now <= self.timing.lease * SECOND / 2 or gone:
            # A record renewed just as it is found expired is removed all the same: its
            # dispatcher announces itself again within a round, its share meanwhile counted wrong.
            until = now + int(self.timing.lease * SECOND)
            await self.store.commit([Outbox(put=((me, dump({"until": until})),), remove=gone)])
        share = math.ceil(served / max(1, len(alive) - len(gone) + (me not in alive)))
        mine = []
        for key, body in await self.store.outbox(LEASES):
            lease = orjson.loads(body)
            if lease["holder"] == self.holder and lease["until"] > now:
                mine.append((key, body))
        self.room = share - len(mine)
        busy = {lease_key(id) for id in self.serving}
        for key, body in [held for held in mine if held[0] not in busy][:max(0, -self.room)]:
            try:
                await self.store.commit([Outbox(remove=(key,), expect=((key, body),))])
            except FhirError:
                continue  # renewed meanwhile by this dispatcher's own serving: kept

    async def stop(self) -> None:
        """Cancel the subscriptions being served (their state is as last committed)."""
        for task in self.serving.values():
            task.cancel()
        await asyncio.gather(*self.serving.values(), return_exceptions=True)
        self.serving = {}

    async def _serve_safely(self, found: Plan) -> None:
        """Serve `found`; a failure of one subscription is its own (`error`), not the round's."""
        try:
            await self.serve(found)
        except Exception as exc:  # noqa: BLE001 - no subscription may stop the others
            log.exception("subscription %s failed", found.id)
            self.watch.broke(found.id, f"Notifications failed ({type(exc).__name__}).")

    async def load(self) -> None:
        """Read the subscriptions served before the process serves its first request; with
        the store away, the first write or round once it is back reads them (capture.py)."""
        try:
            await self.watch.ready()
        except FhirError as exc:
            if exc.kind is not Kind.BUSY:
                raise
            log.warning("the subscriptions could not be read at start-up")
            return
        self._read_at = clock.micros(clock.now())

    async def reload(self) -> None:
        while self.watch.broken:  # found unservable by a write (capture.py)
            id, why = self.watch.broken.popitem()
            await self.desk.set_status(id, "error", why)
        puts, served = -1, []
        while puts != self.watch.puts:  # read again when a write of this process served a
            puts = self.watch.puts  # subscription meanwhile: the read may predate that write
            served = await self.desk.served()
        plans, refused = [], []
        for resource in served:
            try:
                plans.append(plan(resource, self.watch.registry, self.watch.policy))
            except FhirError as exc:  # stored when the policy allowed it; no longer
                refused.append((str(resource["id"]), exc.issues[0].diagnostics))
        self.watch.replace(plans)
        for id, why in refused:  # once loaded: the store takes no write before
            await self.desk.set_status(id, "error", why)

    async def serve(self, found: Plan) -> None:
        """Number the new events of `found`, then handshake, deliver or beat: every send
        under a lease that outlasts the send's timeout."""
        lease = await self._lease(found.id, found.timeout)
        if lease is None:
            return
        body = await one(self.store, state_key(found.id))
        try:
            body = await self._number(found.id, lease, body)
        except FhirError as exc:
            if exc.kind is not Kind.PRECONDITION_FAILED:
                raise
            return  # a record changed since read (an erasure's removal): numbered next round
        if found.end is not None and found.end <= clock.instant():
            await self.desk.set_status(found.id, "off")
        elif self._may_send(found, state(body)) and (why := await self.desk.owner_stopped(found.id)):
            await self.desk.set_status(found.id, "error", why)  # its events kept, not sent
        elif found.status == "requested":
            await self._handshake(found, state(body))
        else:
            while body is not None and (state(body).delivered < state(body).events):
                before = body
                body = await self._deliver(found, lease, body)
                if body == before or state(body).attempts:
                    return
                lease = await self._lease(found.id, found.timeout)
                if lease is None:
                    return
            await self._heartbeat(found, lease, body)

    def _may_send(self, found: Plan, current: State) -> bool:
        """Whether serving `found` may send anything now (else its owner need not be asked)."""
        return (found.status == "requested" or current.delivered < current.events
                or found.heartbeat is not None)

    async def _lease(self, subscription: str, send: float = 0.0) -> bytes | None:
        """The lease record if this dispatcher holds it (taking or renewing it), else None;
        held for `send` seconds more at least (a send's timeout: no other dispatcher takes
        the subscription over while this one waits for an answer)."""
        key = lease_key(subscription)
        span = max(self.timing.lease, 2 * send)
        held = await one(self.store, key)
        now = clock.micros(clock.now())
        lease = orjson.loads(held) if held is not None else {"holder": None, "until": 0}
        new = lease["holder"] != self.holder or lease["until"] <= now  # not of its share yet
        if lease["holder"] != self.holder:
            if held is not None and lease["until"] > now:
                return None
        elif lease["until"] - now > span * SECOND / 2:
            return held
        if new and self.room is not None and self.room <= 0:
            return None  # its share is full
        taken = dump({"holder": self.holder, "until": now + int(span * SECOND)})
        try:
            await self.store.commit([Outbox(put=((key, taken),), expect=((key, held),))])
        except FhirError:
            return None  # another dispatcher took it first
        if new and self.room is not None:
            self.room -= 1
        return taken

    async def _save(self, subscription: str, lease: bytes, before: bytes | None, after: State,
                    **changes: Any) -> bytes:
        """Commit the new state, if the lease and the state (and the records `expect` names)
        are still as read."""
        body = dump(after)
        await self.store.commit([Outbox(
            put=(*changes.get("put", ()), (state_key(subscription), body)),
            remove=changes.get("remove", ()),
            expect=((lease_key(subscription), lease), (state_key(subscription), before),
                    *changes.get("expect", ())))])
        return body

    async def _number(self, subscription: str, lease: bytes, body: bytes | None) -> bytes | None:
        pending = await self.store.outbox(pending_prefix(subscription))
        if not pending:
            return body
        after = state(body)
        numbered = []
        for _, record in pending:
            after.events += 1
            numbered.append((event_key(subscription, after.events),
                             dump(replace(event(record), number=after.events))))
        # the pending records still as read: an erasure (records.py `forget`) removing one
        # meanwhile must not see its event written back numbered
        return await self._save(subscription, lease, body, after, put=numbered,
                                remove=tuple(key for key, _ in pending), expect=tuple(pending))

    async def _handshake(self, found: Plan, current: State) -> None:
        if not await self.desk.owned(found.id):  # nobody's rights to send its events with
            await self.desk.set_status(found.id, "error", "The Subscription has no recorded owner: "
                                       "create Subscriptions with POST.")
            return
        if found.classic:
            await self.desk.set_status(found.id, "active")
            return
        bundle = self.desk.bundle(replace(found, status="requested"), "handshake", current.events, ())
        answered = await self.sender.send(found, orjson.dumps(bundle))
        await self.desk.audit(found.id, found.endpoint, answered, "handshake", ())
        if delivered(answered):
            await self.desk.set_status(found.id, "active")
        else:
            await self.desk.set_status(found.id, "error", _failure("The handshake", answered))

    async def _deliver(self, found: Plan, lease: bytes, body: bytes) -> bytes:
        """Send the next batch once its retry time has come; the state after it."""
        before = state(body)
        now = clock.micros(clock.now())
        if now < before.retry_at:
            return body
        # A classic subscription sends a request per event: one per lease renewal.
        count = 1 if found.classic else found.max_count
        last = min(before.events, before.delivered + count)
        batch = await numbered(self.store, found.id, before.delivered + 1, last)
        sent = await self.desk.reached(found, batch)
        answered = await self._send(found, before.events, sent) if sent else 200
        if sent:
            await self.desk.audit(found.id, found.endpoint, answered, "event-notification", sent)
        after = replace(before)
        if delivered(answered):
            # `last`, not the batch's last: events an erasure removed leave gaps (records.py)
            after.delivered, after.attempts, after.retry_at = last, 0, 0
            after.failing_since, after.last_sent = None, now
        else:
            after.attempts += 1
            after.failing_since = after.failing_since or now
            after.retry_at = now + self._backoff(after.attempts)
            if now - after.failing_since >= self.timing.retry_window * SECOND:
                await self.desk.set_status(found.id, "error", _failure("Notifications", answered))
        return await self._save(found.id, lease, body, after)

    async def _send(self, found: Plan, numbered: int, sent: list[tuple[Event, Version | None]]) -> int:
        if not found.classic:
            return await self.sender.send(found, orjson.dumps(
                self.desk.bundle(found, "event-notification", numbered, sent)))
        # Classic R4: a POST without body, or the resource PUT to [endpoint]/[type]/[id].
        answered = 200
        for found_event, version in sent:
            if found.mime_type is None or version is None or version.body is None:
                answered = await self.sender.send(found, None)
            else:
                answered = await self.sender.send(
                    found, version.body, method="PUT",
                    url=f"{found.endpoint.rstrip('/')}/{found_event.reference}")
            if not delivered(answered):
                break
        return answered

    def _backoff(self, attempts: int) -> int:
        """Exponential, capped, with jitter (half to all of it): retries spread out."""
        ceiling = min(self.timing.longest_retry, self.timing.first_retry * 2 ** (attempts - 1))
        return int(ceiling * self.jitter.uniform(0.5, 1.0) * SECOND)

    async def _heartbeat(self, found: Plan, lease: bytes, body: bytes | None) -> None:
        current = state(body)
        now = clock.micros(clock.now())
        if found.heartbeat is None or now - current.last_sent < found.heartbeat * SECOND:
            return
        bundle = self.desk.bundle(found, "heartbeat", current.events, ())
        answered = await self.sender.send(found, orjson.dumps(bundle))
        await self.desk.audit(found.id, found.endpoint, answered, "heartbeat", ())
        # A heartbeat missed is not retried: the next one is due a period later.
        await self._save(found.id, lease, body, replace(current, last_sent=now))


def _failure(what: str, answered: int) -> str:
    return f"{what} failed: " + (f"the endpoint answered HTTP {answered}." if answered
                                  else "the endpoint did not answer.")
