"""Which finished schedule items may be deleted (docs/notifications.md, "Purge").

An item's key is the guard against its own second enqueue (`Schedule.enqueue` adds nothing
for a key held, whatever its state): deleting the item frees the key. So an item may go only
once it is finished (sent or cancelled: never pending, claimed, or failed, which the
operator lists) and nobody can enqueue its key again:

- `referral/<id>/<n>` (a reminder) and `referral/<id>/<n>/<person>` (its notices): when every
  item of the referral is finished and the referral no longer waits (answered, withdrawn,
  closed, deleted or erased). Only the server writes referrals and no answer sets `referred`
  again, so such a referral never waits again: neither the commit hook, nor the hourly
  rescan (`Reminders.catch_up`), nor a due reminder enqueues for it any more;
- `retention/accounts/<user>/<day>` and `retention/tele-expertise/<id>/<day>` (warnings
  before a closure or deletion on `day`): once `day` is past, as the retention run looks up
  only the keys of days to come;
- `retention/post-mortem/<patient>`: once the Patient is no longer stored at all (erased);
- any other key: kept.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta

import orjson

from .. import clock
from ..services.context import Context
from ..store.schedule import DONE, Due, Schedule
from .reminders import waiting

DATED = ("accounts", "tele-expertise")  # retention warnings whose key ends with their day


async def purge(ctx: Context, schedule: Schedule) -> int:
    """Delete the finished items whose keys can no longer be enqueued again; how many."""
    by_referral: dict[str, list[Due]] = defaultdict(list)
    gone: list[str] = []
    yesterday = clock.now().date() - timedelta(days=1)  # a day's margin for time zones
    for item in await schedule.items(""):
        family, _, rest = item.key.partition("/")
        if family == "referral":
            by_referral[rest.partition("/")[0]].append(item)
        elif item.state in DONE and family == "retention" and await _retention_done(ctx, rest, yesterday):
            gone.append(item.key)
    for referral, items in by_referral.items():
        if all(item.state in DONE for item in items) and not await _waits(ctx, referral):
            gone += [item.key for item in items]
    return await schedule.purge(gone)


async def _retention_done(ctx: Context, rest: str, yesterday: date) -> bool:
    rule, _, tail = rest.partition("/")
    if rule in DATED:
        try:
            return date.fromisoformat(tail.rpartition("/")[2]) < yesterday
        except ValueError:
            return False
    return rule == "post-mortem" and await ctx.store.read("Patient", tail) is None


async def _waits(ctx: Context, referral: str) -> bool:
    found = await ctx.store.read("Communication", referral)
    return found is not None and found.body is not None and waiting(orjson.loads(found.body))
