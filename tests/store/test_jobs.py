"""The Jobs port (store/jobs.py), run against every store: creation, claims under a lease
with an expiry, saves fenced by the lease, files replaced by name, deletion, and sealing at
rest (docs/export.md, docs/security.md)."""

from __future__ import annotations

import sqlite3

import pytest

from fhir_server.store.base import Store
from fhir_server.store.jobs import Job, JobFile
from fhir_server.store.mongo import MongoStore
from fhir_server.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio


def _job(id: str, created: float = 100.0) -> Job:
    return Job(id, "client-a", "queued", created, b'{"what":"system"}', b'{"done":[]}')


async def test_a_job_is_created_read_and_listed(store: Store) -> None:
    await store.jobs.create(_job("j2", created=200.0))
    await store.jobs.create(_job("j1"))
    found = await store.jobs.get("j1")
    assert found == Job("j1", "client-a", "queued", 100.0, b'{"what":"system"}', b'{"done":[]}',
                        updated=100.0)
    assert [j.id for j in await store.jobs.all()] == ["j1", "j2"]
    assert await store.jobs.get("nope") is None


async def test_a_claim_takes_the_oldest_free_job_and_leases_it(store: Store) -> None:
    await store.jobs.create(_job("j2", created=200.0))
    await store.jobs.create(_job("j1"))
    first = await store.jobs.claim("w1", now=1000.0, until=1030.0)
    assert first is not None and (first.id, first.state, first.lease_owner, first.attempts) == (
        "j1", "running", "w1", 1)
    second = await store.jobs.claim("w2", now=1000.0, until=1030.0)
    assert second is not None and second.id == "j2"
    assert await store.jobs.claim("w3", now=1010.0, until=1040.0) is None  # both leased


async def test_an_expired_lease_is_claimed_again_and_fences_the_old_owner(store: Store) -> None:
    await store.jobs.create(_job("j1"))
    await store.jobs.claim("w1", now=1000.0, until=1030.0)
    again = await store.jobs.claim("w2", now=1031.0, until=1060.0)
    assert again is not None and (again.lease_owner, again.attempts) == ("w2", 2)
    lost = await store.jobs.save("j1", "w1", state="running", progress=b"old", until=2000.0,
                                 now=1032.0, files=[JobFile("Patient.1.ndjson", b"stale")])
    assert lost is False
    job = await store.jobs.get("j1")
    assert job is not None and job.progress == b'{"done":[]}' and job.lease_owner == "w2"


async def test_a_save_writes_files_and_progress_and_replaces_files_by_name(store: Store) -> None:
    await store.jobs.create(_job("j1"))
    await store.jobs.claim("w1", now=1000.0, until=1030.0)
    assert await store.jobs.save("j1", "w1", state="running", progress=b"p1", until=1060.0,
                                 now=1001.0, files=[JobFile("a", b"one\n"), JobFile("b", b"two\n")])
    assert await store.jobs.save("j1", "w1", state="done", progress=b"p2", until=1060.0,
                                 now=1002.0, files=[JobFile("a", b"again\n")])
    job = await store.jobs.get("j1")
    assert job is not None and (job.state, job.progress, job.lease_until, job.updated) == (
        "done", b"p2", 1060.0, 1002.0)
    assert await store.jobs.file("j1", "a") == b"again\n"
    assert await store.jobs.file("j1", "b") == b"two\n"
    assert await store.jobs.file("j1", "c") is None
    assert await store.jobs.claim("w2", now=5000.0, until=5030.0) is None  # done: never again


async def test_delete_removes_the_job_and_its_files_only(store: Store) -> None:
    for id in ("j1", "j10"):
        await store.jobs.create(_job(id))
        await store.jobs.claim("w", now=1000.0, until=1030.0)
        await store.jobs.save(id, "w", state="done", progress=b"p", until=0.0, now=1001.0,
                              files=[JobFile("a", id.encode())])
    assert await store.jobs.delete("j1") is True
    assert await store.jobs.get("j1") is None and await store.jobs.file("j1", "a") is None
    assert await store.jobs.file("j10", "a") == b"j10"
    assert await store.jobs.delete("j1") is False
    assert await store.jobs.save("j1", "w", state="done", progress=b"p", until=0.0, now=1002.0,
                                 files=[JobFile("late", b"x")]) is False
    assert await store.jobs.file("j1", "late") is None


async def test_requests_progress_and_files_are_sealed_at_rest(store: Store) -> None:
    secret = b'{"patient":"Patient/secret-id"}'
    await store.jobs.create(Job("j1", "client-a", "queued", 1.0, secret, secret))
    await store.jobs.claim("w", now=1000.0, until=1030.0)
    await store.jobs.save("j1", "w", state="done", progress=secret, until=0.0, now=1.0,
                          files=[JobFile("Patient.000001.ndjson", secret)])
    stored = await _raw(store)
    assert stored and all(b"secret-id" not in blob for blob in stored)
    assert await store.jobs.file("j1", "Patient.000001.ndjson") == secret


async def _raw(store: Store) -> list[bytes]:
    """Every blob the store keeps for jobs, as stored."""
    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as conn:
            rows = conn.execute("SELECT spec FROM export_job UNION ALL SELECT progress FROM export_job "
                                "UNION ALL SELECT data FROM export_file").fetchall()
        return [bytes(r[0]) for r in rows]
    assert isinstance(store, MongoStore)
    blobs = [bytes(d[k]) async for d in store.db["export_jobs"].find({}) for k in ("spec", "progress")]
    return blobs + [bytes(d["data"]) async for d in store.db["export_files"].find({})]


async def test_a_delete_racing_a_save_leaves_no_file(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """MongoDB deletes in two steps: the job first, so a save landing between them is fenced
    and takes its files back (SQLite deletes in one transaction)."""
    await store.jobs.create(_job("j1"))
    await store.jobs.claim("w", now=1000.0, until=1030.0)
    if isinstance(store, MongoStore):
        files = store.jobs.files  # type: ignore[attr-defined]
        real = files.delete_many

        async def a_save_meanwhile(*args: object, **kwargs: object) -> object:
            done = await real(*args, **kwargs)
            monkeypatch.undo()  # once
            await store.jobs.save("j1", "w", state="running", progress=b"p", until=1040.0,
                                  now=1001.0, files=[JobFile("a", b"late")])
            return done

        monkeypatch.setattr(files, "delete_many", a_save_meanwhile)
    assert await store.jobs.delete("j1") is True
    monkeypatch.undo()
    assert await store.jobs.file("j1", "a") is None


async def test_files_whose_job_is_gone_are_pruned(store: Store) -> None:
    """A process killed between a delete's two steps leaves files without a job."""
    for id in ("j1", "j2"):
        await store.jobs.create(_job(id))
        await store.jobs.claim("w", now=1000.0, until=1030.0)
        await store.jobs.save(id, "w", state="done", progress=b"p", until=0.0, now=1001.0,
                              files=[JobFile("a", id.encode()), JobFile("b", id.encode())])
    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as conn:
            conn.execute("DELETE FROM export_job WHERE id = 'j1'")
    else:
        assert isinstance(store, MongoStore)
        await store.db["export_jobs"].delete_one({"_id": "j1"})
    assert await store.jobs.prune() == 2
    assert await store.jobs.file("j1", "a") is None and await store.jobs.file("j2", "a") == b"j2"
    assert await store.jobs.prune() == 0
