"""What both stores' erasure shares (`Store.erase`; sqlite/erase.py, mongo/erase.py).

A compartment query finds the current members of a patient's compartment through the search
index. A deleted resource has no index entries left, yet its earlier versions hold the
patient's data: a deleted resource is a member when its last stored body (the version
before its deletion) matches the query. Deleted resources are few next to live ones, so
reading their last bodies costs little; versions of a resource that moved out of the
compartment before the erasure are not found this way (docs/backup-and-erasure.md).
"""

from __future__ import annotations

import orjson

from ..search import Query, Registry, extract, matches

# Resources removed per statement or bulk call: bounded statements and messages.
BATCH = 500


def was_member(query: Query, registry: Registry, body: bytes | None) -> bool:
    """Whether a resource whose last stored JSON body is `body` matched `query`."""
    if body is None or query.resource_type is None:
        return False
    entries = extract(orjson.loads(body), registry=registry)
    return matches(query, entries, resource_type=query.resource_type)


def batches(keys: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """`keys` cut into lists of at most BATCH."""
    return [keys[start:start + BATCH] for start in range(0, len(keys), BATCH)]
