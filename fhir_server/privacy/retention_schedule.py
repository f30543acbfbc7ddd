"""The retention runs the server makes by itself (FHIR_SERVER_RETENTION_INTERVAL_HOURS), as a
task of its lifespan. Time is the server's clock (clock.py), looked at every POLL seconds, so
a test that moves the clock moves the runs. With several workers, the one holding the lock
file runs; the others skip that turn (a run is idempotent: a second finds nothing to do).

Each turn runs `fhir-server retention run` in a child process at a lower priority (`apart`):
in the server's own process a large run made the p99 of the reads it served 5 to 166 times the
idle one, apart at niceness 10 within twice (docs/privacy.md, "The retention run, measured").

The day's trial figures (`fhir-server figures run`, trials/figures_pass.py) are computed the
same way, at start and whenever the clock's UTC day changes (`every_day`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from pathlib import Path

from .. import clock
from ..private_files import turn_lock
from ..settings import ENV_PREFIX, Settings

POLL = 60.0  # seconds between looks at the clock
RETRY = timedelta(hours=1)  # before a daily run that failed is tried again
# How much lower than the server the run's process is scheduled (os.nice): its work waits for
# the requests' rather than sharing the cores with them.
NICENESS = 10
SCHEDULED = "fhir-server (scheduled)"  # who its AuditEvent names
log = logging.getLogger(__name__)


async def every_turn(hours: int, lock: Path, turn: Callable[[int], Awaitable[object]]) -> None:
    """Run `turn` every `hours` hours of the clock, for ever (cancel the task to stop)."""
    due = clock.now() + timedelta(hours=hours)
    while True:
        await asyncio.sleep(POLL)
        if clock.now() < due:
            continue
        due = clock.now() + timedelta(hours=hours)
        await once(lock, turn)


async def every_day(lock: Path, turn: Callable[[int], Awaitable[object]]) -> None:
    """Run `turn` at start and on each new UTC day of the clock, for ever (cancel the task to
    stop); a turn that failed (a non-zero exit status) or that another process held the lock
    for is tried again RETRY later."""
    done = None
    due = clock.now()
    while True:
        now = clock.now()
        if now.date() != done and now >= due:
            if await once(lock, turn):
                done = now.date()
            else:
                due = now + RETRY
        await asyncio.sleep(POLL)


async def once(lock: Path, turn: Callable[[int], Awaitable[object]]) -> bool:
    """One turn, unless another process holds `lock`; whether it ran and succeeded (`turn`
    returned nothing or a zero exit status). `turn` is given the held lock's descriptor. A
    failure is logged, not raised: the next turn tries again."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with turn_lock(lock) as held:
        if held is None:
            return False
        try:
            status = await turn(held)
        except Exception:  # noqa: BLE001 - the server goes on; the log says why
            log.exception("scheduled run failed")
            return False
        return not status


def child_environment(settings: Settings) -> dict[str, str]:
    """The environment of a run's child process: the server's, its FHIR_SERVER_ variables
    replaced by those of `settings`, so that the run works on the server's stores and keys
    even when the app was built with settings of its own (`create_app(settings)`)."""
    inherited = {name: value for name, value in os.environ.items()
                 if not name.upper().startswith(ENV_PREFIX)}
    return {**inherited, **settings.environment()}


async def apart(lock: int, environment: Mapping[str, str],
                command: tuple[str, ...] = ("retention", "run", "--scheduled")) -> int:
    """One run of `fhir-server <command>` in a child process at NICENESS, with
    `environment` (child_environment: the server's settings); its exit status. What it did is in its AuditEvent;
    its standard output (one line per record) is not kept, its errors go to the server's.
    The child inherits the turn's `lock` descriptor: if the server is killed outright, the
    run goes on holding the lock, so that no other turn starts beside it."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fhir_server.cli", *command, "--nice", str(NICENESS),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        pass_fds=(lock,), env=environment)
    try:
        status = await child.wait()
    except asyncio.CancelledError:  # the server stops: the run stops with it (the next finishes it)
        child.terminate()
        await asyncio.shield(child.wait())
        raise
    if status:
        log.error("scheduled %s exited with status %d", " ".join(command[:2]), status)
    return status
