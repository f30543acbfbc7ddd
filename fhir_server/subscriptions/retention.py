"""How long delivered events are kept: `FHIR_SERVER_SUBSCRIPTION_EVENTS_KEEP_DAYS` after their
write, then an hourly task removes them (both stores, through the outbox). An event not
delivered yet is never removed here: the retry window ends its subscription in `error`, and
its events stay for `$events`. Each subscription remembers the highest number removed
(records.py `purged_key`), so that `$events` can say that events up to it are gone.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

import orjson

from .. import clock
from ..store.base import Outbox, Store
from .records import PREFIX, event, events_prefix, one, purged_key, state

log = logging.getLogger("fhir_server.subscriptions")
PERIOD = 3600.0  # seconds between two purges
_STATES = f"{PREFIX}s/"


async def purge(store: Store, keep_days: int) -> int:
    """Remove the delivered events written more than `keep_days` days ago; how many."""
    cutoff = clock.now() - timedelta(days=keep_days)
    removed = 0
    for key, body in await store.outbox(_STATES):
        subscription, delivered = key[len(_STATES):], state(body).delivered
        gone = [(key, found.number) for key, record in await store.outbox(events_prefix(subscription))
                if (found := event(record)).number <= delivered and _written(found.at) < cutoff]
        if not gone:
            continue
        floor = max(purged(await one(store, purged_key(subscription))), *(n for _, n in gone))
        await store.commit([Outbox(put=((purged_key(subscription), orjson.dumps(floor)),),
                                   remove=tuple(key for key, _ in gone))])
        removed += len(gone)
    return removed


def purged(body: bytes | None) -> int:
    """The highest event number removed (0: none)."""
    return int(orjson.loads(body)) if body else 0


def _written(at: str) -> datetime:
    return datetime.fromisoformat(at.replace("Z", "+00:00"))


async def run(store: Store, keep_days: int, period: float = PERIOD) -> None:
    """Purge every `period` seconds until cancelled; a failed purge is the next one's work."""
    while True:
        try:
            removed = await purge(store, keep_days)
            if removed:
                log.info("delivered subscription events removed", extra={"events": removed})
        except Exception:  # noqa: BLE001 - the server goes on; the next purge tries again
            log.exception("subscription events could not be purged")
        await asyncio.sleep(period)
