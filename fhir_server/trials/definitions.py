"""The conformance resources we define (terminology/ and profiles/) are served like any other:
stored, as the server (services/server_writes.py), when it starts, and replaced when a new
release changes them."""

from __future__ import annotations

import logging

import orjson

from ..model.errors import FhirError
from ..model.platform_codes import definitions
from ..services import server_writes
from ..services.context import Context
from ..services.server_writes import ServerWrite

log = logging.getLogger("fhir_server")


async def publish(ctx: Context) -> int:
    """Store the definitions that are missing or differ from the shipped ones, one by one;
    how many. A store that cannot take them now (down, read-only) only delays them to the
    next start: the server serves without them meanwhile."""
    try:
        return await _publish(ctx)
    except FhirError as exc:
        log.warning("definitions not published", extra={"reason": exc.issues[0].diagnostics})
        return 0


async def _publish(ctx: Context) -> int:
    count = 0
    for resource in definitions():
        found = await ctx.store.read(resource["resourceType"], resource["id"])
        if found is not None and found.body is not None:
            stored = orjson.loads(found.body)
            stored.pop("meta", None)
            if stored == resource:
                continue
        # Replaced whatever version is current: the shipped definition wins.
        await server_writes.commit(ctx, [ServerWrite(dict(resource), new=False)])
        count += 1
    return count
