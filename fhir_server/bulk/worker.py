"""The export worker: a task of each server process that claims jobs from the store and runs
them (services/export.advance). Several processes, or several servers on one MongoDB, each
run one: a claim is atomic and leased, so a job runs in one place at a time, and a job whose
process died is claimed again once its lease ends (docs/export.md).

A kick-off in this process wakes its worker at once (`wake`); otherwise the worker looks at
the store every POLL_SECONDS only, for jobs whose lease ended elsewhere: an idle server sends
the store next to nothing."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid

from .. import clock
from ..services import export
from ..services.context import Context

log = logging.getLogger("fhir_server.export")

POLL_SECONDS = 30.0  # between looks for work nobody woke it for (a lease's length)
RETRY_SECONDS = 1.0  # after the store failed
SWEEP_SECONDS = 60.0  # between removals of expired jobs


class ExportWorker:
    """Claims and runs export jobs until cancelled."""

    def __init__(self, ctx: Context, policy: export.Policy, record: export.Record) -> None:
        self.ctx = ctx
        self.policy = policy
        self.record = record
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._woken: asyncio.Event | None = None

    def wake(self) -> None:
        """A job was kicked off here: look for it now."""
        if self._woken is not None:
            self._woken.set()

    async def run_one(self) -> bool:
        """Claim one job and run it; False when there was none to claim."""
        now = clock.seconds()
        job = await self.ctx.store.jobs.claim(self.owner, now, now + self.policy.lease_seconds)
        if job is None:
            return False
        await export.advance(self.ctx, job, self.owner, self.policy, self.record)
        return True

    async def run(self) -> None:
        """Run jobs as they come; remove expired ones every SWEEP_SECONDS meanwhile (a long
        job does not hold back the removal of others' expired files)."""
        sweeping = asyncio.get_running_loop().create_task(self._sweep())
        try:
            await self._work()
        finally:
            sweeping.cancel()

    async def _sweep(self) -> None:
        while True:
            try:
                await export.sweep(self.ctx, self.policy)
            except Exception:  # noqa: BLE001 - the store unreachable: try again later
                log.exception("export sweep")
            await asyncio.sleep(SWEEP_SECONDS)

    async def _work(self) -> None:
        self._woken = asyncio.Event()
        while True:
            try:
                while await self.run_one():
                    pass
                self._woken.clear()
                try:
                    await asyncio.wait_for(self._woken.wait(), POLL_SECONDS)
                except TimeoutError:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the store unreachable: try again later
                log.exception("export worker")
                await asyncio.sleep(RETRY_SECONDS)
