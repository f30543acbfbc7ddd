"""What both stores' erasure shares (`Store.erase`; sqlite/erase.py, mongo/erase.py).

A compartment query finds the current members of a patient's compartment through the search
index. A deleted resource has no index entries left, yet its earlier versions hold the
patient's data: a deleted resource is a member when its last stored body (the version
before its deletion) matches the query. Deleted resources are few next to live ones, so
reading their last bodies costs little. Versions of a resource that moved out of the
compartment before the erasure are not found this way: they are found by the data key that
sealed them (the patient's: an index on the key id in each store), removed too, and would be shredded with it if
missed (bodies.py, docs/backup-and-erasure.md).
"""

from __future__ import annotations

import orjson

from ..crypto import BodyCodec, UnreadableBody
from ..search import Query, Registry, extract, matches
from .base import Version
from .bodies import opened

# Resources removed per statement or bulk call: bounded statements and messages.
BATCH = 500


def was_member(query: Query, registry: Registry, codec: BodyCodec, last: Version | None) -> bool:
    """Whether a resource whose last stored version with a body is `last` matched `query`.
    A body that cannot be opened any more (its data key destroyed by an earlier erasure) is
    not read: what it holds is shredded already."""
    if last is None or last.body is None or query.resource_type is None:
        return False
    try:
        body = opened(codec, last).body
    except UnreadableBody:
        return False
    assert body is not None
    entries = extract(orjson.loads(body), registry=registry)
    return matches(query, entries, resource_type=query.resource_type)


def batches(keys: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """`keys` cut into lists of at most BATCH."""
    return [keys[start:start + BATCH] for start in range(0, len(keys), BATCH)]
