"""The Schedule port: time-based items (reminders, warnings) kept until they are sent, and
people's notification preferences, on both stores (sqlite/schedule.py, mongo/schedule.py).

An item is named by its key: the caller's deduplication key (`enqueue` of a key already held
adds nothing), stored in clear with its due time and state, so it must hold ids only, never
personal data. Its body is sealed like a resource body (crypto/, docs/security.md). States:

    pending --claim--> claimed --finish--> sent
       ^                  |  (lease expired: claimed again by anyone)
       +----postpone------+          cancel: pending or claimed -> cancelled
                          |
                          +--set_aside--> failed   (faults past the scheduler's limit)

A claim is a lease (owner, expiry): the claimer sends, then `finish`es; a claimer that dies
leaves the item to be claimed again once the lease expires, so nothing is lost. What this
cannot rule out is a claimer dying after its channel accepted the message and before
`finish` committed: the item is then sent again (at-least-once). Channels carry the item's
key as the message id (notify/channels.py) so a receiver can drop the second copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from ..crypto import BodyCodec, UnreadableBody

State = Literal["pending", "claimed", "sent", "cancelled", "failed"]
DONE: tuple[State, ...] = ("sent", "cancelled")  # what `Schedule.purge` may delete
# The "resource type" item bodies and preferences are sealed as: a key scope of their own.
_ITEM = "schedule-item"
_PREFERENCE = "notification-preference"


@dataclass(frozen=True, slots=True)
class Due:
    """A scheduled item as stored; `due`, `lease` in microseconds since the epoch."""

    key: str
    due: int
    body: bytes | None  # None: it cannot be opened (its data key is gone, or it was damaged)
    state: State = "pending"
    attempts: int = 0  # claims so far
    owner: str | None = None
    lease: int | None = None


class Schedule(Protocol):
    """Scheduled items and preferences. Every method is atomic and safe across processes."""

    async def enqueue(self, items: Sequence[tuple[str, int, bytes]]) -> list[str]:
        """Add `(key, due, body)` items whose key is not held yet (in any state); the keys
        added, in the order given."""

    async def claim(self, now: int, lease: int, owner: str, limit: int) -> list[Due]:
        """Up to `limit` items due at `now` (pending, or claimed under a lease that expired
        by `now`), earliest first, now claimed by `owner` until `lease`."""

    async def finish(self, key: str, owner: str) -> bool:
        """Mark an item `owner` holds claimed as sent; False if it does not (any more)."""

    async def postpone(self, key: str, owner: str, due: int) -> bool:
        """Give an item `owner` holds claimed back as pending, due at `due` (a retry)."""

    async def set_aside(self, key: str, owner: str) -> bool:
        """Mark an item `owner` holds claimed as failed: claimed no more, kept for the
        operator (`failed`); False if `owner` does not hold it (any more)."""

    async def failed(self) -> list[Due]:
        """The items set aside, by key, bodies opened where they can be."""

    async def cancel(self, prefix: str) -> int:
        """Cancel the pending and claimed items whose key starts with `prefix`; how many."""

    async def items(self, prefix: str) -> list[Due]:
        """The items whose key starts with `prefix`, by key, bodies opened."""

    async def preference(self, person: str) -> bytes | None:
        """The preferences `person` (`Type/id`) set, or None."""

    async def set_preference(self, person: str, body: bytes) -> None:
        """Keep `body` as the preferences of `person` (replacing earlier ones)."""

    async def purge(self, keys: Sequence[str]) -> int:
        """Delete the items named by `keys` that are sent or cancelled (their key can no
        longer be enqueued again: notify/purge.py decides which); how many."""

    async def forget(self, person: str, keys: Sequence[str]) -> None:
        """Delete the preferences of `person` and the items named by `keys`, whatever their
        state (an erasure: services/erase.py)."""


class Scheduling(Protocol):
    """A store that keeps a schedule."""

    @property
    def schedule(self) -> Schedule: ...


def sealed_item(codec: BodyCodec, key: str, body: bytes) -> bytes:
    return codec.seal(_ITEM, key, 0, body, ())


def opened_item(codec: BodyCodec, key: str, stored: bytes) -> bytes | None:
    """The body of item `key`, or None if it cannot be opened: one such item must not stop
    the claim of the others (the scheduler sets it aside)."""
    try:
        return codec.open(_ITEM, key, 0, stored)
    except UnreadableBody:
        return None


def sealed_preference(codec: BodyCodec, person: str, body: bytes) -> bytes:
    return codec.seal(_PREFERENCE, person, 0, body, ())


def opened_preference(codec: BodyCodec, person: str, stored: bytes) -> bytes:
    return codec.open(_PREFERENCE, person, 0, stored)
