"""What the retention jobs (privacy/retention.py) need of the store: every resource a search
matches, however many; which patients' records changed since a day; erasing single
resources for good; and the retention's own records (archived reports, due notices), kept as
outbox records under `retention/` so that they are sealed like bodies and live in either store.

These run as the server, for the whole store: they are not a client's request, and each run
is audited by its caller with its counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

import orjson

from ..search import extract, parse_query, patients_of
from ..store.base import Erasure, Outbox
from .context import Context
from .erase import compartment
from .reach import matching

PREFIX = "retention/"
_NO_PATIENT = ("Patient", "-")  # `Store.erase` removes a Patient last; none here


def compartment_types(ctx: Context) -> list[str]:
    """The types that can be in a patient's compartment (AuditEvents aside: their own store)."""
    return [query.resource_type for query in compartment(ctx.registry, "-")
            if query.resource_type is not None]


async def record_of(ctx: Context, patient_id: str) -> list[dict[str, Any]]:
    """Every current resource of Patient/`patient_id`'s compartment, the Patient first."""
    found = [orjson.loads(v.body) for v in await ctx.store.gather(compartment(ctx.registry, patient_id))
             if v.body is not None]
    found.sort(key=lambda r: r["resourceType"] != "Patient")
    return found


async def changed_since(ctx: Context, day: date,
                        also: Sequence[tuple[str, str]] = ()) -> set[str]:
    """The patients whose compartment holds a resource created or updated on `day` or later
    (and matching the search parameters `also`)."""
    patients: set[str] = set()
    for resource_type in compartment_types(ctx):
        async for resource in matching(ctx, resource_type, [("_lastUpdated", f"ge{day}"), *also]):
            patients |= patients_of(ctx.registry, resource_type, extract(resource, registry=ctx.registry),
                                    resource["id"], links=False)
    return patients


async def erase_resources(ctx: Context, references: Iterable[str]) -> Erasure:
    """Remove the resources `Type/id` for good: every version and index entry."""
    by_type: dict[str, list[str]] = {}
    for reference in references:
        resource_type, _, id = reference.partition("/")
        by_type.setdefault(resource_type, []).append(id)
    queries = [parse_query(t, [("_id", ",".join(ids))], ctx.registry)[0]
               for t, ids in sorted(by_type.items())]
    return await ctx.store.erase(queries, _NO_PATIENT) if queries else Erasure()


async def records(ctx: Context, kind: str) -> dict[str, dict[str, Any]]:
    """The retention records of `kind` (`archive`, `notice`), by key."""
    return {key: orjson.loads(value)
            for key, value in await ctx.store.outbox(f"{PREFIX}{kind}/")}


async def keep_records(ctx: Context, put: dict[str, dict[str, Any]] | None = None,
                       remove: Iterable[str] = ()) -> None:
    """Store and remove retention records (keys under `retention/`) in one unit of work."""
    put = put or {}
    keys = [*put, *remove]
    if any(not key.startswith(PREFIX) for key in keys):
        raise ValueError("retention records are kept under retention/")
    if keys:
        await ctx.store.commit([Outbox(put=tuple((k, orjson.dumps(v)) for k, v in put.items()),
                                       remove=tuple(remove))])
