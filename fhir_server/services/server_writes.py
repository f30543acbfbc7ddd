"""The writes the server makes for its own workflows: referrals and answers, withdrawal
marks, frozen records, consent proposals, published definitions. They go through the service
layer like a client's: the access decision (as the server, the only one allowed to write
referrals and frozen records), validation and indexing, one unit of work, the request's audit
trail and the commit hooks."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from ..access import server_principal
from ..search import IndexEntry, extract
from ..store.base import Version, Write
from . import crud
from .context import Context, Payload, after_commit
from .guard import decision, note


@dataclasses.dataclass(frozen=True, slots=True)
class ServerWrite:
    """One resource the server writes: created with its id (failing if it exists), or
    replacing the current version (`if_match`: only that version); `valid` when it is known
    valid R4 already (a pseudonymised copy of a stored resource: privacy/pseudonym.py), so
    that it is not validated again; `entries` its index entries when the caller extracted
    them already (privacy/retention.py, slice by slice)."""

    resource: dict[str, Any]
    new: bool = True
    if_match: int | None = None
    valid: bool = False
    entries: Sequence[IndexEntry] | None = None


def indexed(write: ServerWrite) -> ServerWrite:
    """`write` with its index entries extracted now, for a caller that makes its writes slice
    by slice, the event loop free between slices (privacy/retention.py)."""
    return dataclasses.replace(write, entries=extract(write.resource))


def as_server(ctx: Context, name: str = "server") -> Context:
    """`ctx` acting as the server itself (the request's audit trail kept)."""
    return dataclasses.replace(ctx, principal=server_principal(name))


async def commit(ctx: Context, writes: Sequence[ServerWrite]) -> list[Version]:
    """Write `writes` in one unit of work, as the server; the versions stored."""
    server = as_server(ctx)
    operations = []
    for write in writes:
        resource = write.resource
        resource_type = resource["resourceType"]
        decision(server, "create" if write.new else "update", resource_type)
        if not write.valid:
            crud.check_resource(server, resource_type, Payload(resource, resource))
        entries = extract(resource) if write.entries is None else write.entries
        operations.append(Write(resource_type, resource["id"], resource, entries,
                                "POST" if write.new else "PUT", if_match=write.if_match,
                                create_only=write.new))
    results = await ctx.store.commit(operations)
    versions = []
    for operation, result in zip(operations, results, strict=True):
        if result.version is not None:
            # The entries it was indexed with: the audit trail need not parse and extract it again.
            note(ctx, result.version, entries=operation.entries)
            versions.append(result.version)
    await after_commit(ctx, versions)
    return versions
