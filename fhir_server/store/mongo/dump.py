"""Backups of the MongoDB store (`Store.dump`, `Store.load`): versions as stored, in write
order (`lu`, `seq`), out; the same back into an empty store: history documents, resource
documents with their index entries, guards, each resource in the shard its entries give, as
a write would place it.

A dump pages through the history up to the time it started: versions written meanwhile are
left for the next backup; an erasure meanwhile is replayed from the erasure ledger on restore.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bson import ObjectId
from pymongo import InsertOne, ReplaceOne, UpdateOne

from ... import clock
from ...search import IndexEntry
from ..base import Version
from . import layout
from .search import VERSION_FIELDS, version_of

if TYPE_CHECKING:
    from .store import MongoStore


async def dump(store: MongoStore, count: int) -> AsyncIterator[list[Version]]:
    """Every version up to now, oldest first, `count` at a time, bodies as stored."""
    where: dict[str, Any] = {"lu": {"$lte": clock.micros(clock.now())}}
    while True:
        found = store.history_docs.find(where, {**VERSION_FIELDS, "lu": 1, "seq": 1},
                                        sort=[("lu", 1), ("seq", 1)], limit=count)
        docs = [doc async for doc in found]
        if not docs:
            return
        yield [version_of(doc) for doc in docs]
        lu, seq = docs[-1]["lu"], docs[-1]["seq"]
        where = {"lu": where["lu"], "$or": [{"lu": {"$gt": lu}}, {"lu": lu, "seq": {"$gt": seq}}]}


async def load(store: MongoStore, versions: Sequence[tuple[Version, Sequence[IndexEntry]]]) -> None:
    """Append `versions` (each with its index entries) as the latest of their resources."""
    keys = list(dict.fromkeys(layout.key(v.resource_type, v.id) for v, _ in versions))
    current = {doc["_id"]: doc async for doc in store.resources.find(
        {"_id": {"$in": keys}}, {"_id": 1, "pk": 1, "shard": 1})}
    stored = {key: doc["shard"] for key, doc in current.items()}
    history: list[dict[str, Any]] = []
    latest: dict[str, dict[str, Any]] = {}
    for version, entries in versions:
        key = layout.key(version.resource_type, version.id)
        before = current.get(key)
        shard = (layout.shard_key(version.resource_type, version.id, entries)
                 if version.body is not None or before is None else before["shard"])
        lu = clock.micros(datetime.fromisoformat(version.last_updated.replace("Z", "+00:00")))
        common: dict[str, Any] = dict(
            resource_type=version.resource_type, id=version.id, version=version.version,
            last_updated=version.last_updated, lu=lu, method=version.method, body=version.body,
            shard=shard)
        history.append(layout.history_document(**common, seq=ObjectId()))
        doc = layout.resource_document(**common, pk=before["pk"] if before else ObjectId(),
                                       entries=entries, blind=store.blind)
        current[key] = latest[key] = doc
    await store.history_docs.insert_many(history)
    # Filters carry the full shard key, as a sharded cluster needs (the shard it had before
    # this batch, which the replacement may change: its compartment changed).
    await store.resources.bulk_write([
        ReplaceOne({"_id": key, "shard": stored[key]}, doc) if key in stored else InsertOne(doc)
        for key, doc in latest.items()])
    await store.guards.bulk_write([UpdateOne({"_id": key}, {"$set": {"shard": doc["shard"]}},
                                             upsert=True) for key, doc in latest.items()])


async def current(store: MongoStore, count: int) -> AsyncIterator[list[Version]]:
    """Every resource's current version that is no deletion, `count` at a time in `_id`
    order, bodies as stored (a re-index's input: store/index_layout.py)."""
    where: dict[str, Any] = {"deleted": False}
    while True:
        found = store.resources.find(where, {**VERSION_FIELDS, "_id": 1}, sort=[("_id", 1)],
                                     limit=count)
        docs = [doc async for doc in found]
        if not docs:
            return
        yield [version_of(doc) for doc in docs]
        where = {"deleted": False, "_id": {"$gt": docs[-1]["_id"]}}


async def reindex(store: MongoStore, versions: Sequence[tuple[Version, Sequence[IndexEntry]]]) -> int:
    """Replace the entry arrays of each version still current with its entries; how many
    were. One written or deleted since was indexed by that write."""
    keys = [layout.key(v.resource_type, v.id) for v, _ in versions]
    shards = {doc["_id"]: doc["shard"] async for doc in store.resources.find(
        {"_id": {"$in": keys}}, {"_id": 1, "shard": 1})}
    updates = []
    blind = store.blind
    for version, entries in versions:
        key = layout.key(version.resource_type, version.id)
        if key not in shards:
            continue
        arrays = layout.entry_arrays(entries if blind is None else blind.entries(version.resource_type, entries))
        change: dict[str, Any] = {"$set": arrays} if arrays else {}
        if gone := {array: "" for array in layout.ARRAYS if array not in arrays}:
            change["$unset"] = gone
        # Filters carry the full shard key, as a sharded cluster needs.
        updates.append(UpdateOne({"_id": key, "shard": shards[key], "version": version.version,
                                  "deleted": False}, change))
    if not updates:
        return 0
    return (await store.resources.bulk_write(updates, ordered=False)).matched_count
