"""A version's body as both stores keep it: sealed by the body codec when written (inside the
unit of work, meta stamped, so the version it is bound to is known) and opened when read.
The codec (crypto/codec.py) decides how; the stores only call these.

A version sealed under a data key an erasure destroyed is shredded: nothing can read it ever
again. Search and history pages leave it out (their totals, counted from the index or the
history rows, may still count it); a direct read of it raises UnreadableBody with `destroyed`,
which the service layer answers as it does a version that does not exist
(docs/backup-and-erasure.md). Any other failure to open a body (tampering) raises as it is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import replace
from functools import partial
from typing import Protocol

from ..crypto import BodyCodec, UnreadableBody
from ..search import Registry, patients_of
from .base import (ConditionalCreate, ConditionalUpdate, HistoryPage, Operation, SearchPage, Version,
                   Write)


# Given a stored body (type, id, version, blob), its new stored form, or None to keep it.
Rewrite = Callable[[str, str, int, bytes], bytes | None]


class BodyRewriting(Protocol):
    """A store whose stored bodies a maintenance job can rewrite in place (store/rekey.py)."""

    async def rewrite_bodies(self, rewrite: Rewrite, after: str | None,
                             limit: int) -> tuple[int, str | None]:
        """Apply `rewrite` to up to `limit` stored versions after the cursor `after` (None: from
        the start), in a stable order; writes back the new forms (a body changed meanwhile is
        left as it is). Returns how many were rewritten and the next cursor (None: done)."""


# The compartment of each write `prepare` saw, by the write's identity (the write is kept
# with it: an id is only unique among live objects).
Prepared = dict[int, tuple[Write, Collection[str]]]


def prepare(codec: BodyCodec, registry: Registry, operations: Sequence[Operation]) -> Prepared:
    """Let the codec ready the keys of every resource `operations` write, all at once; returns
    their compartments for `sealed`, so that each is worked out once per write."""
    writes = [op.write if isinstance(op, (ConditionalCreate, ConditionalUpdate)) else op
              for op in operations if isinstance(op, (Write, ConditionalCreate, ConditionalUpdate))]
    prepared = {id(w): (w, _patients(registry, w)) for w in writes}
    codec.prepare((w.resource_type, patients) for w, patients in prepared.values())
    return prepared


def sealed(codec: BodyCodec, registry: Registry, op: Write, version: int, body: bytes,
           prepared: Prepared | None = None) -> bytes:
    """The stored form of `body`, version `version` of what `op` writes (its compartment taken
    from `prepared` when `prepare` saw this very write)."""
    known = prepared.get(id(op)) if prepared else None
    patients = known[1] if known is not None and known[0] is op else _patients(registry, op)
    return codec.seal(op.resource_type, op.id, version, body, patients)


def _patients(registry: Registry, op: Write) -> Collection[str]:
    """The patients whose key seals what `op` writes: its compartment's. A Bundle belongs to
    no compartment, yet a stored one (a referral's frozen record, a document) holds patients'
    resources: the Patients among its entries, so that erasing them shreds it too."""
    if op.resource_type == "Bundle":
        held = {r["id"] for e in op.resource.get("entry", ()) if isinstance(e, dict)
                and isinstance(r := e.get("resource"), dict)
                and r.get("resourceType") == "Patient" and isinstance(r.get("id"), str)}
        if held:
            return held
    return patients_of(registry, op.resource_type, op.entries, op.id, links=False)


def opened(codec: BodyCodec, version: Version) -> Version:
    """`version` with its stored body opened (a deletion has none)."""
    if version.body is None:
        return version
    body = codec.open(version.resource_type, version.id, version.version, version.body)
    return replace(version, body=body)


def unshredded(open_: Callable[[Version], Version], versions: Sequence[Version]) -> tuple[Version, ...]:
    """`versions` opened by `open_`, those shredded by an erasure left out (nobody may read
    them); any other failure to decrypt is raised."""
    kept = []
    for version in versions:
        try:
            kept.append(open_(version))
        except UnreadableBody as error:
            if not error.destroyed:
                raise
    return tuple(kept)


def opened_versions(codec: BodyCodec, versions: Sequence[Version]) -> tuple[Version, ...]:
    """`versions` opened, their keys fetched together, those shredded left out."""
    codec.ready(v.body for v in versions if v.body is not None)
    return unshredded(partial(opened, codec), versions)


async def stored(reading: Awaitable[Version | None]) -> bool:
    """Whether the version `reading` reads is stored, a shredded one included (an erasure
    destroyed its key: it was written, it can no longer be read)."""
    try:
        return await reading is not None
    except UnreadableBody as error:
        if error.destroyed:
            return True
        raise


def opened_page(codec: BodyCodec, page: SearchPage) -> SearchPage:
    return replace(page, matches=opened_versions(codec, page.matches),
                   included=opened_versions(codec, page.included))


def opened_history(codec: BodyCodec, page: HistoryPage) -> HistoryPage:
    return replace(page, versions=opened_versions(codec, page.versions))


# Outbox records (audit/outbox.py) hold AuditEvents until the audit trail has them: sealed
# too, under a key of their own, as version 0 of `outbox/<key>`; they live for milliseconds.
_OUTBOX = "outbox"


def sealed_records(codec: BodyCodec, records: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    return [(key, codec.seal(_OUTBOX, key, 0, body, ())) for key, body in records]


def opened_records(codec: BodyCodec, records: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    return [(key, codec.open(_OUTBOX, key, 0, body)) for key, body in records]
