"""One Bulk Data export job: what it reads (its `Spec`, fixed at kick-off) and how far it got
(its `Progress`), and `step`, which reads the next page of resources and turns it into one
ndjson file (Bulk Data Access IG 2.0.0, export.html; docs/export.md).

A job reads through the access layer as its caller, whose principal is built again at every
step (a consent withdrawn mid-export takes effect at the next page), one source after another
(a type, with its `_typeFilter` and, for patient sets, a batch of patients), each by the
store's keyset cursor. A step's file name comes from the progress it starts from, and the
cursor moves only when the file is saved with it (store/jobs.py), so a step run again after
a crash writes the same file again instead of a second copy: every resource once.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ..access import Claims, Principal, server_principal
from ..access.policy import compartment_clause
from ..model import jsonbody
from ..model.errors import FhirError, Issue
from ..model.outcome import operation_outcome
from ..model.summary import select_elements
from ..search import Clause, Query, Unsupported, extract, matches, parse_query, patients_of
from ..store.base import HistoryQuery, Version
from ..store.jobs import JobFile
from . import crud
from .context import Context
from .guard import decision, reachable, visible
from .principals import principal_of

PATIENT_BATCH = 100  # patients per compartment query (SQL has a size limit)
DELETED_PAGE = 1000  # history entries read per step for `deleted`
_PATIENT_REFERENCE = re.compile(rb'"reference"\s*:\s*"Patient/([A-Za-z0-9\-.]{1,64})"')


@dataclass(frozen=True, slots=True)
class Source:
    """What one pass reads: a type, its filter (search parameters), whether it is confined
    to the job's patients, and how many passes on the same type come just before it in the
    job's sources (`_typeFilter` values are OR-ed: a resource matching the filter of one of
    them was written by it)."""

    type: str
    params: tuple[tuple[str, str], ...] = ()
    per_patient: bool = False
    written_by: int = 0


@dataclass(frozen=True, slots=True)
class Spec:
    """A job's request, fixed at kick-off (transactionTime included)."""

    request: str  # the kick-off URL (the manifest's `request`)
    transaction_time: str
    sources: tuple[Source, ...]
    caller: dict[str, Any]  # the Claims of the caller, or {"server": name}
    since: str | None = None
    patients: tuple[str, ...] = ()
    elements: tuple[str, ...] = ()
    ignored: tuple[dict[str, Any], ...] = ()  # OperationOutcome issues of a lenient request
    requires_token: bool = True
    referenced: bool = False  # add what the files reference outside patient compartments

    def dump(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def load(cls, data: bytes) -> Spec:
        raw = orjson.loads(data)
        sources = tuple(Source(s["type"], _pairs(s["params"]), s["per_patient"], s["written_by"])
                        for s in raw.pop("sources"))
        return cls(**{**raw, "sources": sources, "patients": tuple(raw["patients"]),
                      "elements": tuple(raw["elements"]), "ignored": tuple(raw["ignored"])})

    @property
    def types(self) -> list[str]:
        return list(dict.fromkeys(s.type for s in self.sources))


def _pairs(raw: Sequence[Sequence[str]]) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in raw)


@dataclass(frozen=True, slots=True)
class Output:
    """A file written: its type, name and resources (lines). The patients whose data it holds
    are in a file of their own beside it (`patients_file`): the progress stays small."""

    type: str
    name: str
    count: int


