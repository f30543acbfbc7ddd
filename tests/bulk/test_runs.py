"""Running export jobs (services/export.advance, bulk/worker.py) on each store: a job cut
short resumes from its last saved cursor and writes every resource exactly once; a failing
job is retried, then fails with a status that says why; a finished job is audited with the
patients it exported (docs/export.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server import clock
from fhir_server.access import server_principal
from fhir_server.bulk import ExportWorker
from fhir_server.model.errors import FhirError, Kind
from fhir_server.model.validation import Validator
from fhir_server.search import default_registry, extract, parse_query
from fhir_server.services import export
from fhir_server.services.context import Context
from fhir_server.services.export_job import Limits, Progress, Spec, acting_as, step
from fhir_server.store.base import Delete, Store, Write
from fhir_server.store.mongo import MongoStore
from tests.builders import observation, patient
from tests.store.conftest import STORES, dispose

pytestmark = pytest.mark.anyio
POLICY = export.Policy(Limits(resources=3), lease_seconds=30.0, attempts=2)


@pytest.fixture(params=sorted(STORES))
async def ctx(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Context]:
    store: Store = await asyncio.to_thread(STORES[request.param], tmp_path)
    await store.migrate()
    await store.open()
    writes = []
    for n in range(8):
        body = {**patient(family=f"p{n}"), "id": f"p{n}"}
        writes.append(Write("Patient", f"p{n}", body, extract(body)))
        obs = {**observation(f"Patient/p{n}"), "id": f"o{n}"}
        writes.append(Write("Observation", f"o{n}", obs, extract(obs)))
    await store.commit(writes)
    yield Context(store=store, validator=Validator(), registry=default_registry(),
                  principal=server_principal("test"))
    await dispose(store)


async def _kick_off(ctx: Context) -> str:
    return await export.kick_off(ctx, "system", [("_type", "Patient,Observation")],
                                 request="http://testserver/fhir/$export", lenient=False,
                                 policy=export.Policy())


async def _exported(ctx: Context, id: str) -> list[str]:
    status = await export.status(ctx, id, POLICY)
    assert status.manifest is not None
    found = []
    for item in status.manifest["output"]:
        data = await export.file(ctx, id, item["url"].rsplit("/", 1)[1], POLICY)
        found += [f"{r['resourceType']}/{r['id']}" for r in map(orjson.loads, data.splitlines())]
    return found


async def _nothing(events: Any, ids: Any) -> None:
    return None


async def test_a_job_cut_short_resumes_from_its_last_saved_cursor_every_resource_once(ctx: Context) -> None:
    id = await _kick_off(ctx)
    job = await ctx.store.jobs.claim("dead", clock.seconds(), clock.seconds() + 30)
    assert job is not None
    spec, progress = Spec.load(job.spec), Progress.load(job.progress)
    acting = await acting_as(ctx, spec.caller)

    async def written(name: str) -> bytes | None:
        return await ctx.store.jobs.file(id, name)

    for _ in range(2):  # two files saved, then the process dies
        progress, files = await step(acting, spec, progress, POLICY.limits, written)
        assert await ctx.store.jobs.save(id, "dead", state="running", progress=progress.dump(),
                                         until=clock.seconds() + 30, now=clock.seconds(), files=files)
    # A third step wrote its file but died before its progress (MongoDB writes files first).
    _, files = await step(acting, spec, progress, POLICY.limits, written)
    assert await ctx.store.jobs.save(id, "dead", state="running", progress=progress.dump(),
                                     until=0.0, now=clock.seconds(), files=files)
    worker = ExportWorker(ctx, POLICY, _nothing)
    assert await worker.run_one()
    found = await _exported(ctx, id)
    assert sorted(found) == sorted([f"Patient/p{n}" for n in range(8)] + [f"Observation/o{n}" for n in range(8)])
    done = await ctx.store.jobs.get(id)
    assert done is not None and done.state == "done" and done.attempts == 2


async def test_a_resource_deleted_after_transaction_time_is_exported_as_it_was_then(ctx: Context) -> None:
    """The IG: resources changed up to transactionTime SHALL be included. o1 (matched) and o5
    (not matched) are deleted after the kick-off, o2 deleted and created again: o1, o2 and o3
    as they were at transactionTime, once each."""
    id = await export.kick_off(ctx, "system", [("_type", "Observation"),
                                               ("_typeFilter", "Observation?_id=o1%2Co2%2Co3")],
                               request="http://testserver/fhir/$export", lenient=False,
                               policy=export.Policy())
    await ctx.store.commit([Delete("Observation", "o1"), Delete("Observation", "o2"),
                            Delete("Observation", "o5")])
    again = {**observation("Patient/p2", status="amended"), "id": "o2"}
    await ctx.store.commit([Write("Observation", "o2", again, extract(again))])
    assert await ExportWorker(ctx, POLICY, _nothing).run_one()
    assert sorted(await _exported(ctx, id)) == ["Observation/o1", "Observation/o2", "Observation/o3"]
    status = await export.status(ctx, id, POLICY)
    assert status.manifest is not None
    for item in status.manifest["output"]:
        data = await export.file(ctx, id, item["url"].rsplit("/", 1)[1], POLICY)
        assert all(r["status"] == "final" and r["meta"]["versionId"] == "1"
                   for r in map(orjson.loads, data.splitlines()))


async def test_a_patient_export_keeps_what_its_patients_had_at_transaction_time(ctx: Context) -> None:
    """Per patient batch: an Observation of p1 deleted after the kick-off is exported, one of
    p6 (outside the list) is not."""
    id = await export.kick_off(ctx, "patient", [("_type", "Observation"), ("patient", "Patient/p1"),
                                                ("patient", "Patient/p2")],
                               request="http://testserver/fhir/Patient/$export", lenient=False,
                               policy=export.Policy())
    await ctx.store.commit([Delete("Observation", "o1"), Delete("Observation", "o6")])
    assert await ExportWorker(ctx, POLICY, _nothing).run_one()
    assert sorted(await _exported(ctx, id)) == ["Observation/o1", "Observation/o2"]


async def test_a_deleted_resource_whose_chained_filter_cannot_be_checked_is_reported(
        ctx: Context) -> None:
    """A chain needs the store: o1 deleted after the kick-off is left out, and said so in the
    error file rather than guessed."""
    id = await export.kick_off(ctx, "system", [("_type", "Observation"),
                                               ("_typeFilter", "Observation?subject.family=p1")],
                               request="http://testserver/fhir/$export", lenient=False,
                               policy=export.Policy())
    await ctx.store.commit([Delete("Observation", "o1")])
    assert await ExportWorker(ctx, POLICY, _nothing).run_one()
    assert await _exported(ctx, id) == []
    status = await export.status(ctx, id, POLICY)
    assert status.manifest is not None and len(status.manifest["error"]) == 1
    data = await export.file(ctx, id, status.manifest["error"][0]["url"].rsplit("/", 1)[1], POLICY)
    assert b"Observation/o1, deleted after transactionTime" in data


async def test_files_are_split_by_bytes_too(ctx: Context) -> None:
    id = await _kick_off(ctx)
    policy = export.Policy(Limits(resources=100, bytes=1500))
    assert await ExportWorker(ctx, policy, _nothing).run_one()
    status = await export.status(ctx, id, policy)
    assert status.manifest is not None and len(status.manifest["output"]) > 4
    for item in status.manifest["output"]:
        data = await export.file(ctx, id, item["url"].rsplit("/", 1)[1], POLICY)
        assert len(data) <= 1500 and data.count(b"\n") == item["count"]
    assert len(await _exported(ctx, id)) == len(set(await _exported(ctx, id))) == 16


async def test_a_failing_job_is_retried_then_fails_with_a_status_saying_why(
        ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    async def broken(*args: Any) -> Any:
        calls.append(1)
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(export, "step", broken)
    id = await _kick_off(ctx)
    worker = ExportWorker(ctx, export.Policy(POLICY.limits, lease_seconds=0.0, attempts=2), _nothing)
    while await worker.run_one():
        job = await ctx.store.jobs.get(id)
        assert job is not None and job.attempts <= 3
    job = await ctx.store.jobs.get(id)
    assert job is not None and job.state == "failed" and len(calls) == 2
    status = await export.status(ctx, id, POLICY)
    assert status.failure is not None and "incident" in status.failure
    assert await ctx.store.jobs.claim("again", clock.seconds() + 100, clock.seconds() + 200) is None


async def test_a_finished_job_is_audited_with_the_patients_it_exported(ctx: Context) -> None:
    recorded: list[dict[str, Any]] = []

    async def record(events: Any, ids: Any) -> None:
        recorded.extend(events)

    await _kick_off(ctx)
    assert await ExportWorker(ctx, POLICY, record).run_one()
    named = {e["what"]["reference"] for event in recorded for e in event.get("entity", [])
             if e.get("role", {}).get("code") == "1"}
    assert named == {f"Patient/p{n}" for n in range(8)}


async def test_a_job_is_done_only_once_its_audit_events_are_recorded(ctx: Context) -> None:
    """Its manifest is not served, nor its files, before the trail names its patients."""
    id = await _kick_off(ctx)
    seen: list[export.Status] = []

    async def record(events: Any, ids: Any) -> None:
        seen.append(await export.status(ctx, id, POLICY))

    assert await ExportWorker(ctx, POLICY, record).run_one()
    assert seen and all(status.manifest is None and status.progress for status in seen)
    assert (await export.status(ctx, id, POLICY)).manifest is not None


async def _stored_events(ctx: Context, events: Any, ids: Any) -> None:
    resources = [{**event, "id": id} for event, id in zip(events, ids, strict=True)]
    await ctx.store.commit([Write("AuditEvent", r["id"], r, extract(r), create_only=True)
                            for r in resources])


async def test_a_job_whose_worker_died_after_its_audit_is_audited_once(ctx: Context) -> None:
    """The events were durable, the job not yet saved done: the next attempt finishes it
    without recording them twice."""
    id = await _kick_off(ctx)
    calls: list[int] = []

    async def record(events: Any, ids: Any) -> None:
        calls.append(len(events))
        await _stored_events(ctx, events, ids)
        if len(calls) == 1:
            raise RuntimeError("the worker died")

    worker = ExportWorker(ctx, export.Policy(POLICY.limits, lease_seconds=0.0, attempts=2), record)
    while await worker.run_one():
        pass
    job = await ctx.store.jobs.get(id)
    assert job is not None and job.state == "done" and job.attempts == 2
    assert len(calls) == 1  # the second attempt found them recorded
    for n in range(8):
        query, _ = parse_query("AuditEvent", [("patient", f"Patient/p{n}")], ctx.registry)
        assert len((await ctx.store.search(query)).matches) == 1


async def test_a_job_whose_audit_cannot_be_recorded_fails_without_serving_its_files(ctx: Context) -> None:
    id = await _kick_off(ctx)

    async def record(events: Any, ids: Any) -> None:
        raise RuntimeError("audit store unreachable")

    worker = ExportWorker(ctx, export.Policy(POLICY.limits, lease_seconds=0.0, attempts=2), record)
    while await worker.run_one():
        pass
    job = await ctx.store.jobs.get(id)
    assert job is not None and job.state == "failed"
    status = await export.status(ctx, id, POLICY)
    assert status.manifest is None and status.failure is not None


async def test_expired_jobs_are_swept_with_their_files(ctx: Context) -> None:
    id = await _kick_off(ctx)
    assert await ExportWorker(ctx, POLICY, _nothing).run_one()
    assert await export.sweep(ctx, POLICY) == 0
    assert await export.sweep(ctx, export.Policy(retention_seconds=-1)) == 1
    assert await ctx.store.jobs.get(id) is None



async def test_reading_waits_until_the_store_shows_every_version_up_to_transaction_time(
        ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fhir_server.store.mongo.store.SETTLE_SECONDS", 3600)
    id = await _kick_off(ctx)
    job = await ctx.store.jobs.get(id)
    assert job is not None
    spec, progress = Spec.load(job.spec), Progress.load(job.progress)
    after, files = await step(await acting_as(ctx, spec.caller), spec, progress, POLICY.limits,
                              lambda name: ctx.store.jobs.file(id, name))
    # MongoDB may still commit units stamped before it: nothing read yet. SQLite: at once.
    waits = isinstance(ctx.store, MongoStore)
    assert (after == progress, after.settled, files) == (waits, not waits, [])


async def test_a_file_is_not_served_past_its_expiry_sweep_or_not(ctx: Context) -> None:
    id = await _kick_off(ctx)
    assert await ExportWorker(ctx, POLICY, _nothing).run_one()
    status = await export.status(ctx, id, POLICY)
    assert status.manifest is not None
    name = status.manifest["output"][0]["url"].rsplit("/", 1)[1]
    assert await export.file(ctx, id, name, POLICY)
    with pytest.raises(FhirError) as refused:
        await export.file(ctx, id, name, export.Policy(retention_seconds=0))
    assert refused.value.kind is Kind.NOT_FOUND and await ctx.store.jobs.get(id) is None


async def test_the_worker_sweeps_expired_jobs_while_a_long_job_runs(
        ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    expired = await _kick_off(ctx)
    assert await ExportWorker(ctx, POLICY, _nothing).run_one()
    await _kick_off(ctx)  # runs until cancelled
    started = asyncio.Event()

    async def endless(*args: Any) -> None:
        started.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(export, "advance", endless)
    monkeypatch.setattr("fhir_server.bulk.worker.SWEEP_SECONDS", 0.05)
    policy = export.Policy(Limits(resources=3), retention_seconds=0.5)
    running = asyncio.get_running_loop().create_task(ExportWorker(ctx, policy, _nothing).run())
    try:
        await asyncio.wait_for(started.wait(), 10)
        for _ in range(100):
            if await ctx.store.jobs.get(expired) is None:
                break
            await asyncio.sleep(0.05)
        assert await ctx.store.jobs.get(expired) is None
    finally:
        running.cancel()
