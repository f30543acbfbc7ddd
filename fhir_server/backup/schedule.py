"""Backups the server takes by itself (FHIR_SERVER_BACKUP_INTERVAL_HOURS, e.g. 24: daily),
as a task of its lifespan. With several worker processes each runs the task; the one that
takes the lock file of the backup directory first backs up, the others find a fresh archive
and skip their turn."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

from .. import clock
from ..private_files import turn_lock
from .take import taken_at

log = logging.getLogger(__name__)


async def every(hours: int, directory: Path, back_up: Callable[[], Awaitable[object]]) -> None:
    """Run `back_up` every `hours` hours, for ever (cancel the task to stop)."""
    while True:
        await asyncio.sleep(hours * 3600)
        await once(hours, directory, back_up)


async def once(hours: int, directory: Path, back_up: Callable[[], Awaitable[object]]) -> bool:
    """One scheduled turn: back up unless another process holds the lock or took an archive
    in the last half interval; whether this one did. A failure is logged, not raised: the
    next turn tries again."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with turn_lock(directory / ".backup.lock") as held:
        if held is None:
            return False
        recent = clock.now() - timedelta(hours=hours / 2)
        if any((at := taken_at(path)) is not None and at > recent for path in directory.iterdir()):
            return False
        try:
            await back_up()
        except Exception:  # noqa: BLE001 - the server goes on; the log says why
            log.exception("scheduled backup failed")
            return False
        return True
