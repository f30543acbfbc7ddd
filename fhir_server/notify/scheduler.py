"""The durable scheduler of time-based triggers (docs/notifications.md).

Public API (helpers of other workflows, e.g. retention warnings, use only this):

    await enqueue(schedule_of(ctx.store), person="Practitioner/1", template="retention-warning",
                  params={"date": "2027-01-31"}, not_before=datetime, key="retention/Patient/9/1")

puts a notice to `person` (a Practitioner, Patient or RelatedPerson reference) in the store's
schedule (store/schedule.py, on SQLite and MongoDB alike; `schedule_of` finds it behind any
store the server hands out). It is sent once
`not_before` has passed, by `template` (notify/templates.py: the text in the person's
language), through the person's preferred channel, unless they opted out; `key` names it for
deduplication (enqueueing the same key again adds nothing) and must hold ids only (stored in
clear). `cancel(schedule, prefix)` withdraws what is not sent yet.

`Scheduler.run_due()` sends what is due: it claims items under a lease, hands each to the
handler of its kind, then marks it sent; a handler that raises `Retry` gets the item back
later (exponential backoff, capped, never dropped). A process killed between claim and send
leaves the item to another claim when the lease expires: nothing is lost. Delivery is
at-least-once: a process killed after the channel accepted a message and before the mark is
committed sends it again; channels carry the item key as the message id so that receivers
can drop the copy (store/schedule.py). Time is read from fhir_server/clock.py, so tests move it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from .. import clock
from ..store.schedule import Due, Schedule
from ..services.notifications import PERSON_TYPES
from .templates import check

log = logging.getLogger("fhir_server.notify")

NOTICE = "notice"  # the kind of the items `enqueue` adds
BACKOFF_FIRST = timedelta(minutes=1)
BACKOFF_MOST = timedelta(hours=1)
# Faults (not Retry) after which an item is set aside as failed for the operator
# (`fhir-server notify failed`): an item nobody can read must not be claimed for ever.
FAILURES_SET_ASIDE = 5


@dataclass(frozen=True, slots=True)
class Item:
    """A claimed item as its handler sees it: `kind` picks the handler, `data` its input."""

    key: str
    kind: str
    data: dict[str, Any]
    attempts: int


# Handles a claimed item; returns when it is done with (sent, or nothing left to send).
Handler = Callable[[Item], Awaitable[None]]


class Retry(Exception):
    """A handler could not finish an item now (a channel is down): try it again later."""


async def add_all(schedule: Schedule, kind: str,
                  items: Sequence[tuple[str, Mapping[str, Any], datetime]]) -> list[str]:
    """Schedule items of `kind`, each `(key, data, not before)`, in one write; the keys that
    were not scheduled yet."""
    return await schedule.enqueue([(key, clock.micros(at), orjson.dumps({"kind": kind, "data": data}))
                                   for key, data, at in items])


async def enqueue(schedule: Schedule, *, person: str, template: str, params: Mapping[str, str],
                  not_before: datetime, key: str) -> bool:
    """Schedule a notice to `person` (see the module docstring); False if `key` was already
    scheduled (in any state: a sent or cancelled notice is not sent again). TemplateError if
    `template` does not take `params` (notify/templates.py); ValueError if `person` is no
    Practitioner, Patient or RelatedPerson reference (it could never be delivered)."""
    kind, _, id = person.partition("/")
    if kind not in PERSON_TYPES or not id or "/" in id:
        raise ValueError(f"a notice goes to a person (Type/id of {', '.join(PERSON_TYPES)})")
    check(template, params)
    return bool(await add_all(schedule, NOTICE, [
        (key, {"person": person, "template": template, "params": dict(params)}, not_before)]))


async def cancel(schedule: Schedule, prefix: str) -> int:
    """Withdraw the items not sent yet whose key starts with `prefix`; how many."""
    return await schedule.cancel(prefix)


def backoff(attempts: int) -> timedelta:
    """The wait before the next attempt after `attempts` failed ones: doubling from a
    minute up to an hour, with up to 10 % jitter so that retries of many items spread."""
    wait: timedelta = min(BACKOFF_FIRST * 2 ** max(attempts - 1, 0), BACKOFF_MOST)
    return wait * (1 + random.random() / 10)


def owner_id() -> str:
    """A name no other process (here or on another host) has: who holds a lease."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Scheduler:
    """Sends the due items of `schedule` through `handlers` (by kind)."""

    def __init__(self, schedule: Schedule, handlers: Mapping[str, Handler], *,
                 lease_seconds: float = 120.0, batch: int = 10) -> None:
        self.schedule = schedule
        self.handlers = dict(handlers)
        self.lease = timedelta(seconds=lease_seconds)
        self.batch = batch
        self.owner = owner_id()

    async def run_due(self) -> int:
        """Claim and handle what is due now, batch after batch, until nothing is (items that
        handlers schedule for now included); how many items were done."""
        done = 0
        while True:
            now = clock.now()
            claimed = await self.schedule.claim(clock.micros(now), clock.micros(now + self.lease),
                                                self.owner, self.batch)
            if not claimed:
                return done
            for due in claimed:
                if clock.micros(clock.now() + self.lease / 3) > (due.lease or 0):
                    # Too little of the lease left for a send (the SMTP timeout is a third of
                    # it at most): given back now, before another process may claim it.
                    await self.schedule.postpone(due.key, self.owner, clock.micros(clock.now()))
                    continue
                done += await self._handle(due)

    async def _handle(self, due: Due) -> int:
        try:
            if due.body is None:
                raise ValueError("the item's body cannot be opened (its data key is gone?)")
            content = orjson.loads(due.body)
            handler = self.handlers.get(content["kind"])
            if handler is None:  # written by a newer version of the server: leave it to that one
                log.error("scheduled item of an unknown kind", extra={"key": due.key})
                await self.schedule.postpone(due.key, self.owner,
                                             clock.micros(clock.now() + BACKOFF_MOST))
                return 0
            await handler(Item(due.key, content["kind"], content["data"], due.attempts))
        except Exception as why:
            # Retry: a channel is down, retried without end. Anything else is a fault, logged
            # with its traceback, retried, and set aside after FAILURES_SET_ASIDE of them.
            later = clock.now() + backoff(due.attempts)
            extra = {"key": due.key, "attempts": due.attempts, "until": clock.instant(later)}
            if isinstance(why, Retry):
                log.warning("scheduled item postponed", extra={**extra, "why": str(why)})
            elif due.attempts >= FAILURES_SET_ASIDE:
                log.exception("scheduled item set aside as failed", extra=extra)
                await self.schedule.set_aside(due.key, self.owner)
                return 0
            else:
                log.exception("scheduled item failed", extra=extra)
            await self.schedule.postpone(due.key, self.owner, clock.micros(later))
            return 0
        if not await self.schedule.finish(due.key, self.owner):
            log.warning("scheduled item finished after its lease was lost", extra={"key": due.key})
        return 1

    async def run_forever(self, poll_seconds: float) -> None:
        """`run_due` every `poll_seconds` until cancelled; a store that fails is retried at
        the next turn (logged)."""
        while True:
            try:
                await self.run_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the scheduler's turn failed; retrying at the next one")
            await asyncio.sleep(poll_seconds)
