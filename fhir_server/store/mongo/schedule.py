"""The schedule (store/schedule.py) in MongoDB: collections `schedule` (`_id` the item's key)
and `notification_preferences` (`_id` the person). Each claim is one `findOneAndUpdate`, so
two servers never claim the same item under the same lease."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING, ReturnDocument

from ...crypto import BodyCodec
from ..schedule import DONE, Due, State, opened_item, opened_preference, sealed_item, sealed_preference
from .layout import SCHEDULE


def _under(prefix: str) -> dict[str, Any]:
    return {"$regex": f"^{re.escape(prefix)}"}


class MongoSchedule:
    """A Schedule on the database `db`."""

    def __init__(self, db: Any, codec: BodyCodec) -> None:
        self.items_docs = db[SCHEDULE]
        self.preferences = db["notification_preferences"]
        self.codec = codec

    def _due(self, doc: dict[str, Any]) -> Due:
        return Due(doc["_id"], doc["due"], opened_item(self.codec, doc["_id"], bytes(doc["body"])),
                   doc["state"], doc["attempts"], doc.get("owner"), doc.get("lease"))

    async def enqueue(self, items: Sequence[tuple[str, int, bytes]]) -> list[str]:
        added = []
        for key, due, body in items:
            result = await self.items_docs.update_one({"_id": key}, {"$setOnInsert": {
                "due": due, "body": sealed_item(self.codec, key, body), "state": "pending",
                "attempts": 0}}, upsert=True)
            if result.upserted_id is not None:
                added.append(key)
        return added

    async def claim(self, now: int, lease: int, owner: str, limit: int) -> list[Due]:
        claimed = []
        for _ in range(limit):
            doc = await self.items_docs.find_one_and_update(
                {"$or": [{"state": "pending", "due": {"$lte": now}},
                         {"state": "claimed", "lease": {"$lte": now}}]},
                {"$set": {"state": "claimed", "owner": owner, "lease": lease},
                 "$inc": {"attempts": 1}},
                sort=[("due", ASCENDING), ("_id", ASCENDING)], return_document=ReturnDocument.AFTER)
            if doc is None:
                break
            claimed.append(self._due(doc))
        return claimed

    async def _end(self, key: str, owner: str, state: State) -> bool:
        result = await self.items_docs.update_one(
            {"_id": key, "state": "claimed", "owner": owner},
            {"$set": {"state": state}, "$unset": {"lease": ""}})
        return bool(result.modified_count)

    async def finish(self, key: str, owner: str) -> bool:
        return await self._end(key, owner, "sent")

    async def postpone(self, key: str, owner: str, due: int) -> bool:
        result = await self.items_docs.update_one(
            {"_id": key, "state": "claimed", "owner": owner},
            {"$set": {"state": "pending", "due": due}, "$unset": {"owner": "", "lease": ""}})
        return bool(result.modified_count)

    async def set_aside(self, key: str, owner: str) -> bool:
        return await self._end(key, owner, "failed")

    async def failed(self) -> list[Due]:
        found = self.items_docs.find({"state": "failed"}, sort=[("_id", ASCENDING)])
        return [self._due(doc) async for doc in found]

    async def cancel(self, prefix: str) -> int:
        result = await self.items_docs.update_many(
            {"_id": _under(prefix), "state": {"$in": ["pending", "claimed"]}},
            {"$set": {"state": "cancelled"}, "$unset": {"lease": ""}})
        return int(result.modified_count)

    async def items(self, prefix: str) -> list[Due]:
        found = self.items_docs.find({"_id": _under(prefix)}, sort=[("_id", ASCENDING)])
        return [self._due(doc) async for doc in found]

    async def preference(self, person: str) -> bytes | None:
        doc = await self.preferences.find_one({"_id": person})
        return opened_preference(self.codec, person, bytes(doc["body"])) if doc else None

    async def purge(self, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        result = await self.items_docs.delete_many({"_id": {"$in": list(keys)}, "state": {"$in": list(DONE)}})
        return int(result.deleted_count)

    async def forget(self, person: str, keys: Sequence[str]) -> None:
        await self.preferences.delete_one({"_id": person})
        if keys:
            await self.items_docs.delete_many({"_id": {"$in": list(keys)}})

    async def set_preference(self, person: str, body: bytes) -> None:
        await self.preferences.replace_one(
            {"_id": person}, {"body": sealed_preference(self.codec, person, body)}, upsert=True)
