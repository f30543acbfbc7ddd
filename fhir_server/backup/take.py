"""`fhir-server backup`: an encrypted archive of every resource version (bodies as stored)
and of the audit trail with its hash chain, in a directory where archives older than the
retention are pruned. No data keys (they stay in datakeys.db, with the key ring's KEK
wrapping them) and no indexes (rebuilt on restore). docs/backup-and-erasure.md.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .. import clock
from ..audit import prune as pruning
from ..audit.chain import Chain
from ..audit.events import command_event
from ..crypto import KeyProvider
from ..model.ids import new_id
from ..store.base import Store
from .archive import ArchiveWriter
from .records import AUDIT, CHECKPOINT, CLINICAL, END, PRUNED, link_record, version_record

SUFFIX = ".fhirbak"
_PREFIX = "fhir-backup-"
_STAMP = "%Y%m%dT%H%M%S.%fZ"


def archive_name(moment: datetime) -> str:
    """The file name of an archive started at `moment` (sorts by time)."""
    return f"{_PREFIX}{moment.strftime(_STAMP)}{SUFFIX}"


def taken_at(path: Path) -> datetime | None:
    """When the archive `path` was started, from its name; None for another file."""
    name = path.name
    if not (name.startswith(_PREFIX) and name.endswith(SUFFIX)):
        return None
    try:
        return datetime.strptime(name[len(_PREFIX):-len(SUFFIX)] + "+0000", _STAMP + "%z")
    except ValueError:
        return None


async def back_up(*, main: Store, audit: Store, chain: Chain, provider: KeyProvider,
                  directory: Path) -> tuple[Path, dict[str, int]]:
    """Write a new archive into `directory`; (its path, counts of what it holds). A backup
    cut short leaves no archive (it is written aside, then renamed)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    started = clock.now()
    final = directory / archive_name(started)
    part = final.with_name(final.name + ".part")
    counts = {"versions": 0, "audit": 0, "links": 0, "checkpoints": 0, "pruned": 0}
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            writer = ArchiveWriter(file, provider, {"created": clock.instant(started),
                                                    "archive": new_id()})
            # The links first: events stored later have no link yet and wait for the next
            # backup, so the archive's chain covers exactly its events.
            links = chain.links()
            chained = {id for link in links for id in link.event_ids}
            async for versions in main.dump():
                for version in versions:
                    writer.add(version_record(CLINICAL, version))
                counts["versions"] += len(versions)
            async for versions in audit.dump():
                for version in versions:
                    if version.id in chained:
                        writer.add(version_record(AUDIT, version))
                        counts["audit"] += 1
            for link in links:
                writer.add(link_record(link))
            counts["links"] = len(links)
            checkpoints, notes = pruning.saved(chain.path)  # after the links (see `saved`)
            for row in checkpoints:
                writer.add([CHECKPOINT, *row])
            for row in notes:
                writer.add([PRUNED, *row])
            counts["checkpoints"], counts["pruned"] = len(checkpoints), len(notes)
            writer.add([END, counts])
            writer.close()
            file.flush()
            os.fsync(file.fileno())
        os.replace(part, final)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return final, counts


async def take(*, main: Store, audit: Store, chain: Chain, provider: KeyProvider,
               directory: Path, keep_days: int, operator: str,
               record: Callable[[dict[str, Any]], Awaitable[str]]) -> tuple[Path, dict[str, int]]:
    """A backup as the command line and the schedule take it: the archive, then the pruning
    of archives past `keep_days`, then its AuditEvent (DICOM Export, run by `operator`)."""
    path, counts = await back_up(main=main, audit=audit, chain=chain, provider=provider,
                                 directory=directory)
    pruned = prune(directory, keep_days)
    await record(command_event(
        command="backup", action="R", recorded=clock.instant(), operator=operator,
        entities=[{"name": path.name, "role": {
            "system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "20",
            "display": "Job"}, "detail": [
                {"type": key, "valueString": str(value)}
                for key, value in {**counts, "archives pruned": len(pruned)}.items()]}]))
    return path, counts


def prune(directory: Path, keep_days: int) -> list[Path]:
    """Remove the archives of `directory` started more than `keep_days` ago; the removed."""
    limit = clock.now() - timedelta(days=keep_days)
    old = [path for path in directory.glob(f"{_PREFIX}*{SUFFIX}")
           if (at := taken_at(path)) is not None and at < limit]
    for path in old:
        path.unlink()
    return old
