"""`fhir-server restore ARCHIVE`: rebuild the store, its indexes, the audit trail and its hash
chain from an archive, then replay the erasure ledger, all before the server serves again.

The archive is checked whole first (every chunk authenticated, every body opened with this
server's data keys, the counts of its last record): a damaged, truncated or foreign archive is
refused before anything is written. The stores and the chain must be empty. A clinical version
sealed under a key an erasure destroyed is left out (it is unreadable, and its patient erased);
an AuditEvent so sealed is restored as it is, shredded, for the chain. Then every erasure the
ledger records since the archive was started is done again: a patient erased after the backup
stays erased. docs/backup-and-erasure.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..audit import prune as pruning
from ..audit.chain import Chain, Link
from ..crypto import BodyCodec, EnvelopeCodec, ErasureLedger, KeyProvider
from ..search import IndexEntry, Registry, extract
from ..services.erase import destroyed_keys, replay
from ..services.shredded import StoredTrail, classify
from ..store.base import Store, Version
from ..store.index_layout import is_empty
from .archive import ArchiveError, read_header, records
from .records import AUDIT, CHECKPOINT, CLINICAL, END, LINK, PRUNED, link_of, version_of

BATCH = 1000
Loaded = list[tuple[Version, Sequence[IndexEntry]]]


@dataclass
class Restored:
    """What a restore did."""

    versions: int = 0
    audit: int = 0
    links: int = 0
    left_out: int = 0  # clinical versions sealed under a destroyed key
    replayed: list[str] = field(default_factory=list)  # patients erased again
    keys_destroyed: int = 0  # erased patients' keys a restored key backup had brought back


@dataclass
class Target:
    """Where a restore writes, and what it reads bodies and erasures with."""

    main: Store
    audit: Store
    chain: Chain
    provider: KeyProvider
    codec: BodyCodec
    ledger: ErasureLedger | None
    registry: Registry
    record: Callable[[dict[str, Any]], Awaitable[str]]


def check(archive: Path, target: Target, destroyed: frozenset[bytes]) -> dict[str, Any]:
    """The archive's header, once every record was read and every body opened; ArchiveError
    at the first problem."""
    counts = {"versions": 0, "audit": 0, "links": 0, "checkpoints": 0, "pruned": 0}
    trail, ended = StoredTrail(), None
    with archive.open("rb") as file:
        header, _ = read_header(file)
        file.seek(0)
        for record in records(file, target.provider):
            if ended is not None:
                raise ArchiveError("the archive has records after its end")
            kind = record[0] if isinstance(record, list) and record else None
            if kind in (CLINICAL, AUDIT):
                classify(trail, target.codec, destroyed, version_of(record))
                counts["versions" if kind == CLINICAL else "audit"] += 1
            elif kind == LINK:
                counts["links"] += 1
            elif kind in (CHECKPOINT, PRUNED):
                counts["checkpoints" if kind == CHECKPOINT else "pruned"] += 1
            elif kind == END:
                ended = record[1]
            else:
                raise ArchiveError("the archive holds a record of an unknown kind")
    if ended is None or {"checkpoints": 0, "pruned": 0, **ended} != counts:  # older: neither
        raise ArchiveError("the archive's records do not add up to the counts it ends with")
    if trail.unreadable:
        some = sorted(trail.unreadable)[0]
        raise ArchiveError(f"{len(trail.unreadable)} bodies, e.g. of {some}, cannot be opened "
                           "with this server's data keys (datakeys.db): restore beside the data "
                           "keys of the server the backup was taken from")
    return dict(header)


async def restore(archive: Path, target: Target) -> Restored:
    """Restore `archive` into `target` (see the module docstring). ArchiveError before any
    write if the archive cannot be restored; ValueError if a store or the chain is not empty."""
    destroyed = destroyed_keys(target.ledger) if target.ledger else frozenset()
    if isinstance(target.codec, EnvelopeCodec):
        # datakeys.db may come from a key backup older than some erasures: destroy again.
        done_keys = target.codec.keys.destroy_keys(destroyed)
    else:
        done_keys = 0
    header = check(archive, target, destroyed)
    if not (await is_empty(target.main) and await is_empty(target.audit)) or target.chain.links():
        raise ValueError("restore rebuilds empty stores: the store, the audit store or the audit "
                         "chain holds data; move them aside first")
    done = Restored(keys_destroyed=done_keys)
    with archive.open("rb") as file:
        await _load(records(file, target.provider), target, destroyed, done)
    await target.main.loaded()
    await target.audit.loaded()
    for entry in target.ledger.entries() if target.ledger else ():
        if entry["erased"] >= header["created"]:
            await replay(target.main, target.registry, target.record, entry, "on restore")
            done.replayed.append(entry["patient"])
    return done


class _OneAhead:
    """Store writes run one at a time, each while the next batch is read, opened and indexed:
    the store's writer thread and the extraction overlap (two cores), in the same order."""

    def __init__(self) -> None:
        self._pending: asyncio.Future[None] | None = None

    async def then(self, write: Coroutine[Any, Any, None]) -> None:
        """Wait for the write before, then start `write` without waiting for it; if the write
        before failed, `write` never starts and its error is raised."""
        try:
            await self.done()
        except BaseException:
            write.close()
            raise
        self._pending = asyncio.ensure_future(write)
        await asyncio.sleep(0)  # let it start: it hands its batch to the store's writer thread

    async def done(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            await pending


async def _load(found: Any, target: Target, destroyed: frozenset[bytes], done: Restored) -> None:
    writing = _OneAhead()
    try:
        await _read_and_write(found, target, destroyed, done, writing)
    finally:
        await writing.done()  # never leave a write running behind an error


async def _read_and_write(found: Any, target: Target, destroyed: frozenset[bytes], done: Restored,
                          writing: _OneAhead) -> None:
    main: Loaded = []
    audit: Loaded = []
    links: list[Link] = []
    checkpoints: list[list[Any]] = []
    notes: list[list[Any]] = []
    trail = StoredTrail()
    erased: set[tuple[str, str]] = set()  # resources whose versions were left out
    for record in found:
        kind = record[0]
        if kind == LINK:
            links.append(link_of(record))
            continue
        if kind in (CHECKPOINT, PRUNED):
            (checkpoints if kind == CHECKPOINT else notes).append(record[1:])
            continue
        if kind not in (CLINICAL, AUDIT):
            continue
        version = version_of(record)
        body = classify(trail, target.codec, destroyed, version)
        key = (version.resource_type, version.id)
        if kind == CLINICAL and (body is None and version.body is not None or
                                 version.body is None and key in erased):
            # Sealed under a destroyed key (its patient was erased), or the deletion of
            # such a resource: nothing of it comes back, not even that it existed.
            erased.add(key)
            done.left_out += 1
            continue
        entries = extract(orjson.loads(body), registry=target.registry) if body else []
        batch = main if kind == CLINICAL else audit
        batch.append((version, entries))
        if len(batch) >= BATCH:
            await writing.then((target.main if kind == CLINICAL else target.audit).load(batch))
            if kind == CLINICAL:
                main = []
            else:
                audit = []
        if kind == CLINICAL:
            done.versions += 1
        else:
            done.audit += 1
    if main:
        await writing.then(target.main.load(main))
    if audit:
        await writing.then(target.audit.load(audit))
    await writing.done()
    target.chain.load(links)
    pruning.put_back(target.chain.path, checkpoints, notes)
    done.links = len(links)
