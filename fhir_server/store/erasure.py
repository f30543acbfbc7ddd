"""What both stores' erasure shares (`Store.erase`; sqlite/erase.py, mongo/erase.py).

A compartment query finds the current members of a patient's compartment through the search
index. A deleted resource has no index entries left, yet its earlier versions hold the
patient's data: a deleted resource is a member when its last stored body (the version
before its deletion) matches the query. Deleted resources are few next to live ones, so
reading their last bodies costs little. Versions of a resource that moved out of the
compartment before the erasure are not found this way: they are found by the data key that
sealed them (the patient's: an index on the key id in each store), removed too, and would be shredded with it if
missed (bodies.py, docs/backup-and-erasure.md).

A conditional erasure (the retention's, once a record's archive is written) removes nothing
if a current member of the compartment was created or updated since an instant: the record
became active again. The condition is the `_lastUpdated` of the current members, the very
resources the erasure finds first: it costs one look at each member's stamp (an indexed
column, a field the erasure's query returns anyway), where "the versions are still these"
would have the caller carry every version of the record into the store and compare them
all. It is the rule the retention's plan applies (`_lastUpdated` of the compartment), so a
record the plan found inactive is erased unless a write came since. Deletions and resources
outside the compartment (sealed under the patient's key) do not count, as in the plan. Each
store checks it in the transaction that removes (sqlite/erase.py, mongo/erase.py).
"""

from __future__ import annotations

from typing import TypeVar

import orjson

from ..crypto import BodyCodec, UnreadableBody
from ..model.errors import FhirError, Kind, fail
from ..search import Query, Registry, extract, matches
from .base import Version
from .bodies import opened

T = TypeVar("T")
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


def batches(keys: list[T]) -> list[list[T]]:
    """`keys` cut into lists of at most BATCH."""
    return [keys[start:start + BATCH] for start in range(0, len(keys), BATCH)]


def updated_since() -> FhirError:
    """The CONFLICT of a conditional erasure that removed nothing (no patient named: it
    reaches logs)."""
    return fail(Kind.CONFLICT, "conflict", "The compartment was written to since the "
                "erasure's condition instant: nothing was erased.")
