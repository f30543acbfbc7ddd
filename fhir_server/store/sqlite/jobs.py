"""Jobs on SQLite (store/jobs.py): tables `export_job` and `export_file` (schema.py). A claim
and a save each run in one IMMEDIATE transaction on the store's writer, under its file lock,
so two processes never claim one job and a save's files and progress commit together."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..jobs import (CLAIMABLE, Job, JobFile, JobState, open_file, open_spec, seal_file,
                    seal_spec)

if TYPE_CHECKING:
    from .store import SqliteStore

T = TypeVar("T")

_COLUMNS = ("id, client_id, state, created, spec, progress, attempts, lease_owner, "
            "lease_until, updated")


class SqliteJobs:
    """The jobs of one SqliteStore."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store

    def _job(self, row: Sequence[Any]) -> Job:
        codec = self.store.codec
        return Job(row[0], row[1], row[2], row[3], open_spec(codec, row[0], "spec", row[4]),
                   open_spec(codec, row[0], "progress", row[5]), row[6], row[7], row[8], row[9])

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        store = self.store
        async with store._write_lock:
            return await store._run(store._writer, lambda conn: store._within(conn, lambda: work(conn)))

    async def create(self, job: Job) -> None:
        codec = self.store.codec
        row = (job.id, job.client_id, job.state, job.created,
               seal_spec(codec, job.id, "spec", job.spec),
               seal_spec(codec, job.id, "progress", job.progress), job.attempts, job.lease_owner,
               job.lease_until, job.updated or job.created)
        await self._write(lambda conn: conn.execute(
            f"INSERT INTO export_job ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row))

    async def get(self, id: str) -> Job | None:
        row = await self.store._read(lambda conn: conn.execute(
            f"SELECT {_COLUMNS} FROM export_job WHERE id = ?", (id,)).fetchone())
        return self._job(row) if row else None

    async def all(self) -> list[Job]:
        rows = await self.store._read(lambda conn: conn.execute(
            f"SELECT {_COLUMNS} FROM export_job ORDER BY created, id").fetchall())
        return [self._job(row) for row in rows]

    async def claim(self, owner: str, now: float, until: float) -> Job | None:
        def work(conn: sqlite3.Connection) -> Sequence[Any] | None:
            row = conn.execute(
                f"SELECT id FROM export_job WHERE state IN ({', '.join('?' * len(CLAIMABLE))}) "
                "AND lease_until < ? ORDER BY created, id LIMIT 1", (*CLAIMABLE, now)).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE export_job SET state = 'running', lease_owner = ?, "
                         "lease_until = ?, attempts = attempts + 1, updated = ? WHERE id = ?",
                         (owner, until, now, row[0]))
            found: Sequence[Any] = conn.execute(
                f"SELECT {_COLUMNS} FROM export_job WHERE id = ?", (row[0],)).fetchone()
            return found

        row = await self._write(work)
        return self._job(row) if row else None

    async def save(self, id: str, owner: str, *, state: JobState, progress: bytes, until: float,
                   now: float, files: Sequence[JobFile] = ()) -> bool:
        codec = self.store.codec
        stored = [(id, f.name, seal_file(codec, id, f.name, f.data)) for f in files]
        sealed = seal_spec(codec, id, "progress", progress)

        def work(conn: sqlite3.Connection) -> bool:
            changed = conn.execute(
                "UPDATE export_job SET state = ?, progress = ?, lease_until = ?, updated = ? "
                "WHERE id = ? AND lease_owner = ?", (state, sealed, until, now, id, owner)).rowcount
            if changed:
                conn.executemany("INSERT OR REPLACE INTO export_file (job, name, data) "
                                 "VALUES (?, ?, ?)", stored)
            return bool(changed)

        return await self._write(work)

    async def file(self, id: str, name: str) -> bytes | None:
        row = await self.store._read(lambda conn: conn.execute(
            "SELECT data FROM export_file WHERE job = ? AND name = ?", (id, name)).fetchone())
        return open_file(self.store.codec, id, name, row[0]) if row else None

    async def delete(self, id: str) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            conn.execute("DELETE FROM export_file WHERE job = ?", (id,))
            return bool(conn.execute("DELETE FROM export_job WHERE id = ?", (id,)).rowcount)

        return await self._write(work)

    async def prune(self) -> int:
        return await self._write(lambda conn: conn.execute(
            "DELETE FROM export_file WHERE job NOT IN (SELECT id FROM export_job)").rowcount)
