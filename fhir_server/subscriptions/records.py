"""What the subscriptions keep in the store's outbox (store/base.py `Outbox`), under `subs/`;
sealed at rest like every outbox record (store/bodies.py).

- `subs/p/<subscription>/<stamp>`: an event a write left, in the write's own unit of work;
- `subs/e/<subscription>/<number>`: the same event once numbered (the dispatcher numbers
  pending events in stamp order, under its lease); kept for `$events`;
- `subs/s/<subscription>`: the delivery state (events numbered, delivered, retries);
- `subs/o/<subscription>`: who created the subscription, whose rights each notification
  passes when sent;
- `subs/l/<subscription>`: the lease of the dispatcher serving it;
- `subs/k/<subscription>`: its channel header values and signing secret (credentials.py), which
  its stored resource holds masked;
- `subs/t/<subscription>`: the highest event number removed once delivered and past its
  retention (retention.py): `$events` says that events up to it are gone;
- `subs/d/<dispatcher>`: a dispatcher alive (until when), each taking its share of leases.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from typing import Any

import orjson

from ..store.base import Outbox, Store

PREFIX = "subs/"
# `<TOLD_PREFIX><study>/<patient>`: the trial version a patient's physicians were last told of
# (trials/rematch.py); it names the patient, so an erasure removes it with their events.
TOLD_PREFIX = "rematch/a/"
_SEQUENCE = itertools.count()
_PROCESS = f"{os.getpid():x}"


def pending_prefix(subscription: str) -> str:
    return f"{PREFIX}p/{subscription}/"


def pending_key(subscription: str, micros: int) -> str:
    """A key ordered by write time, then by order within this process."""
    return f"{pending_prefix(subscription)}{micros:016x}{next(_SEQUENCE):010x}-{_PROCESS}"


def events_prefix(subscription: str) -> str:
    return f"{PREFIX}e/{subscription}/"


BLOCK = 100  # events listed together: keys share their prefix but for the last two digits


def event_key(subscription: str, number: int) -> str:
    return f"{events_prefix(subscription)}{number:012d}"


def block_prefixes(subscription: str, first: int, last: int) -> list[str]:
    """Prefixes listing events `first` to `last` (and others of their blocks), so a batch is
    read without listing every event kept."""
    return [f"{events_prefix(subscription)}{block:010d}"
            for block in range(first // BLOCK, last // BLOCK + 1)]


async def numbered(store: Store, subscription: str, first: int, last: int) -> list[Event]:
    """The kept events numbered `first` to `last`, in order."""
    found = []
    for prefix in block_prefixes(subscription, first, last):
        found += [event(body) for _, body in await store.outbox(prefix)]
    return [e for e in found if first <= e.number <= last]


def state_key(subscription: str) -> str:
    return f"{PREFIX}s/{subscription}"


def owner_key(subscription: str) -> str:
    return f"{PREFIX}o/{subscription}"


def lease_key(subscription: str) -> str:
    return f"{PREFIX}l/{subscription}"


CREDENTIALS_PREFIX = f"{PREFIX}k/"


def credentials_key(subscription: str) -> str:
    return f"{CREDENTIALS_PREFIX}{subscription}"


def purged_key(subscription: str) -> str:
    return f"{PREFIX}t/{subscription}"


LEASES = lease_key("")
DISPATCHERS = f"{PREFIX}d/"


def subscription_keys(subscription: str) -> tuple[str, ...]:
    """The single records of a subscription (the events are listed by prefix)."""
    return (state_key(subscription), owner_key(subscription), lease_key(subscription),
            credentials_key(subscription), purged_key(subscription))


@dataclass(frozen=True, slots=True)
class Event:
    """A write that matched a subscription: its interaction and the version it left."""

    resource_type: str
    id: str
    version: int
    interaction: str  # create | update | delete
    method: str  # the HTTP method that wrote the version (POST, PUT, PATCH, DELETE)
    at: str  # the version's meta.lastUpdated
    patients: tuple[str, ...] = ()  # whose compartment holds the resource (for the audit)
    number: int = 0  # 0 until numbered

    @property
    def reference(self) -> str:
        return f"{self.resource_type}/{self.id}"


@dataclass(slots=True)
class State:
    """Where delivery of a subscription stands (times in microseconds since the epoch)."""

    events: int = 0  # events numbered so far (eventsSinceSubscriptionStart)
    delivered: int = 0  # the last event number the receiver acknowledged
    attempts: int = 0  # failed attempts in a row
    retry_at: int = 0
    failing_since: int | None = None
    last_sent: int = 0


def dump(record: Event | State | dict[str, Any]) -> bytes:
    return orjson.dumps(record)  # dataclasses natively (dataclasses.asdict is 100 times slower)


def event(body: bytes) -> Event:
    fields = orjson.loads(body)
    return Event(**{**fields, "patients": tuple(fields.get("patients", ()))})


def state(body: bytes | None) -> State:
    if not body:
        return State()
    fields = orjson.loads(body)
    fields.pop("withheld", None)  # kept by earlier versions, never read
    return State(**fields)


async def one(store: Store, key: str) -> bytes | None:
    """The body of the record `key`, None if there is none."""
    return next((body for found, body in await store.outbox(key) if found == key), None)


async def forget(store: Store, patient: str) -> set[str]:
    """Remove every event, pending or numbered, of every subscription whose resource is
    Patient/`patient` or in their compartment, and the records of the trials they were told
    of (an erasure: services/erase.py); what was removed, each event named once (by its
    subscription and version), so that the sets of several passes unite into a count. The
    numbers of numbered ones are left as gaps. Erasures are rare: every event is read.

    An event the dispatcher numbers between the reads of the two prefixes is listed twice,
    pending and numbered: both keys go, and it is named once."""
    gone: dict[str, str] = {}
    for prefix in (f"{PREFIX}p/", f"{PREFIX}e/"):
        for key, body in await store.outbox(prefix):
            if _names(found := event(body), patient):
                gone[key] = f"{key.split('/', 3)[2]}/{found.reference}/{found.version}"
    gone.update((key, key) for key, _ in await store.outbox(TOLD_PREFIX)
                if key.rsplit("/", 1)[-1] == patient)
    if gone:
        await store.commit([Outbox(remove=tuple(gone))])
    return set(gone.values())


def _names(found: Event, patient: str) -> bool:
    return patient in found.patients or (found.resource_type == "Patient" and found.id == patient)