def patients_file(name: str) -> str:
    """The name of the file listing the patients of file `name`, one id a line."""
    return f"{name}.patients"


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a job got: the source, patient batch and store cursor to read next; the
    files written (`outputs`, `deleted`, `errors`); the page size that fits the byte cap."""

    source: int = 0
    batch: int = 0
    cursor: str | None = None
    files: int = 0  # files written so far: the next file's number
    page: int = 0  # resources to ask for (0: the file limit)
    outputs: tuple[Output, ...] = ()
    deleted: tuple[Output, ...] = ()
    errors: tuple[Output, ...] = ()
    deleted_type: int = 0
    # The source's pages are read: now its type's history after transactionTime, for what
    # was deleted since (`cursor` is then a history cursor).
    late: bool = False
    settled: bool = False  # every version up to transactionTime is visible
    referenced: bool = False  # the referenced resources are written
    finished: bool = False
    failure: str | None = None  # why the job failed for good
    issues: tuple[dict[str, Any], ...] = ()  # what went wrong while reading (error file)

    def dump(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def load(cls, data: bytes) -> Progress:
        raw = orjson.loads(data)
        for name in ("outputs", "deleted", "errors"):
            raw[name] = tuple(Output(o["type"], o["name"], o["count"]) for o in raw[name])
        raw["issues"] = tuple(raw["issues"])
        return cls(**raw)

    @property
    def resources(self) -> int:
        return sum(o.count for o in self.outputs)


@dataclass(frozen=True, slots=True)
class Limits:
    """How files are split: at most `resources` lines and about `bytes` bytes each."""

    resources: int = 10_000
    bytes: int = 8 * 1024 * 1024


def caller_of(principal: Principal) -> dict[str, Any]:
    """What a job keeps of its caller to act as them again (never the token itself)."""
    if principal.server:
        return {"server": principal.subject}
    return dataclasses.asdict(Claims(
        subject=principal.subject, client_id=principal.client_id, scope=principal.grant.text(),
        patient=principal.patient, fhir_user=principal.fhir_user,
        admin=principal.admin, acts_for=tuple(principal.recipients or ())
        if principal.fhir_user is None else ()))


async def acting_as(ctx: Context, caller: dict[str, Any]) -> Context:
    """The Context of a job's caller, as the store says they reach today."""
    if "server" in caller:
        principal = server_principal(caller["server"])
    else:
        principal = await principal_of(ctx, Claims(**{**caller, "acts_for": tuple(caller["acts_for"])}))
    return dataclasses.replace(ctx, principal=principal, trail=None)


# Reads a file the job wrote, by name.
Reader = Callable[[str], Awaitable[bytes | None]]


async def step(ctx: Context, spec: Spec, progress: Progress, limits: Limits,
               written: Reader) -> tuple[Progress, list[JobFile]]:
    """The next piece of work from `progress` (ctx acts as the job's caller): the progress
    after it and the files it wrote; `finished` once nothing is left. The same progress back
    means the step must wait for the store (try again in a moment)."""
    if not progress.settled:
        return await _settled(ctx, spec, progress)
    if progress.source < len(spec.sources):
        if progress.late:
            return await _deleted_after(ctx, spec, progress, limits)
        return await _resources(ctx, spec, progress, limits)
    if spec.referenced and not progress.referenced:
        return await _referenced(ctx, progress, written)
    types = spec.types
    if spec.since is not None and progress.deleted_type < len(types):
        return await _deletions(ctx, spec, progress, types[progress.deleted_type])
    issues = (*spec.ignored, *progress.issues)
    if issues:
        name = f"{progress.files + 1:06d}.OperationOutcome.ndjson"
        lines = [orjson.dumps(operation_outcome([_issue(i)])) for i in issues]
        error = Output("OperationOutcome", name, len(lines))
        return (dataclasses.replace(progress, errors=(error,), files=progress.files + 1,
                                    finished=True), [JobFile(name, _ndjson(lines))])
    return dataclasses.replace(progress, finished=True), []


async def _settled(ctx: Context, spec: Spec, progress: Progress) -> tuple[Progress, list[JobFile]]:
    """Wait until the store shows every version stamped up to transactionTime: on MongoDB a
    unit stamped before it may commit up to SETTLE_SECONDS later (its `_history` answers say
    how far they are complete); on SQLite at once (writers stamp under the write lock)."""
    page = await ctx.store.history(HistoryQuery(since=spec.transaction_time, count=1))
    if page.as_of is not None and page.as_of < spec.transaction_time:
        return progress, []
    return dataclasses.replace(progress, settled=True), []


def _issue(raw: dict[str, Any]) -> Issue:
    return Issue(raw["code"], raw["diagnostics"], raw["severity"], tuple(raw["expression"]),
                 raw.get("details_code"))


