"""The scheduled retention run's lock outlives a server killed outright: the run's child
process holds it (privacy/retention_schedule.py `apart`), so that no other turn starts beside
a run still going."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from fhir_server.private_files import turn_lock
from fhir_server.privacy import retention_schedule

ROOT = Path(__file__).resolve().parents[2]

# The server's side, in a process of its own: one turn whose run is a sleeper printing its pid
# (the real command's argv replaced, the options apart gives it kept).
_SERVER = """
import asyncio, os, sys
from functools import partial
from pathlib import Path
from fhir_server.privacy import retention_schedule
spawn = asyncio.create_subprocess_exec

async def sleeper(*argv, **options):
    options["stdout"] = None  # the test reads the child's pid on the inherited output
    return await spawn(sys.executable, "-c",
                       "import os, time; print(os.getpid(), flush=True); time.sleep(120)", **options)

retention_schedule.asyncio.create_subprocess_exec = sleeper
asyncio.run(retention_schedule.once(Path(sys.argv[1]), partial(retention_schedule.apart, environment=dict(os.environ))))
"""


def _free(lock: Path) -> bool:
    with turn_lock(lock) as held:
        return held is not None


def test_a_run_goes_on_holding_the_lock_when_the_server_is_killed(tmp_path: Path) -> None:
    lock = tmp_path / ".retention.lock"
    server = subprocess.Popen([sys.executable, "-c", _SERVER, str(lock)], cwd=ROOT,
                              stdout=subprocess.PIPE)
    assert server.stdout is not None
    child = int(server.stdout.readline())
    try:
        assert not _free(lock)
        server.kill()
        server.wait()
        assert not _free(lock)  # the run, orphaned, still holds it: no second run beside it
    finally:
        os.kill(child, signal.SIGKILL)
        server.kill()
        server.wait()
        server.stdout.close()
    for _ in range(100):  # the orphan is reaped by init
        if _free(lock):
            break
        time.sleep(0.05)
    assert _free(lock)


@pytest.mark.anyio
async def test_a_daily_run_that_failed_is_tried_again_the_same_day(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The figures pass's schedule (`every_day`): a child that exits non-zero has not done
    the day's work; it is run again RETRY later, and not again that day once it succeeded."""
    monkeypatch.setattr(retention_schedule, "POLL", 0.01)
    monkeypatch.setattr(retention_schedule, "RETRY", timedelta(0))
    statuses = [2, 1, 0]
    ran: list[int] = []

    async def turn(_: int) -> int:
        ran.append(statuses[len(ran)] if len(ran) < len(statuses) else -1)
        return ran[-1]

    task = asyncio.get_running_loop().create_task(retention_schedule.every_day(tmp_path / "lock", turn))
    try:
        for _ in range(200):
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    assert ran == [2, 1, 0]
