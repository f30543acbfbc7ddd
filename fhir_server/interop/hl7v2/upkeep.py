"""What the server does to the inbox file besides receiving (docs/hl7v2.md "Erasure and
retention"): an erasure wipes the messages that wrote the patient, and an hourly task applies
FHIR_SERVER_HL7_KEEP_DAYS. Both open the file only if it exists (the listener may run in
another process, `fhir-server mllp`, or not at all)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from ...model.errors import Kind, fail
from .inbox import Codec, Inbox

log = logging.getLogger("fhir_server.hl7v2")
PERIOD = 3600.0  # seconds between two retention passes
T = TypeVar("T")


async def _on_inbox(path: Path, codec: Codec, work: Callable[[Inbox], Awaitable[T]], none: T) -> T:
    if not path.exists():
        return none
    inbox = Inbox(path, codec)
    try:
        return await work(inbox)
    finally:
        inbox.close()


async def forget_patient(path: Path, codec: Codec, patient: str) -> int:
    """Wipe the messages of the inbox at `path` that wrote Patient/`patient`; how many.
    BUSY while the inbox is locked past its busy timeout (the listener's writes): the
    erasure's own error, left to be finished, never one that stops a run of erasures."""
    try:
        return await _on_inbox(path, codec, lambda inbox: inbox.forget(patient), 0)
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise fail(Kind.BUSY, "transient", "The HL7 v2 inbox is busy; retry later.") from exc
        raise


async def expire(path: Path, codec: Codec, keep_days: int) -> tuple[int, int]:
    """One retention pass (Inbox.expire): messages wiped, messages deleted."""
    return await _on_inbox(path, codec, lambda inbox: inbox.expire(keep_days), (0, 0))


async def keep(path: Path, codec: Codec, keep_days: int, period: float = PERIOD) -> None:
    """A retention pass every `period` seconds until cancelled; a failed pass is the next
    one's work."""
    while True:
        try:
            wiped, deleted = await expire(path, codec, keep_days)
            if wiped or deleted:
                log.info("HL7 v2 messages past retention", extra={"wiped": wiped, "deleted": deleted})
        except Exception:  # noqa: BLE001 - the server goes on; the next pass tries again
            log.exception("HL7 v2 messages could not be expired")
        await asyncio.sleep(period)
