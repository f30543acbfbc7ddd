"""Jobs on MongoDB (store/jobs.py): collections `export_jobs` (one document per job) and
`export_files` (one per file, `_id` `<job>/<name>`, found by an anchored `_id` prefix). A claim
is one `find_one_and_update`, so two workers never claim one job. A save writes its files
first, then the job's progress under the lease: a save that lost its lease leaves files its
next run replaces, and a save of a deleted job removes what it wrote. A file is below
MongoDB's 16 MiB document limit: the runner caps its bytes (docs/export.md)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pymongo import ReplaceOne, ReturnDocument

from ...crypto import BodyCodec
from ..jobs import (CLAIMABLE, Job, JobFile, JobState, open_file, open_spec, seal_file,
                    seal_spec)


def _files_of(id: str) -> dict[str, Any]:
    return {"_id": {"$regex": f"^{re.escape(id)}/"}}


class MongoJobs:
    """The jobs of one MongoDB database."""

    def __init__(self, db: Any, codec: BodyCodec) -> None:
        self.jobs = db["export_jobs"]
        self.files = db["export_files"]
        self.codec = codec

    def _job(self, doc: dict[str, Any]) -> Job:
        id = doc["_id"]
        return Job(id, doc["client_id"], doc["state"], doc["created"],
                   open_spec(self.codec, id, "spec", doc["spec"]),
                   open_spec(self.codec, id, "progress", doc["progress"]), doc["attempts"],
                   doc.get("lease_owner"), doc["lease_until"], doc["updated"])

    async def create(self, job: Job) -> None:
        await self.jobs.insert_one({
            "_id": job.id, "client_id": job.client_id, "state": job.state, "created": job.created,
            "spec": seal_spec(self.codec, job.id, "spec", job.spec),
            "progress": seal_spec(self.codec, job.id, "progress", job.progress),
            "attempts": job.attempts, "lease_owner": job.lease_owner,
            "lease_until": job.lease_until, "updated": job.updated or job.created})

    async def get(self, id: str) -> Job | None:
        doc = await self.jobs.find_one({"_id": id})
        return self._job(doc) if doc else None

    async def all(self) -> list[Job]:
        return [self._job(doc) async for doc in self.jobs.find({}, sort=[("created", 1), ("_id", 1)])]

    async def claim(self, owner: str, now: float, until: float) -> Job | None:
        doc = await self.jobs.find_one_and_update(
            {"state": {"$in": list(CLAIMABLE)}, "lease_until": {"$lt": now}},
            {"$set": {"state": "running", "lease_owner": owner, "lease_until": until,
                      "updated": now}, "$inc": {"attempts": 1}},
            sort=[("created", 1), ("_id", 1)], return_document=ReturnDocument.AFTER)
        return self._job(doc) if doc else None

    async def save(self, id: str, owner: str, *, state: JobState, progress: bytes, until: float,
                   now: float, files: Sequence[JobFile] = ()) -> bool:
        keys = [f"{id}/{f.name}" for f in files]
        if files:
            await self.files.bulk_write([
                ReplaceOne({"_id": key}, {"_id": key, "data": seal_file(self.codec, id, f.name, f.data)},
                           upsert=True) for key, f in zip(keys, files)])
        done = await self.jobs.update_one(
            {"_id": id, "lease_owner": owner},
            {"$set": {"state": state, "progress": seal_spec(self.codec, id, "progress", progress),
                      "lease_until": until, "updated": now}})
        if done.matched_count:
            return True
        if keys and await self.jobs.find_one({"_id": id}, {"_id": 1}) is None:
            await self.files.delete_many({"_id": {"$in": keys}})  # deleted meanwhile
        return False

    async def file(self, id: str, name: str) -> bytes | None:
        doc = await self.files.find_one({"_id": f"{id}/{name}"})
        return open_file(self.codec, id, name, doc["data"]) if doc else None

    async def delete(self, id: str) -> bool:
        # The job first: a save racing this one then finds no job and takes its files back.
        deleted = bool((await self.jobs.delete_one({"_id": id})).deleted_count)
        await self.files.delete_many(_files_of(id))
        return deleted

    async def prune(self) -> int:
        keys = [doc["_id"] async for doc in self.files.find({}, {"_id": 1})]
        ids = {key.split("/", 1)[0] for key in keys}
        kept = {doc["_id"] async for doc in self.jobs.find({"_id": {"$in": sorted(ids)}}, {"_id": 1})}
        gone = [key for key in keys if key.split("/", 1)[0] not in kept]
        if gone:
            await self.files.delete_many({"_id": {"$in": gone}})
        return len(gone)
