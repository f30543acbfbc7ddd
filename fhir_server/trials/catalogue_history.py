"""What was written to resources of some types since they were read, from the store's history
of those types: every write, deletion included, makes an entry there, whichever worker
process wrote it. match_catalogue.py keeps the trial catalogue (ResearchStudy, Group,
Location: `TYPES`) by it, consents_kept.py the active Consents.

"Since" rests on each store's promise of when a version can still appear:

- SQLite: one writer at a time, and each stamps its versions after taking the lock, so a
  version committed later is stamped no earlier than the newest one read now. The history
  lists entries in commit order: from the newest down to those stamped before the newest read
  last time, it holds everything written since (several stamped in the same instant included:
  the entries of that instant are read again and those applied already skipped).
- MongoDB: units commit concurrently, so a version can appear behind newer ones, but never
  later than its settling time (store/mongo/store.py `SETTLE_SECONDS`), which a `_since`
  answer gives as `as_of`. From the newest entry down to those stamped before the `as_of` of
  last time, the history holds everything written since; and while the newest entries are
  not older than it, a late version may still appear behind them, so the newest entry alone
  cannot tell that nothing was written.
- Erasure removes history and makes no entry. When it removes the newest entry of a type
  the resources were read at, the history no longer shows where that stood, and `position`
  says so: they are read afresh. An erasure removing older entries goes unseen here. It
  removes a patient's compartment, which holds no ResearchStudy, no Location and no
  eligibility Group (its profile allows no `member`): a Group it removes was never in the
  catalogue. It does hold their Consents: consents_kept.py watches erasures apart.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable
from dataclasses import dataclass

from .. import clock
from ..services.context import Context
from ..store.base import HistoryQuery, Store, Version

TYPES = ("ResearchStudy", "Group", "Location")  # the trial catalogue's
CHUNK = 100  # ids an `_id` search names
PAGE = 100  # history entries a read
Entry = tuple[str, int, str]  # a history entry: id, version, instant
Stamp = tuple[Entry | None, ...]
Seen = tuple[str, str, int, str]  # type, id, version, instant


@dataclass(frozen=True, slots=True)
class Position:
    """Where the history of some types stood when their resources were read."""

    stamp: Stamp  # the newest entry of each type
    floors: tuple[str | None, ...]  # per type: a version appearing later is stamped no earlier
    seen: frozenset[Seen]  # entries stamped from the floors on, applied already
    settles: bool  # a version can appear behind the newest one (MongoDB)

    def current(self, stamp: Stamp) -> bool:
        """Whether nothing can have been written since, the newest entries now being `stamp`."""
        if stamp != self.stamp:
            return False
        return not self.settles or all(entry is None or (floor is not None and entry[2] < floor)
                                       for entry, floor in zip(stamp, self.floors))


async def newest(ctx: Context, resource_type: str) -> Entry | None:
    """The newest history entry of `resource_type` (id, version, instant): every write of
    that type, deletion included, makes a new one."""
    page = await ctx.store.history(HistoryQuery(resource_type, count=1))
    version = page.versions[0] if page.versions else None
    return (version.id, version.version, version.last_updated) if version else None


async def stamp(ctx: Context, types: tuple[str, ...]) -> Stamp:
    """The newest history entry of each of `types`."""
    return tuple([await newest(ctx, resource_type) for resource_type in types])


async def position(ctx: Context, types: tuple[str, ...],
                   before: Position | None = None) -> tuple[Position, tuple[set[str], ...] | None]:
    """Where the history of `types` stands now, read before their resources are, with the ids
    of each type written since `before` (None: when the history no longer shows where
    `before` stood, its newest entry of a type erased; or no `before`)."""
    # First: a version not yet visible is stamped no earlier than this answer's `as_of`. A
    # store that gave none (SQLite) gives none ever: not asked again, the question costing
    # it a scan of the type's history (no entry is that recent).
    as_of = None
    if before is None or before.settles:
        as_of = (await ctx.store.history(HistoryQuery(types[0], since=clock.instant(), count=1))).as_of
    newest_now = await stamp(ctx, types)
    floors = tuple(as_of if as_of is not None else entry[2] if entry else None for entry in newest_now)
    changed: list[set[str]] | None = [] if before is not None else None
    seen: set[Seen] = set()
    for n, resource_type in enumerate(types):
        floor = floors[n] if before is None else before.floors[n]
        entries = await _down_to(ctx, resource_type, floor)
        keys = {(resource_type, v.id, v.version, v.last_updated) for v in entries}
        seen |= {key for key in keys if floors[n] is None or key[3] >= floors[n]}
        if before is None or changed is None:
            continue
        kept = before.stamp[n]
        if kept is not None and floor is not None and kept[2] >= floor and (resource_type, *kept) not in keys:
            changed = None  # its newest entry was erased
        else:
            changed.append({key[1] for key in keys - before.seen})
    now = Position(newest_now, floors, frozenset(seen), as_of is not None)
    return now, tuple(changed) if changed is not None else None


async def _down_to(ctx: Context, resource_type: str, floor: str | None) -> list[Version]:
    """The history of `resource_type`, newest first, down to the entries stamped before
    `floor` (all of it if None)."""
    found: list[Version] = []
    cursor = None
    while True:
        page = await ctx.store.history(HistoryQuery(resource_type, count=PAGE, before_seq=cursor))
        for version in page.versions:
            if floor is not None and version.last_updated < floor:
                return found
            found.append(version)
        if page.next_seq is None:
            return found
        cursor = page.next_seq


Locks = weakref.WeakKeyDictionary[Store, tuple[asyncio.AbstractEventLoop, asyncio.Lock]]


def reading_lock(locks: Locks, store: Store) -> asyncio.Lock:
    """The lock in `locks` of what is kept for `store`, in the running loop (a lock serves
    one loop): one read at a time, a call arriving meanwhile finds its result."""
    loop = asyncio.get_running_loop()
    found = locks.get(store)
    if found is None or found[0] is not loop:
        found = locks[store] = (loop, asyncio.Lock())
    return found[1]


def searches(params: list[tuple[str, str]], ids: Iterable[str] | None) -> list[list[tuple[str, str]]]:
    """The searches of `params` that read every resource (`ids` None) or those of `ids` again,
    CHUNK ids by `_id` each, in id order."""
    if ids is None:
        return [list(params)]
    chosen = sorted(ids)
    return [[("_id", ",".join(chosen[n:n + CHUNK])), *params] for n in range(0, len(chosen), CHUNK)]
