"""Erasure on the MongoDB store (`Store.erase`): every history document, resource document
(with the index entries it carries) and guard of a patient's compartment, and of what else
their data keys sealed (store/erasure.py).

Deletes go in bulk, one call per collection and batch of keys: history first, then the
resource documents and their guards, the Patient last of all. An unconditional erasure
(`$erase`) runs in no transaction: it touches more documents than a MongoDB transaction
should hold, and the order makes it safe to cut short, since running it again finds the
Patient and finishes the rest. MongoDB overwrites the space of removed documents as
WiredTiger reuses it; a backup of the database taken before the erasure is handled by the
erasure ledger (docs/backup-and-erasure.md).

A conditional erasure (`unless_updated_since`, the retention's) removes in one
multi-document transaction on a replica set, so that its check and its removal are one
atomic unit. A snapshot read does not stop a concurrent write: MongoDB's transactions
conflict on writes only ("In-progress Transactions and Write Conflicts" and "... and Stale
Reads", https://www.mongodb.com/docs/manual/core/transactions-production-consideration/): a
transaction that modifies a document written outside it since it started aborts with a
write conflict (TransientTransactionError), and a write to a document the transaction has
modified waits for it or conflicts. So:
- an update or deletion of a member conflicts with the erasure's own delete of that member;
- a write that puts a resource in the compartment (a create, or an update adding a
  compartment reference) touches no document the erasure reads, so it also bumps the
  compartment's FENCE document (store.py `_MongoUnit._queue`), which the erasure's
  transaction bumps first of all. The bump must change the document (`$inc`): a write that
  changes nothing conflicts with nothing (SERVER-77616).
Either way the concurrent write commits before the erasure's snapshot (and its check sees
it), or one of the two aborts and runs again (then the check sees it).

The deleted members are found by reading every deleted resource of the compartment's types
(store/erasure.py), which grows with the store, not with the record: that scan runs before
the transaction, in a `survey` that reads the fence first, then the current members, then
the deleted ones. The transaction bumps the fence and compares: anything else bumped it
since the survey (a resource joined the compartment, maybe deleted again since), and the
erasure runs again from a new survey. Otherwise every member at the transaction's snapshot
was in the survey: it reads the current ones again, keeps the survey's deleted ones still
deleted as they were, and takes of its current ones gone since those deleted whose last body
was a member. The transaction is a unit's (store.py `transaction`): bounded by
ATTEMPT_SECONDS, so a record too large to erase in it fails (the retention reports it and
keeps the record; retention's records are some 120 resources). A standalone server has no
transactions: there the condition is checked, then the removal made, with the window
between them (docs/privacy.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bson import ObjectId
from pymongo import ReturnDocument, UpdateOne

from ...crypto import patient_key_ids
from ...search import Query
from ..base import Erasure, TransientConflict
from ..erasure import BATCH, batches, updated_since, was_member
from . import layout
from .compartment import found as current
from .search import VERSION_FIELDS, version_of

if TYPE_CHECKING:
    from pymongo.asynchronous.client_session import AsyncClientSession

    from .store import MongoStore


@dataclass(frozen=True)
class Survey:
    """What a conditional erasure reads before its transaction (see above): its condition
    (`unless_updated_since`, microseconds), the fence as it was before the reads (None:
    absent), the current members, and the deleted ones with the version (their deletion's)
    they had."""

    since: int
    fence: dict[str, Any] | None
    current: frozenset[tuple[str, str]]
    deleted: dict[tuple[str, str], int]


async def members(store: MongoStore, queries: Sequence[Query],
                  unless_updated_since: int | None = None) -> list[tuple[str, str]]:
    """(type, id) of the current resources one of `queries` matches (compartment.py: one
    `find` for a compartment) and of the deleted ones one of them matched; CONFLICT if one
    of the current ones was written at `unless_updated_since` (microseconds, `lu`) or later."""
    return [*await _current(store, queries, unless_updated_since), *await _deleted(store, queries)]


async def survey(store: MongoStore, queries: Sequence[Query], patient_id: str,
                 unless_updated_since: int) -> Survey:
    """The Survey of Patient/`patient_id`'s compartment (`queries`), outside any transaction;
    CONFLICT as `members`. The fence is read first: a resource that joins the compartment
    after it bumps it, and the transaction then runs again (`_settled`)."""
    fence = await store.guards.find_one({"_id": _fence_key(patient_id)}, _FENCE_FIELDS)
    current = await _current(store, queries, unless_updated_since)
    return Survey(unless_updated_since, fence, frozenset(current), await _deleted(store, queries))


async def _current(store: MongoStore, queries: Sequence[Query], unless_updated_since: int | None,
                   session: AsyncClientSession | None = None) -> list[tuple[str, str]]:
    now = await current(store, queries, {"_id": 0, "type": 1, "id": 1, "lu": 1}, session)
    if unless_updated_since is not None and any(doc["lu"] >= unless_updated_since for doc in now):
        raise updated_since()
    return [(doc["type"], doc["id"]) for doc in now]


async def _deleted(store: MongoStore, queries: Sequence[Query]) -> dict[tuple[str, str], int]:
    """The deleted resources whose last body one of `queries` matched, and their versions:
    every deleted resource of the queries' types is read (they have no entries left)."""
    found: dict[tuple[str, str], int] = {}
    of_type = _of_type(queries)
    deleted = store.resources.find({"type": {"$in": sorted(of_type)}, "deleted": True},
                                   {"_id": 0, "type": 1, "id": 1, "version": 1})
    async for doc in deleted:
        if await _was_member(store, of_type, doc):
            found[(doc["type"], doc["id"])] = doc["version"]
    return found


def _of_type(queries: Sequence[Query]) -> dict[str, list[Query]]:
    of_type: dict[str, list[Query]] = {}
    for query in queries:
        of_type.setdefault(query.resource_type or "", []).append(query)
    return of_type


async def _was_member(store: MongoStore, of_type: dict[str, list[Query]], doc: dict[str, Any],
                      session: AsyncClientSession | None = None) -> bool:
    """Whether the deleted resource `doc` (type, id) was a member: its last body matched a
    query of its type."""
    last = await store.history_docs.find_one(
        {"type": doc["type"], "id": doc["id"], "body": {"$ne": None}}, VERSION_FIELDS,
        sort=[("version", -1)], session=session)
    version = version_of(last) if last else None
    return any(was_member(query, store.registry, store.codec, version)
               for query in of_type.get(doc["type"], ()))


async def _settled(store: MongoStore, queries: Sequence[Query], patient_id: str, found: Survey,
                   session: AsyncClientSession | None) -> list[tuple[str, str]]:
    """The members at the snapshot of `session`'s transaction, from the survey `found`, the
    fence bumped first: the current ones read again (and checked); the survey's deleted ones
    still deleted as they were; of its current ones gone since, those deleted whose last body
    was a member. Any other member joined the compartment since the survey, and bumped the
    fence: TransientConflict then (the fence is not the survey's plus this bump), the
    erasure runs again from its survey."""
    bumped = await store.guards.find_one_and_update(
        {"_id": _fence_key(patient_id)}, _bump(), _FENCE_FIELDS, upsert=True,
        return_document=ReturnDocument.AFTER, session=session)
    if not _unmoved(found.fence, bumped):
        raise TransientConflict("a resource joined the compartment since the erasure's survey")
    now = await _current(store, queries, found.since, session)
    gone = sorted({*found.current.difference(now), *found.deleted})
    docs = [doc for batch in batches(gone) async for doc in store.resources.find(
        {"_id": {"$in": [layout.key(t, i) for t, i in batch]}},
        {"_id": 0, "type": 1, "id": 1, "version": 1, "deleted": 1}, session=session)]
    for doc in docs:
        key = (doc["type"], doc["id"])
        if doc["deleted"] and (found.deleted.get(key) == doc["version"]
                               or await _was_member(store, _of_type(queries), doc, session)):
            now.append(key)
    return now


def _unmoved(surveyed: dict[str, Any] | None, bumped: dict[str, Any]) -> bool:
    """Whether the fence `bumped` is the one `surveyed` bumped once: the same document (an
    erasure removes it, a bump makes it anew with another `made`) one write on."""
    if surveyed is None:
        return bool(bumped["writes"] == 1)
    return bool(bumped.get("made") == surveyed.get("made") and bumped["writes"] == surveyed["writes"] + 1)


_FENCE_FIELDS = {"_id": 0, "writes": 1, "made": 1}


def fence(patient_id: str) -> UpdateOne:
    """The bump of Patient/`patient_id`'s compartment fence (see above), a document of the
    guards' collection: a unit creating a resource writes its guards anyway, so the bump costs
    it no round trip (no resource key looks like the fence's)."""
    return UpdateOne({"_id": _fence_key(patient_id)}, _bump(), upsert=True)


def _bump() -> dict[str, Any]:
    """A fence's bump. `made`, set by the bump that creates the fence, tells a fence an
    erasure removed and a bump made again from the one a survey read."""
    return {"$inc": {"writes": 1}, "$setOnInsert": {"made": ObjectId()}}


def _fence_key(patient_id: str) -> str:
    return f"compartment/{layout.key('Patient', patient_id)}"


async def remove(store: MongoStore, compartment: Sequence[Query], last: tuple[str, str],
                 unless_updated_since: int | None = None, session: AsyncClientSession | None = None,
                 found: Survey | None = None) -> Erasure:
    """Remove the compartment's resources, then `last`: those `found` surveyed, settled in
    `session`'s transaction (its fence bumped first, see above), if given; else those found
    now (CONFLICT as `members`), in no transaction."""
    if found is None:
        keys = await members(store, compartment, unless_updated_since)
    else:
        keys = await _settled(store, compartment, last[1], found, session)
    held, older = await _sealed_under(store, patient_key_ids(store.codec, last[1]), session)
    keys += held
    erased = Erasure()
    for batch in [*batches(list(dict.fromkeys(k for k in keys if k != last))), [last]]:
        await _remove_batch(store, batch, erased, session)
    removed = set(keys) | {last}
    stale = [(doc_id, t) for doc_id, t, i in older if (t, i) not in removed]
    for start in range(0, len(stale), BATCH):
        await store.history_docs.delete_many({"_id": {"$in": [d for d, _ in stale[start:start + BATCH]]}},
                                             session=session)
    for _, resource_type in stale:
        erased.versions[resource_type] = erased.versions.get(resource_type, 0) + 1
    if found is not None:  # bumped above, it holds off writers until the commit
        await store.guards.delete_one({"_id": _fence_key(last[1])}, session=session)
    return erased


async def _sealed_under(store: MongoStore, key_ids: frozenset[bytes], session: AsyncClientSession | None
                        ) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """What else the patient's keys sealed: the resources whose current version they sealed
    (a Bundle holding their record: store/bodies.py), and the history documents (id, type,
    resource id) of older versions (of resources that left the compartment since). Found by
    the history's `key` field and its index (layout.py): MongoDB cannot match a prefix of the
    body itself, and reading every body would make each erasure cost the whole history."""
    if not key_ids:
        return [], []
    found = [(doc["_id"], doc["type"], doc["id"], doc["version"])
             async for doc in store.history_docs.find(
                 # AuditEvents written before they kept no key id hold it still: passed by
                 {"key": {"$in": sorted(key_ids)}, "type": {"$ne": "AuditEvent"}},
                 {"_id": 1, "type": 1, "id": 1, "version": 1}, session=session)]
    current = {(doc["type"], doc["id"]): doc["version"] async for doc in store.resources.find(
        {"_id": {"$in": [layout.key(t, i) for _, t, i, _ in found]}},
        {"_id": 0, "type": 1, "id": 1, "version": 1}, session=session)}
    held = [(t, i) for _, t, i, version in found if current.get((t, i)) == version]
    return held, [(doc_id, t, i) for doc_id, t, i, version in found if current.get((t, i)) != version]


async def _remove_batch(store: MongoStore, keys: list[tuple[str, str]], erased: Erasure,
                        session: AsyncClientSession | None) -> None:
    present = {doc["_id"]: doc["type"] async for doc in store.resources.find(
        {"_id": {"$in": [layout.key(t, i) for t, i in keys]}}, {"_id": 1, "type": 1}, session=session)}
    if not present:
        return
    by_type: dict[str, list[str]] = {}
    for resource_type, id in keys:
        if layout.key(resource_type, id) in present:
            by_type.setdefault(resource_type, []).append(id)
    for resource_type, ids in by_type.items():
        where: dict[str, Any] = {"type": resource_type, "id": {"$in": ids}}
        done = await store.history_docs.delete_many(where, session=session)
        erased.versions[resource_type] = erased.versions.get(resource_type, 0) + done.deleted_count
        erased.resources[resource_type] = erased.resources.get(resource_type, 0) + len(ids)
    await store.resources.delete_many({"_id": {"$in": list(present)}}, session=session)
    await store.guards.delete_many({"_id": {"$in": list(present)}}, session=session)
