"""The retention runs the server makes by itself (FHIR_SERVER_RETENTION_INTERVAL_HOURS), as a
task of its lifespan. Time is the server's clock (clock.py), looked at every POLL seconds, so
a test that moves the clock moves the runs. With several workers, the one holding the lock
file runs; the others skip that turn (a run is idempotent: a second finds nothing to do)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

from .. import clock
from ..private_files import turn_lock

POLL = 60.0  # seconds between looks at the clock
log = logging.getLogger(__name__)


async def every_turn(hours: int, lock: Path, turn: Callable[[], Awaitable[object]]) -> None:
    """Run `turn` every `hours` hours of the clock, for ever (cancel the task to stop)."""
    due = clock.now() + timedelta(hours=hours)
    while True:
        await asyncio.sleep(POLL)
        if clock.now() < due:
            continue
        due = clock.now() + timedelta(hours=hours)
        await once(lock, turn)


async def once(lock: Path, turn: Callable[[], Awaitable[object]]) -> bool:
    """One turn, unless another process holds `lock`; whether it ran. A failure is logged,
    not raised: the next turn tries again."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with turn_lock(lock) as held:
        if not held:
            return False
        try:
            await turn()
        except Exception:  # noqa: BLE001 - the server goes on; the log says why
            log.exception("scheduled retention run failed")
            return False
        return True