def _ndjson(lines: Sequence[bytes]) -> bytes:
    return b"\n".join(lines) + b"\n"


def _query(ctx: Context, spec: Spec, source: Source, batch: int) -> Query:
    params = [*source.params]
    if spec.since is not None:
        params.append(("_lastUpdated", f"gt{spec.since}"))
    query, _ = parse_query(source.type, params, ctx.registry, base=ctx.base_url)
    query = decision(ctx, "search", source.type).confine(query)
    if source.per_patient:
        patients = spec.patients[batch * PATIENT_BATCH:(batch + 1) * PATIENT_BATCH]
        members = [p for id in patients
                   for p in (compartment_clause(ctx.registry, source.type, id, links=False)
                             or Clause(())).any_of]
        query = query.restrict(Clause(tuple(members)))
    return query


def _advanced(spec: Spec, progress: Progress, next_cursor: str | None) -> Progress:
    """The position after a page: the next page, else the next patient batch, else the next source."""
    if next_cursor is not None:
        return dataclasses.replace(progress, cursor=next_cursor)
    source = spec.sources[progress.source]
    batches = -(-len(spec.patients) // PATIENT_BATCH) if source.per_patient else 1
    if progress.batch + 1 < batches:
        return dataclasses.replace(progress, batch=progress.batch + 1, cursor=None)
    return dataclasses.replace(progress, source=progress.source + 1, batch=0, cursor=None, page=0)


async def _resources(ctx: Context, spec: Spec, progress: Progress,
                     limits: Limits) -> tuple[Progress, list[JobFile]]:
    source = spec.sources[progress.source]
    if source.per_patient and not spec.patients:
        return _advanced(spec, progress, None), []
    query = _query(ctx, spec, source, progress.batch)
    size = progress.page or limits.resources
    while True:
        page = await ctx.store.search(dataclasses.replace(query, count=size), progress.cursor)
        lines, patients = await _lines(ctx, spec, source, page.matches)
        total = sum(len(line) + 1 for line in lines)
        if total <= limits.bytes or size == 1:
            break
        # Too many bytes for one file: the same page, smaller (files end at page ends).
        size = max(1, min(size - 1, size * limits.bytes // total * 9 // 10))
    if page.next_cursor is not None:
        after = dataclasses.replace(progress, cursor=page.next_cursor, page=size)
    elif (after := dataclasses.replace(_advanced(spec, progress, None), page=0)).source != progress.source:
        # The source's last page (of its last batch): then what was deleted since transactionTime.
        after = dataclasses.replace(progress, cursor=None, page=0, late=True)
    return _written(source.type, progress, after, lines, patients)


def _written(resource_type: str, progress: Progress, after: Progress, lines: Sequence[bytes],
             patients: set[str]) -> tuple[Progress, list[JobFile]]:
    """`after`, with a file of `lines` (and its patients' list) if there are any."""
    if not lines:
        return after, []
    name = f"{progress.files + 1:06d}.{resource_type}.ndjson"
    output = Output(resource_type, name, len(lines))
    return (dataclasses.replace(after, files=progress.files + 1,
                                outputs=(*progress.outputs, output)),
            [JobFile(name, _ndjson(lines)),
             JobFile(patients_file(name), "\n".join(sorted(patients)).encode())])


async def _deleted_after(ctx: Context, spec: Spec, progress: Progress,
                         limits: Limits) -> tuple[Progress, list[JobFile]]:
    """A page of the source type's history after transactionTime: the resources deleted since
    that the source matched then, as they were then. The IG: resources changed up to
    transactionTime SHALL be included, and a search no longer finds a deleted one. A resource
    deleted and created again is the search's (`_as_of`)."""
    source = spec.sources[progress.source]
    before = int(progress.cursor) if progress.cursor else None
    page = await ctx.store.history(HistoryQuery(source.type, since=spec.transaction_time,
                                                count=limits.resources, before_seq=before))
    since = [("_lastUpdated", f"gt{spec.since}")] if spec.since is not None else []
    criteria, _ = parse_query(source.type, [*source.params, *since], ctx.registry, base=ctx.base_url)
    patients = set(spec.patients)  # once for all the batches: the history is read once
    found: list[Version] = []
    issues: list[dict[str, Any]] = []
    for version in page.versions:
        if not version.deleted or version.last_updated <= spec.transaction_time:
            continue
        current = await ctx.store.read(source.type, version.id)
        if current is None or not current.deleted or current.version != version.version:
            continue  # deleted again later, or created again (then the search's)
        then = await _as_of(ctx, current, spec.transaction_time)
        if then is None or then.body is None:
            continue
        entries = extract(orjson.loads(then.body))
        if source.per_patient and patients_of(ctx.registry, source.type, entries, then.id,
                                              links=False).isdisjoint(patients):
            continue
        try:
            if matches(criteria, entries, resource_type=source.type):
                found.append(then)
        except Unsupported:  # a filter that only the store can evaluate: said, not guessed
            issues.append(dataclasses.asdict(Issue(
                "incomplete", f"{source.type}/{then.id}, deleted after transactionTime, is "
                "left out: its filter cannot be checked on its version of then.", "warning")))
    lines, owners = await _lines(ctx, spec, source, found)
    if page.next_seq is not None:
        after = dataclasses.replace(progress, cursor=str(page.next_seq))
    else:  # on to the next source
        after = _advanced(spec, dataclasses.replace(progress, late=False), None)
    after = dataclasses.replace(after, issues=(*progress.issues, *issues))
    return _written(source.type, progress, after, lines, owners)


async def _lines(ctx: Context, spec: Spec, source: Source,
                 matches_: Sequence[Version]) -> tuple[list[bytes], set[str]]:
    """The ndjson lines of a page and the patients whose data they hold."""
    lines: list[bytes] = []
    patients: set[str] = set()
    elements = _elements_for(spec.elements, source.type)
    at = spec.sources.index(source)
    earlier = [parse_query(source.type, list(s.params), ctx.registry, base=ctx.base_url)[0]
               for s in spec.sources[at - source.written_by:at]]
    for version in matches_:
        if version.last_updated > spec.transaction_time:
            found = await _as_of(ctx, version, spec.transaction_time)
            if found is None:
                continue
            version = found
        body = version.body
        assert body is not None
        if earlier and any(matches(q, extract(orjson.loads(body)), resource_type=source.type)
                           for q in earlier):
            continue
        if elements or b"\n" in body:  # a body stored as sent may hold line breaks
            resource = jsonbody.load_exact(body)
            body = jsonbody.dump(select_elements(resource, elements) if elements else resource)
        lines.append(body)
        if source.type == "Patient":
            patients.add(version.id)
        else:
            patients.update(m.decode() for m in _PATIENT_REFERENCE.findall(body))
    return lines, patients


def _elements_for(elements: Sequence[str], resource_type: str) -> tuple[str, ...]:
    """The `_elements` entries that apply to `resource_type` (none: the whole resource)."""
    return tuple(e for e in elements if "." not in e or e.startswith(f"{resource_type}."))


async def _as_of(ctx: Context, current: Version, instant: str) -> Version | None:
    """The version of a resource changed after the job's transactionTime that was current at
    that time (the IG: resources changed up to transactionTime SHALL be included), None if
    it did not exist then or was deleted."""
    page = await ctx.store.history(HistoryQuery(current.resource_type, current.id, count=50))
    before = next((v for v in page.versions if v.last_updated <= instant), None)
    if before is None or before.deleted:
        return None
    return before if visible(decision(ctx, "search", current.resource_type), before) else None


async def _referenced(ctx: Context, progress: Progress,
                      written: Reader) -> tuple[Progress, list[JobFile]]:
    """The resources outside every patient compartment that the files written reference and
    the caller may read (as `$everything` adds them), one file per type."""
    lines = [line for output in progress.outputs
             for line in (await written(output.name) or b"").splitlines()]
    by_type: dict[str, list[bytes]] = {}
    for version in await outside_compartments(ctx, map(orjson.loads, lines)):
        by_type.setdefault(version.resource_type, []).append(version.body or b"{}")
    after = dataclasses.replace(progress, referenced=True)
    files: list[JobFile] = []
    for resource_type, lines in sorted(by_type.items()):
        name = f"{after.files + 1:06d}.{resource_type}.ndjson"
        after = dataclasses.replace(after, files=after.files + 1,
                                    outputs=(*after.outputs, Output(resource_type, name, len(lines))))
        files += [JobFile(name, _ndjson(lines)), JobFile(patients_file(name), b"")]
    return after, files


async def outside_compartments(ctx: Context, resources: Iterable[Any]) -> list[Version]:
    """The resources of types outside every patient compartment that `resources` reference
    and the caller may read, each once (what `$everything` adds to a compartment)."""
    wanted = dict.fromkeys(ref for resource in resources for ref in references(resource, ctx.base_url)
                           if ref.partition("/")[0] != "Patient"
                           and not ctx.registry.patient_compartment(ref.partition("/")[0]))
    found = []
    for reference in wanted:
        resource_type, _, id = reference.partition("/")
        try:
            found.append(await crud.read(ctx, resource_type, id))
        except FhirError:  # not there, deleted, or out of reach: left out
            continue
    return found


def references(resource: Any, base_url: str) -> Iterator[str]:
    """The local `Type/id` references anywhere in a resource (contained ones and `#` left out)."""
    if isinstance(resource, dict):
        for key, value in resource.items():
            if key == "reference" and isinstance(value, str):
                local = value.removeprefix(f"{base_url}/")
                parts = local.split("/")
                if len(parts) == 2 and parts[0][:1].isupper() and parts[1]:
                    yield local
            elif key != "contained":
                yield from references(value, base_url)
    elif isinstance(resource, list):
        for item in resource:
            yield from references(item, base_url)


async def _deletions(ctx: Context, spec: Spec, progress: Progress,
                     resource_type: str) -> tuple[Progress, list[JobFile]]:
    """A page of the type's history since `_since` (newest first): its deletions up to
    transactionTime of resources still deleted, as one transaction Bundle line."""
    before = int(progress.cursor) if progress.cursor else None
    page = await ctx.store.history(HistoryQuery(resource_type, since=spec.since, count=DELETED_PAGE,
                                                before_seq=before))
    if page.as_of is not None and page.as_of < spec.transaction_time:
        # The store lists only versions that can no longer be overtaken (MongoDB: those
        # settled), and not yet all of those up to transactionTime: the same step later.
        return progress, []
    allowed = decision(ctx, "search", resource_type)
    per_patient = any(s.per_patient for s in spec.sources if s.type == resource_type)
    urls: list[str] = []
    for version in page.versions:
        if not version.deleted or version.last_updated > spec.transaction_time:
            continue
        current = await ctx.store.read(resource_type, version.id)
        if current is None or not current.deleted or current.version != version.version:
            continue
        if not await reachable(ctx, allowed, current):
            continue
        if per_patient and not await _in_patients(ctx, spec, current):
            continue
        urls.append(f"{resource_type}/{version.id}")
    if page.next_seq is not None:
        after = dataclasses.replace(progress, cursor=str(page.next_seq))
    else:
        after = dataclasses.replace(progress, cursor=None, deleted_type=progress.deleted_type + 1)
    if not urls:
        return after, []
    name = f"{progress.files + 1:06d}.deleted.{resource_type}.ndjson"
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [{"request": {"method": "DELETE", "url": url}} for url in urls]}
    output = Output("Bundle", name, 1)
    return (dataclasses.replace(after, files=progress.files + 1,
                                deleted=(*progress.deleted, output)),
            [JobFile(name, _ndjson([orjson.dumps(bundle)]))])


async def _in_patients(ctx: Context, spec: Spec, deleted: Version) -> bool:
    """Whether a deleted resource's last content lay in one of the job's patients' compartments."""
    last = await ctx.store.vread(deleted.resource_type, deleted.id, deleted.version - 1)
    if last is None or last.body is None:
        return False
    found = patients_of(ctx.registry, deleted.resource_type, extract(orjson.loads(last.body)),
                        deleted.id, links=False)
    return not found.isdisjoint(spec.patients)
