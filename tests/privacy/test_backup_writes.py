"""A restore writes each batch while it reads the next (backup/restore.py): the writes still
run one at a time and in order, and a write that fails stops the restore with its error."""

from __future__ import annotations

import asyncio

import pytest

from fhir_server.backup.restore import _OneAhead

pytestmark = pytest.mark.anyio


async def test_writes_run_one_at_a_time_in_order() -> None:
    events: list[str] = []

    async def write(name: str) -> None:
        events.append(f"start {name}")
        await asyncio.sleep(0.01)
        events.append(f"end {name}")

    writing = _OneAhead()
    for name in "abc":
        await writing.then(write(name))
        events.append(f"read after {name}")  # what the restore does while the write runs
    await writing.done()
    assert events == ["start a", "read after a", "end a", "start b", "read after b", "end b",
                      "start c", "read after c", "end c"]


async def test_a_failed_write_stops_the_next_one() -> None:
    started: list[str] = []

    async def write(name: str) -> None:
        started.append(name)
        if name == "bad":
            raise OSError("disk full")

    writing = _OneAhead()
    await writing.then(write("bad"))
    with pytest.raises(OSError, match="disk full"):
        await writing.then(write("next"))
    assert started == ["bad"]
    await writing.done()  # nothing left in flight
