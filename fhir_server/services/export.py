"""Bulk Data `$export` (Bulk Data Access IG 2.0.0, export.html; docs/export.md): the kick-off
at system, Patient and Group level, the status of a job, its files, its cancellation, and
`advance`, which a worker calls to run a claimed job to its end.

Who may export: backend clients (and the server itself) what their `system/` scopes name,
investigator site systems what the access layer lets them reach (their referrals, never a
live record), a referring physician the patients whose consent in force names them (Patient
and Group level), a patient or their legal representative their own compartment
(Patient/$export, `$everything` asynchronously). A job, its status and its files belong to the client and
subject that started it: anyone else gets 404, as for a job that does not exist.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from .. import clock
from ..access import Principal, Role
from ..audit.events import request_events
from ..audit.outbox import event_ids
from ..audit.trail import Trail
from ..model.errors import FhirError, Kind, fail, incident
from ..model.ids import new_id
from ..search import parse_query
from ..store.bodies import stored
from ..store.jobs import Job, JobFile, JobState
from . import crud
from .context import Context
from .export_job import (Limits, Output, Progress, Source, Spec, acting_as, caller_of,
                         patients_file, step)
from .export_params import Asked, invalid, parse
from .guard import decision

log = logging.getLogger("fhir_server.export")

STATUS_PATH, FILE_PATH = "$export-status", "$export-file"
# Kept apart (the audit store); exported only when `_type` names it.
NOT_BY_DEFAULT = frozenset({"AuditEvent"})
_EXPORTERS = frozenset({Role.SYSTEM, Role.SERVER, Role.INVESTIGATOR})
AUDIT_BATCH = 1000  # patients per batch of a finished job's AuditEvents
WAIT_SECONDS = 1.0  # before a step the store asked to wait for is tried again
# Stores and chains AuditEvents under the ids given, all or none (AuditRecorder.record_all).
Record = Callable[[Sequence[dict[str, Any]], Sequence[str]], Awaitable[Any]]
_AUDIT_IDS = uuid.UUID("5a0f3c52-27d4-4b8e-9a57-0c1d2e3f4a5b")  # namespace of a job's event ids


@dataclass(frozen=True, slots=True)
class Policy:
    """How jobs run: file limits, lease, retries, how long finished files stay."""

    limits: Limits = Limits()
    lease_seconds: float = 30.0
    attempts: int = 3
    retention_seconds: float = 3600.0
    running_per_caller: int = 2  # jobs queued or running at once for one caller


@dataclass(frozen=True, slots=True)
class Status:
    """A job as its status request sees it: running (with a progress text), done (with its
    manifest and expiry), or failed (with why)."""

    progress: str | None = None
    manifest: dict[str, Any] | None = None
    expires: float | None = None
    failure: str | None = None


async def kick_off(ctx: Context, level: str, params: Sequence[tuple[str, str]], *, request: str,
                   lenient: bool, policy: Policy, group: str | None = None,
                   organization: str | None = None) -> str:
    """Check an export request and store its job; returns the job id. `level` is "system",
    "patient", "group" (`group` its id) or "organization" (`organization` its id: the
    operator's export of an organisation's whole data). INVALID, FORBIDDEN or NOT_FOUND naming
    the problem, and no job, when the request cannot run; TOO_MANY while the caller has
    `policy.running_per_caller` jobs queued or running (Bulk Data IG: a server may answer 429
    to a client with an export in progress)."""
    principal = await _admitted(ctx, level, policy)
    asked = parse(ctx.registry, params, level="system" if level == "system" else "patient",
                  lenient=lenient, base=ctx.base_url)
    if organization is not None:
        patients: tuple[str, ...] | None = await _managed_by(ctx, organization)
    else:
        patients = await _patients(ctx, asked, group)
    types = _types(ctx, asked, compartment=level != "system", lenient=lenient)
    sources = _sources(types, asked, per_patient=patients is not None)
    if organization is not None:
        sources = (*_directory(organization), *sources)
    spec = Spec(request=request, transaction_time=clock.instant(), sources=sources,
                caller=caller_of(principal), since=asked.since, patients=patients or (),
                elements=asked.elements, ignored=tuple(dataclasses.asdict(i) for i in asked.ignored),
                requires_token=not principal.server)
    return await _create(ctx, principal, spec)


async def kick_off_everything(ctx: Context, patient: str, sources: Sequence[Source], *,
                              request: str, policy: Policy) -> str:
    """`Patient/[id]/$everything` asynchronously: a job reading `sources` (the types and
    filters privacy/everything.py derives from the operation's parameters) in `patient`'s
    compartment, then what the files reference outside any compartment. The limits and
    answers of `kick_off`; NOT_FOUND, and no job, if the Patient is out of the caller's reach."""
    principal = await _admitted(ctx, "everything", policy)
    await crud.read(ctx, "Patient", patient)
    spec = Spec(request=request, transaction_time=clock.instant(), sources=tuple(sources),
                caller=caller_of(principal), patients=(patient,),
                requires_token=not principal.server, referenced=True)
    return await _create(ctx, principal, spec)


async def _admitted(ctx: Context, level: str, policy: Policy) -> Principal:
    """The caller, if they may export at `level` and are within their running jobs' limit."""
    principal = _exporter(ctx, level)
    if not principal.server:  # the operator's own exports (the command line) are not limited
        await _within_limit(ctx, caller_of(principal), policy)
    return principal


async def _create(ctx: Context, principal: Principal, spec: Spec) -> str:
    id = new_id()
    await ctx.store.jobs.create(Job(id, principal.client_id, "queued", clock.seconds(), spec.dump(),
                                    Progress().dump()))
    return id


async def _within_limit(ctx: Context, caller: dict[str, Any], policy: Policy) -> None:
    """TOO_MANY if the person or system behind `caller` (its subject, not its app: patients
    share the portal's client) has as many unfinished jobs as the policy allows. Two
    kick-offs at the same instant may both pass: the limit is against a client looping, not
    a quota."""
    unfinished = sum(1 for job in await ctx.store.jobs.all() if job.state in ("queued", "running")
                     and Spec.load(job.spec).caller.get("subject") == caller["subject"])
    if unfinished >= policy.running_per_caller:
        raise fail(Kind.TOO_MANY, "throttled", f"{unfinished} exports of yours are still running: "
                   "wait for one to finish (or cancel it with DELETE on its status URL).")


def _exporter(ctx: Context, level: str) -> Principal:
    principal = ctx.principal
    if principal is None:
        raise fail(Kind.FORBIDDEN, "forbidden", "No authenticated caller.")
    if level == "organization":
        if not principal.server:
            raise fail(Kind.FORBIDDEN, "forbidden", "An organisation's export is the operator's.")
        return principal
    if principal.role in _EXPORTERS and principal.patient is None:
        return principal
    if principal.speaks_for_patient and principal.patient is not None and level in ("patient", "everything"):
        return principal
    if principal.role is Role.PRACTITIONER and level != "system":
        return principal  # the access layer confines them to the patients who consent
    raise fail(Kind.FORBIDDEN, "forbidden", "Bulk export is for backend clients with system/ "
               "scopes, for a physician the records of the patients whose consent names them "
               "(Patient or Group level), and for a patient or their representative's own record.")


async def _patients(ctx: Context, asked: Asked, group: str | None) -> tuple[str, ...] | None:
    """The patients an export is confined to (None: not confined to a list)."""
    members: list[str] = []
    if group is not None:
        version = await crud.read(ctx, "Group", group)  # NOT_FOUND if out of reach
        body = orjson.loads(version.body or b"{}")
        members = [ref.removeprefix("Patient/") for m in body.get("member", [])
                   if (ref := (m.get("entity") or {}).get("reference", "")).startswith("Patient/")]
    if asked.patients:
        for id in asked.patients:
            try:
                await crud.read(ctx, "Patient", id)
            except FhirError as error:
                raise fail(error.kind, "not-found", f"patient Patient/{id} is not known.",
                           expression="patient") from None
        members = [p for p in asked.patients if group is None or p in members]
    if group is None and not asked.patients:
        if ctx.principal is not None and ctx.principal.patient is not None:
            return (ctx.principal.patient,)
        return None
    return tuple(dict.fromkeys(members))


async def _managed_by(ctx: Context, organization: str) -> tuple[str, ...]:
    """The ids of the Patients whose managingOrganization is `organization` (NOT_FOUND if
    there is no such Organization)."""
    await crud.read(ctx, "Organization", organization)
    query, _ = parse_query("Patient", [("organization", f"Organization/{organization}"),
                                       ("_count", "1000")], ctx.registry)
    query = decision(ctx, "search", "Patient").confine(query)
    ids: list[str] = []
    cursor = None
    while True:
        page = await ctx.store.search(query, cursor)
        ids += [v.id for v in page.matches]
        if (cursor := page.next_cursor) is None:
            return tuple(ids)


def _directory(organization: str) -> tuple[Source, ...]:
    """An organisation's own resources outside patient compartments: itself, its locations,
    endpoints and roles, and the practitioners holding one of those roles."""
    reference = f"Organization/{organization}"
    return (Source("Organization", (("_id", organization),)),
            *(Source(t, (("organization", reference),)) for t in ("Location", "Endpoint",
                                                                    "PractitionerRole")),
            Source("Practitioner", (("_has:PractitionerRole:practitioner:organization", reference),)))


def _types(ctx: Context, asked: Asked, *, compartment: bool, lenient: bool) -> list[str]:
    """The types to export: those named (each within the caller's scopes: else FORBIDDEN),
    or every type the caller may search; at Patient and Group level, those of the Patient
    compartment (a type outside it is INVALID, or left out when lenient)."""
    registry = ctx.registry
    in_compartment = {t for t in registry.resource_types if t == "Patient" or registry.patient_compartment(t)}
    if asked.types:
        outside = [t for t in asked.types if compartment and t not in in_compartment]
        if outside and not lenient:
            raise invalid(f"_type names types outside the Patient compartment: {', '.join(outside)}.",
                          "_type", "not-supported")
        types = [t for t in asked.types if t not in outside]
        for t in types:
            decision(ctx, "search", t)  # FORBIDDEN: the scopes must cover every type named
        return types
    candidates = sorted(in_compartment if compartment else registry.resource_types)
    types = []
    for t in candidates:
        if t in NOT_BY_DEFAULT:
            continue
        try:
            decision(ctx, "search", t)
        except FhirError:
            continue
        types.append(t)
    if "Patient" in types:  # the patients first: a reader can load in order
        types.insert(0, types.pop(types.index("Patient")))
    return types


def _sources(types: Sequence[str], asked: Asked, *, per_patient: bool) -> tuple[Source, ...]:
    sources = []
    for t in types:
        filters = dict.fromkeys(tuple(f) for f in asked.filters.get(t, [[]]))  # each once
        sources += [Source(t, f, per_patient, n) for n, f in enumerate(filters)]
    return tuple(sources)


async def _own(ctx: Context, id: str) -> tuple[Job, Spec]:
    """The job `id` if the caller started it (same client, same subject) or is the server
    itself; else NOT_FOUND."""
    principal = ctx.principal
    job = await ctx.store.jobs.get(id)
    if job is not None and principal is not None and (
            job.client_id == principal.client_id or principal.server):
        spec = Spec.load(job.spec)
        # The server itself (its operator's commands) sees every job.
        if principal.server or spec.caller.get("subject") == principal.subject:
            return job, spec
    raise fail(Kind.NOT_FOUND, "not-found", f"There is no export job {id}.",
               details_code="MSG_NO_EXIST")


async def status(ctx: Context, id: str, policy: Policy) -> Status:
    """The status of a job; NOT_FOUND for another caller's, a cancelled or an expired one."""
    job, spec = await _own(ctx, id)
    progress = Progress.load(job.progress)
    if job.state == "failed":
        return Status(failure=progress.failure or "The export failed.")
    if job.state != "done":
        sources = len(spec.sources)
        done = min(progress.source, sources)
        return Status(progress=f"{progress.resources} resources in {len(progress.outputs)} "
                               f"files; {done} of {sources} parts read")
    expires = await _unexpired(ctx, job, policy)
    return Status(manifest=manifest(ctx.base_url, id, spec, progress), expires=expires)


async def _unexpired(ctx: Context, job: Job, policy: Policy) -> float:
    """When a finished job expires; past that, it is deleted (the sweep may not have run
    yet) and NOT_FOUND."""
    expires = job.updated + policy.retention_seconds
    if expires <= clock.seconds():
        await ctx.store.jobs.delete(job.id)
        raise fail(Kind.NOT_FOUND, "not-found", f"Export job {job.id} has expired.")
    return expires


def manifest(base: str, id: str, spec: Spec, progress: Progress) -> dict[str, Any]:
    """The complete-status body (export.html#response---complete-status)."""

    def listed(outputs: Sequence[Output]) -> list[dict[str, Any]]:
        return [{"type": o.type, "url": f"{base}/{FILE_PATH}/{id}/{o.name}", "count": o.count}
                for o in outputs]

    body: dict[str, Any] = {"transactionTime": spec.transaction_time, "request": spec.request,
                            "requiresAccessToken": spec.requires_token,
                            "output": listed(progress.outputs), "error": listed(progress.errors)}
    if spec.since is not None:
        body["deleted"] = listed(progress.deleted)
    return body


async def file(ctx: Context, id: str, name: str, policy: Policy) -> bytes:
    """A file of a finished job the caller started, until it expires; the request's audit
    trail names the patients whose data it holds. NOT_FOUND otherwise."""
    job, _ = await _own(ctx, id)
    if job.state == "done":
        await _unexpired(ctx, job, policy)
    progress = Progress.load(job.progress)
    listed = next((o for o in (*progress.outputs, *progress.deleted, *progress.errors)
                   if o.name == name), None)
    data = await ctx.store.jobs.file(id, name) if listed is not None and job.state == "done" else None
    if data is None:
        raise fail(Kind.NOT_FOUND, "not-found", f"Export job {id} has no file {name}.")
    if ctx.trail is not None:
        for patient in await _patients_of(ctx, id, [name]):
            ctx.trail.owners[f"Patient/{patient}"] = frozenset({patient})
    return data


async def _patients_of(ctx: Context, id: str, names: Sequence[str]) -> set[str]:
    """The patients whose data the job's files `names` hold."""
    found: set[str] = set()
    for name in names:
        data = await ctx.store.jobs.file(id, patients_file(name))
        if data:
            found.update(data.decode().split())
    return found


async def cancel(ctx: Context, id: str) -> None:
    """Delete a job and its files (export.html#bulk-data-delete-request); NOT_FOUND if gone."""
    await _own(ctx, id)
    await ctx.store.jobs.delete(id)


async def advance(ctx: Context, job: Job, owner: str, policy: Policy, record: Record) -> None:
    """Run a job this worker (`owner`) claimed, step after step, each saved with its files and
    the lease renewed, until it is done, fails for good, or the lease is lost (another worker
    has it, or it was cancelled). A step that raises gives the job back for a later attempt;
    past `policy.attempts` the job fails, with a status that says so."""
    spec = Spec.load(job.spec)
    progress = Progress.load(job.progress)
    if job.attempts > policy.attempts:
        await _fail(ctx, job, owner, progress, f"The export failed {policy.attempts} times.")
        return
    try:
        while not progress.finished:
            acting = await acting_as(ctx, spec.caller)
            after, files = await step(acting, spec, progress, policy.limits,
                                      lambda name: ctx.store.jobs.file(job.id, name))
            if not await _save(ctx, job, owner, "running", after, policy, files):
                return  # lost the lease: cancelled, or taken over
            if after == progress:
                await asyncio.sleep(WAIT_SECONDS)
            progress = after  # saved with its files: the point a new attempt starts from
        # Done, and its manifest served, only once its own AuditEvents are durable: an auditor
        # never sees files handed out that the trail does not name yet, and a worker dying
        # in between leaves the job to be audited by the next attempt, not forgotten.
        await _audit(ctx, job, (await acting_as(ctx, spec.caller)).principal, progress, record)
        await _save(ctx, job, owner, "done", progress, policy)
    except Exception as error:  # noqa: BLE001 - any failure of a step: retried, then failed
        reason = error.issues[0].diagnostics if isinstance(error, FhirError) else \
            incident(log).issues[0].diagnostics
        log.warning("export step failed", extra={"job": job.id, "attempt": job.attempts})
        if job.attempts < policy.attempts:
            # Given back as last saved; claimable again once the lease ends (a pause
            # before the next attempt).
            await ctx.store.jobs.save(job.id, owner, state="queued", progress=progress.dump(),
                                      until=clock.seconds() + policy.lease_seconds,
                                      now=clock.seconds())
        else:
            await _fail(ctx, job, owner, progress, reason)


async def _save(ctx: Context, job: Job, owner: str, state: JobState, progress: Progress,
                policy: Policy, files: Sequence[JobFile] = ()) -> bool:
    """Save the job's state, progress and files, its lease renewed; False if it was lost."""
    now = clock.seconds()
    return await ctx.store.jobs.save(job.id, owner, state=state, progress=progress.dump(),
                                     until=now + policy.lease_seconds, now=now, files=files)


async def _audit(ctx: Context, job: Job, principal: Principal | None, progress: Progress,
                 record: Record) -> None:
    """Record the AuditEvents of a finished job, a batch of patients at a time (memory flat at
    any size). Their ids follow from the job, so a batch an earlier attempt recorded before
    its worker died is not recorded twice (a batch is recorded all or none)."""
    patients = sorted(await _patients_of(ctx, job.id, [o.name for o in progress.outputs]))
    for start in range(0, max(len(patients), 1), AUDIT_BATCH):
        events = _events(principal, set(patients[start:start + AUDIT_BATCH]))
        # A name-based UUID: the ids are stable across attempts, yet do not show the job's id
        # to the patients who read their AuditEvents.
        ids = event_ids(str(uuid.uuid5(_AUDIT_IDS, f"{job.id}/{start}")), len(events))
        if events and not await stored(ctx.store.read("AuditEvent", ids[0])):
            await record(events, ids)


async def _fail(ctx: Context, job: Job, owner: str, progress: Progress, reason: str) -> None:
    failed = dataclasses.replace(progress, failure=reason)
    await ctx.store.jobs.save(job.id, owner, state="failed", progress=failed.dump(), until=0.0,
                              now=clock.seconds())


def _events(principal: Principal | None, patients: set[str]) -> list[dict[str, Any]]:
    """The AuditEvents of a finished job: one per patient whose data it exported."""
    trail = Trail(owners={f"Patient/{p}": frozenset({p}) for p in sorted(patients)})
    return request_events(interaction="operation", status=200, recorded=clock.instant(),
                          principal=principal, address=None, trail=trail, query=None)


async def jobs(ctx: Context) -> list[tuple[Job, Progress]]:
    """Every job with its progress (`fhir-server export list`)."""
    return [(job, Progress.load(job.progress)) for job in await ctx.store.jobs.all()]


async def forget(ctx: Context, patient_id: str) -> int:
    """Delete every job a file of which holds data of Patient/`patient_id` (their erasure:
    the files are sealed under the export's key, which the erasure does not destroy); how
    many. A job still running is deleted too: its worker loses the lease."""
    gone = 0
    for job in await ctx.store.jobs.all():
        progress = Progress.load(job.progress)
        names = [o.name for o in (*progress.outputs, *progress.deleted)]
        if patient_id in await _patients_of(ctx, job.id, names) and await ctx.store.jobs.delete(job.id):
            gone += 1
    return gone


async def sweep(ctx: Context, policy: Policy) -> int:
    """Delete the finished and failed jobs whose files have expired, and files left without
    a job; how many jobs."""
    limit = clock.seconds() - policy.retention_seconds
    gone = [job.id for job in await ctx.store.jobs.all()
            if job.state in ("done", "failed") and job.updated <= limit]
    for id in gone:
        await ctx.store.jobs.delete(id)
    await ctx.store.jobs.prune()
    return len(gone)
