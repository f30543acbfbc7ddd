"""The re-match job (docs/matching.md, "The re-match job"): when trials change (a ResearchStudy,
an eligibility Group or a site's Location written), the changed trials alone are matched
against the patients a physician subscribed to the trial-matching topic may hear of (their
consented patients who agree to their record going to trial investigators), and each new
match becomes an event of that topic, which the subscriptions' dispatcher delivers
(alerts.py checks it again as it sends).

- **What changed** is read from the store's history of those three types since the last
  look (less a margin, for a write that committed after a later one: re-reading it costs an
  evaluation, never an alert), so a write whose server died before anything ran is not lost.
  Changes are batched: the server looks every `notify_poll_seconds`, off the request path.
- **State** lives in the store's outbox under `rematch/` (sealed at rest like every outbox
  record): `rematch/s` the studies still to re-match, the pass under way and how far it got
  (patients in id order); `rematch/l` the lease of the one process running it (a
  compare-and-set, renewed by each commit: a process killed leaves it to expire);
  `rematch/a/<study>/<patient>` the trial version each patient was last told of.
- **Once per patient, trial and trial version** (the study's version and those of the
  eligibility Groups read): every CHUNK patients, one unit of work records the events, who
  they told of, and the progress. A pass killed midway resumes after the last chunk
  committed; a chunk redone finds its alerts recorded and emits nothing again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import multiprocessing
import sys
import time
import weakref
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractAsyncContextManager
from datetime import date, timedelta
from typing import Any

import orjson

from .. import clock
from ..heap import uncollected
from ..model.errors import FhirError, Kind
from ..model.ids import new_id
from ..search import Clause, Query, ReferencePredicate, TokenPredicate, date_range
from ..services import reach, study_access, subscriptions
from ..services.context import Context
from ..services.server_writes import as_server
from ..store.base import HistoryQuery, Outbox, Store, Version
from . import catalogue_history, match_catalogue
from .alerts import TRIAL_MATCHING
from .eligibility import INELIGIBLE, Shared, Trial, TrialIndex, pinned, read_record
from .eligibility_record import TYPES, medication_id
from .match_catalogue import open_for_accrual

PREFIX = "rematch/"
STATE = f"{PREFIX}s"
LEASE = f"{PREFIX}l"
CHUNK = 1000  # patients evaluated between two commits (each writes what they were told and the events)
BATCH = 100  # patients whose records are read by one search per type (SQL has a size limit)
LEASE_SECONDS = 300
MARGIN = timedelta(seconds=5)  # history re-read at each look, for writes committed late
PAGE = 1000
Opener = Callable[[], AbstractAsyncContextManager[Context]]
log = logging.getLogger("fhir_server.trials.rematch")


def alerted_prefix(study: str) -> str:
    return f"{subscriptions.TOLD_PREFIX}{study}/"


def alerted_key(study: str, patient: str) -> str:
    return f"{alerted_prefix(study)}{patient}"


@dataclasses.dataclass(slots=True)
class State:
    since: str | None = None  # history from this instant on is still to look at
    todo: list[str] = dataclasses.field(default_factory=list)  # changed studies, not in a pass yet
    batch: list[str] = dataclasses.field(default_factory=list)  # the pass under way
    after: str = ""  # the place (`_place`) of the pass's last patient done
    seen: list[str] = dataclasses.field(default_factory=list)  # versions (`Type/id/version`) read since `since`


@dataclasses.dataclass(slots=True)
class Report:
    """What a pass did (a job that found nothing to do reports zeros)."""

    studies: int = 0
    patients: int = 0
    pruned: int = 0  # pairs the index proved ineligible without evaluating them
    evaluated: int = 0
    alerts: int = 0  # (patient, trial version) pairs told of
    events: int = 0  # subscription events emitted
    cpu: float = 0.0  # this process's CPU seconds (not its workers')
    wall: float = 0.0


class Busy(Exception):
    """Another process holds the job's lease."""


class Lease:
    """A job's lease (the outbox record `key`), held while a pass runs; every commit renews it
    and fails if lost (Busy)."""

    def __init__(self, store: Store, key: str = LEASE) -> None:
        self.store = store
        self.key = key
        self.holder = new_id()
        self.body: bytes | None = None

    def _new(self) -> bytes:
        until = clock.micros(clock.now() + timedelta(seconds=LEASE_SECONDS))
        return orjson.dumps({"holder": self.holder, "until": until})

    async def take(self) -> None:
        found = await subscriptions.one(self.store, self.key)
        if found is not None and orjson.loads(found)["until"] > clock.micros(clock.now()):
            raise Busy
        body = self._new()
        await self._commit((), expected=found, body=body)

    async def commit(self, records: Sequence[tuple[str, bytes]], remove: Sequence[str] = ()) -> None:
        await self._commit(records, self.body, self._new(), remove)

    async def release(self) -> None:
        try:
            await self.store.commit([Outbox(remove=(self.key,), expect=((self.key, self.body),))])
        except FhirError as exc:
            if exc.kind is not Kind.PRECONDITION_FAILED:
                raise  # else lost already (expired and taken): nothing to give back

    async def _commit(self, records: Sequence[tuple[str, bytes]], expected: bytes | None, body: bytes,
                      remove: Sequence[str] = ()) -> None:
        try:
            await self.store.commit([Outbox(put=(*records, (self.key, body)), remove=tuple(remove),
                                            expect=((self.key, expected),))])
        except FhirError as exc:
            if exc.kind is Kind.PRECONDITION_FAILED:
                raise Busy from None
            raise
        self.body = body


async def _state(store: Store) -> State:
    found = await subscriptions.one(store, STATE)
    return State(**orjson.loads(found)) if found is not None else State()


def _dump(state: State) -> tuple[str, bytes]:
    return STATE, orjson.dumps(state)


async def _history(ctx: Context, resource_type: str, since: str) -> AsyncIterator[Version | str]:
    """The versions of `resource_type` stamped from `since` on, then the instant the answer
    holds until (MongoDB answers only versions settled: store/mongo/store.py), if it says."""
    cursor, as_of = None, None
    while True:
        page = await ctx.store.history(HistoryQuery(resource_type, since=since, count=PAGE,
                                                    before_seq=cursor))
        as_of = as_of or page.as_of
        for version in page.versions:
            yield version
        if page.next_seq is None:
            break
        cursor = page.next_seq
    if as_of is not None:
        yield as_of


async def _written(ctx: Context, resource_type: str, since: str) -> tuple[list[tuple[str, str]], str]:
    """The versions of `resource_type` stamped from `since` on, (instant, `Type/id/version`),
    and until when the answer is complete (less the margin; MongoDB answers only versions
    settled: store/mongo/store.py)."""
    until = clock.instant(clock.now() - MARGIN)
    read: list[tuple[str, str]] = []
    async for version in _history(ctx, resource_type, since):
        if isinstance(version, str):
            until = min(until, version)
        else:
            read.append((version.last_updated, f"{resource_type}/{version.id}/{version.version}"))
    return read, until


async def changed(ctx: Context, since: str, seen: Iterable[str] = ()) -> tuple[set[str], str, list[str]]:
    """The studies whose ResearchStudy, eligibility Group or site Location was written (or
    deleted) from `since` on, leaving out the versions `seen` (`Type/id/version`); where the
    next look starts, and the versions read from there on (seen then)."""
    written: dict[str, set[str]] = {t: set() for t in catalogue_history.TYPES}
    until = clock.instant(clock.now() - MARGIN)
    read: list[tuple[str, str]] = []
    for resource_type in catalogue_history.TYPES:
        versions, complete = await _written(ctx, resource_type, since)
        until = min(until, complete)
        read += versions
        written[resource_type] |= {key.rsplit("/", 1)[0] for _, key in versions if key not in seen}
    again = sorted(key for at, key in read if at >= until)
    if not any(written.values()):
        return set(), until, again
    catalogue = await match_catalogue.load(ctx)
    studies = {reference.removeprefix("ResearchStudy/") for reference in written["ResearchStudy"]}
    for id, trial in catalogue.trials.items():
        if {g.split("/_history/")[0] for g in trial.groups} & written["Group"] or (
                {s.location for s in catalogue.sites[id]} & written["Location"]):
            studies.add(id)
    return studies, until, again


async def look(ctx: Context, wake: Callable[[], None] = lambda: None) -> Report:
    """One look of the job (the server's, every poll): the trials changed since the last
    look, added to those waiting, then the pass under way or a new one over them. Busy if
    another process runs it."""
    store = as_server(ctx, "rematch").store
    lease = Lease(store)
    await lease.take()
    try:
        state = await _state(store)
        found: set[str] = set()
        if state.since is None:  # never begun (`start`): history from now on
            state.since = clock.instant(clock.now() - MARGIN)
        else:  # the margin is read again next time: what was read of it is not news again
            found, state.since, state.seen = await changed(ctx, state.since, set(state.seen))
        state.todo = sorted(set(state.todo) | found)
        if not state.batch:
            state.batch, state.todo, state.after = state.todo, [], ""
        await lease.commit([_dump(state)])
        return await _pass(ctx, lease, state, wake)
    finally:
        await lease.release()


async def full(ctx: Context, opener: Opener | None = None, workers: int = 1,
               wake: Callable[[], None] = lambda: None) -> Report:
    """Every trial against every patient (`fhir-server trials rematch`), resuming a full pass
    cut short; with `workers` > 1 the patients' chunks are evaluated by as many processes,
    each reading records through its own store (`opener`)."""
    store = ctx.store
    lease = Lease(store)
    await lease.take()
    try:
        state = await _state(store)
        catalogue = await match_catalogue.load(as_server(ctx, "rematch"))
        everything = sorted(catalogue.trials)
        if state.batch != everything:  # else a full pass cut short: resumed where it was
            state.todo, state.batch, state.after = [], everything, ""
        state.since = state.since or clock.instant(clock.now() - MARGIN)
        await lease.commit([_dump(state)])
        return await _pass(ctx, lease, state, wake, opener, workers)
    finally:
        await lease.release()


@dataclasses.dataclass(frozen=True, slots=True)
class _Pass:
    """What the evaluation of a pass needs, the same in every worker process."""

    trials: tuple[Trial, ...]  # indexed by each process (an index does not pickle)
    today: date
    news: frozenset[str]  # studies a match of which is news: open, with a site that may recruit


def _news(catalogue: match_catalogue.Catalogue, study: str, today: date) -> bool:
    """A trial whose matches are news: the topic's trigger (status active), open for accrual
    ($match's recruiting-only), and not every site with a status closed or stale."""
    found = catalogue.studies[study]
    sites = catalogue.sites[study]
    return (found.get("status") == "active" and open_for_accrual(found)
            and (any(s.recruiting(today, catalogue.max_age_days) for s in sites)
                 or not any(s.has_status for s in sites)))


async def _population(ctx: Context) -> dict[str, set[str]]:
    """The patients a trial-matching subscriber may hear of, each with those subscriptions."""
    by_practitioner: dict[str, list[str]] = defaultdict(list)
    for id, filters in await subscriptions.on_topic(ctx, TRIAL_MATCHING):
        if filters.get("practitioner"):
            by_practitioner[filters["practitioner"]].append(id)
    if not by_practitioner:
        return {}
    return {patient: {id for p in theirs for id in by_practitioner[p]}
            for patient, practitioners in (await _research_reach(ctx)).items()
            if (theirs := practitioners & by_practitioner.keys())}


@dataclasses.dataclass(frozen=True, slots=True)
class _Reach:
    """Whom practitioners reach among the patients sharing for research, as a pass worked it
    out, kept for the next while no Consent is written (`since`, `seen`: as `changed` tells a
    trial written) nor erased (`count`), and no provision's period begins or ends (`until`)."""

    since: str
    seen: frozenset[str]
    count: int
    until: int | None  # microseconds: the first period bound after it was worked out
    reached: dict[str, frozenset[str]]


_REACH: weakref.WeakKeyDictionary[Store, _Reach] = weakref.WeakKeyDictionary()


async def _research_reach(ctx: Context) -> dict[str, frozenset[str]]:
    """`reach.research_reach` of every active research and privacy Consent, read again only
    when one was written or erased, or a period in them turned, since this process's last
    pass: reading 200,000 of them costs seconds at every look. Only the answer is kept (the
    Consents themselves take ~9 KB of memory a patient)."""
    store, count = match_catalogue.shared(ctx), await ctx.store.count("Consent")
    kept, now = _REACH.get(store), clock.instant(clock.now())
    if kept is not None and kept.count == count and (kept.until is None or _micros(now)[1] < kept.until):
        versions, _ = await _written(ctx, "Consent", kept.since)
        if all(key in kept.seen for _, key in versions):
            return kept.reached
    # What is written from here on is news for the next pass (read before the Consents are).
    versions, since = await _written(ctx, "Consent", clock.instant(clock.now() - MARGIN))
    with uncollected():  # every Consent parsed (heap.py): a full collection at every tenth of them
        by_patient = await reach.research_consents(ctx)
        _REACH[store] = kept = _Reach(since, frozenset(key for at, key in versions if at >= since), count,
                                      reach.turns(by_patient, _micros(now)[0]),
                                      reach.research_reach(by_patient, now))
    return kept.reached


def _micros(instant: str) -> tuple[int, int]:
    found = date_range(instant)
    assert found is not None  # the clock's own instant
    return found


# What is read of a record by patient (a Medication names no patient: those its treatments
# name are read by id, `named_medications`), and of it first when a pass has FEW trials.
RECORD = tuple(t for t in TYPES if t != "Medication")
_FIRST = ("Patient", "Condition")
_REST = tuple(t for t in RECORD if t not in _FIRST)
# Up to this many trials, a batch's diagnoses are read first, and the rest of a record only for
# a patient they leave some trial. Few trials prune many patients whole (bench/matching.py's
# catalogue: 83% of the patients for 1 trial, 47% for 10, 4.5% for 100); with more, pruning
# first costs more than it spares (the index's candidates, then the record read twice: at 100
# trials, 20 µs a patient; at 10,000, 1.4 ms).
FEW = 50


def _compartments(patients: Sequence[str], types: Iterable[str]) -> list[Query]:
    """One query per patient and type (`patient=Patient/<id>`; the Patient by `_id`): the
    shape `Store.gather` reads a compartment by (a seek per patient, no plan to choose)."""
    return [Query("Patient", (Clause((TokenPredicate("_id", None, id),)),)) if resource_type == "Patient"
            else Query(resource_type, (Clause((ReferencePredicate("patient", "Patient", id),)),))
            for id in patients for resource_type in types]


async def about(ctx: Context, types: Iterable[str], patients: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """The current resources of `types` about each of `patients` (at most BATCH), read as the
    server by one read of their compartments, rather than a search per type and patient."""
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for version in await ctx.store.gather(_compartments(patients, types)):
        if version.body is None:
            continue
        resource = orjson.loads(version.body)
        owner = version.id if version.resource_type == "Patient" else study_access.owner(resource)
        if owner is not None:
            found[owner].append(resource)
    return found


async def named_medications(ctx: Context, records: dict[str, list[dict[str, Any]]],
                            patients: Sequence[str]) -> None:
    """Add to the records of `patients` the Medications their treatments name by reference
    (a Medication names no patient: it is read by its id, once for the batch), so that a
    prior treatment is judged as `$match` judges it."""
    wanted: dict[str, list[str]] = defaultdict(list)  # Medication id -> the patients naming it
    for patient in patients:
        for resource in records[patient]:
            if (id := medication_id(resource)) is not None:
                wanted[id].append(patient)
    if not wanted:
        return
    queries = [Query("Medication", (Clause((TokenPredicate("_id", None, id),)),)) for id in sorted(wanted)]
    for version in await ctx.store.gather(queries):
        if version.body is not None:
            medication = orjson.loads(version.body)
            for patient in dict.fromkeys(wanted[version.id]):
                records[patient].append(medication)


def _has_patient(resources: Iterable[dict[str, Any]]) -> bool:
    return any(r["resourceType"] == "Patient" for r in resources)


def _entries(resources: Iterable[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(pinned(r), r) for r in resources]


async def _evaluate(ctx: Context, index: TrialIndex, shared: Shared, plan: _Pass,
                    patients: Sequence[str]) -> tuple[list[tuple[str, str]], int, int]:
    """(the (patient, study) matches that are news, pairs pruned, pairs evaluated). A patient
    whose Patient is deleted is left out. The index prunes on diagnoses alone: with FEW
    trials, the rest of a record is read only for a patient some trial is left for. Verdicts
    are `shared` by the patients giving a criterion the same values, for the whole pass. The
    cyclic collector is kept out (heap.py): a chunk parses and judges a million containers,
    and each full collection would walk the pass's state and the catalogue again."""
    with uncollected():
        return await _evaluated_chunk(ctx, index, shared, plan, patients)


async def _evaluated_chunk(ctx: Context, index: TrialIndex, shared: Shared, plan: _Pass,
                           patients: Sequence[str]) -> tuple[list[tuple[str, str]], int, int]:
    matches: list[tuple[str, str]] = []
    pruned = evaluated = 0
    few = len(index.trials) <= FEW
    for start in range(0, len(patients), BATCH):
        records = await about(ctx, _FIRST if few else RECORD, patients[start:start + BATCH])
        batch = [p for p in patients[start:start + BATCH] if _has_patient(records[p])]
        if few:
            kept = [p for p in batch if index.candidates(read_record(_entries(records[p]), plan.today))[0]]
            pruned += (len(batch) - len(kept)) * len(index.trials)
            for owner, resources in (await about(ctx, _REST, kept) if kept else {}).items():
                records[owner] += resources
            batch = kept
        await named_medications(ctx, records, batch)
        for patient in batch:
            verdicts = index.verdicts(read_record(_entries(records[patient]), plan.today), shared)
            pruned += verdicts.pruned
            evaluated += len(verdicts.found)
            matches += [(patient, study) for study, verdict, _ in verdicts.found
                        if verdict != INELIGIBLE and study in plan.news]
    return matches, pruned, evaluated


def _chunks(patients: Sequence[str]) -> list[Sequence[str]]:
    return [patients[n:n + CHUNK] for n in range(0, len(patients), CHUNK)]


async def _pass(ctx: Context, lease: Lease, state: State, wake: Callable[[], None],
                opener: Opener | None = None, workers: int = 1) -> Report:
    """Match the studies of `state.batch` against the population from `state.after` on."""
    started, wall = time.process_time(), time.perf_counter()
    report = Report(studies=len(state.batch))
    server = as_server(ctx, "rematch")
    if state.batch:
        catalogue = await match_catalogue.load(server)
        today = clock.now().date()
        trials = [catalogue.trials[s] for s in state.batch if s in catalogue.trials]
        plan = _Pass(tuple(trials), today,
                     frozenset(t.study for t in trials if _news(catalogue, t.study, today)))
        versions = {s: (v, _trial_version(catalogue, v)) for s in plan.news
                    if (v := await server.store.read("ResearchStudy", s)) is not None}
        kinds: dict[bytes, bytes] = {}
        told = {s: await _told(server.store, s, kinds) for s in plan.news}
        population = await _population(server)
        places = {p: place for p in population if (place := _place(population, p)) > state.after}
        patients = sorted(places, key=places.__getitem__)
        report.patients = len(patients)
        async for chunk, (matches, pruned, evaluated) in _evaluated(server, plan, patients, opener, workers):
            report.pruned += pruned
            report.evaluated += evaluated
            records = _alerts(matches, versions, told, population, report)
            state.after = places[chunk[-1]]
            await lease.commit([*records, _dump(state)])
            if records:
                wake()
    state.batch, state.after = [], ""
    await lease.commit([_dump(state)])
    report.cpu, report.wall = time.process_time() - started, time.perf_counter() - wall
    return report


async def _told(store: Store, study: str, kinds: dict[bytes, bytes]) -> dict[str, bytes]:
    """The trial version each patient was last told of, for one study. Equal ids and versions
    are held once (`kinds`: the versions met): a full pass holds every study's, ~380 a patient."""
    prefix = alerted_prefix(study)
    return {sys.intern(key[len(prefix):]): kinds.setdefault(body, body) for key, body in await store.outbox(prefix)}


def _trial_version(catalogue: match_catalogue.Catalogue, version: Version) -> bytes:
    return orjson.dumps([version.version, *catalogue.trials[version.id].groups])


def _place(population: dict[str, set[str]], patient: str) -> str:
    """Where a patient comes in a pass: with the other patients of their first subscription
    (then by id), so that a chunk's event for a subscription and trial names many of its
    patients rather than one, as ids would interleave them with other physicians'."""
    return f"{min(population[patient])}/{patient}"


def _alerts(matches: Iterable[tuple[str, str]], versions: dict[str, tuple[Version, bytes]],
            told: dict[str, dict[str, bytes]], population: dict[str, set[str]],
            report: Report) -> list[tuple[str, bytes]]:
    """The records of the new matches: who was told of which trial version (`versions`: each
    study's, with its `_trial_version`), and one event per subscription and study naming its
    patients."""
    records: list[tuple[str, bytes]] = []
    patients: dict[tuple[str, str], list[str]] = defaultdict(list)
    for patient, study in matches:
        if study not in versions:
            continue  # deleted since the catalogue was read
        trial_version = versions[study][1]
        if told[study].get(patient) == trial_version:
            continue
        told[study][patient] = trial_version
        records.append((alerted_key(study, patient), trial_version))
        report.alerts += 1
        for subscription in sorted(population[patient]):
            patients[(subscription, study)].append(patient)
    for (subscription, study), named in sorted(patients.items()):
        records.append(subscriptions.topic_event(subscription, versions[study][0], named))
        report.events += 1
    return records


async def _evaluated(ctx: Context, plan: _Pass, patients: Sequence[str], opener: Opener | None,
                     workers: int) -> AsyncIterator[tuple[Sequence[str], tuple[list[tuple[str, str]], int, int]]]:
    """Each chunk of `patients` with what it matched, in order: in this process, or by
    `workers` processes (each is handed the index and opens its own store)."""
    chunks = _chunks(patients)
    if workers <= 1 or opener is None or len(chunks) <= 1:
        index, shared = TrialIndex(plan.trials), Shared()
        for chunk in chunks:
            yield chunk, await _evaluate(ctx, index, shared, plan, chunk)
        return
    loop = asyncio.get_running_loop()
    # spawn, not fork: a forked child would inherit the parent's store, its threads and loop.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start_worker, initargs=(opener, plan)) as pool:
        pending = [loop.run_in_executor(pool, _worker_evaluate, chunk) for chunk in chunks]
        for chunk, future in zip(chunks, pending, strict=True):
            yield chunk, await future


_WORKER: tuple[asyncio.AbstractEventLoop, Context, TrialIndex, Shared, _Pass] | None = None
_OPEN: list[AbstractAsyncContextManager[Context]] = []  # a collected one would close its store


def _start_worker(opener: Opener, plan: _Pass) -> None:
    """A worker process's loop and store, open for its life."""
    global _WORKER
    loop = asyncio.new_event_loop()
    _OPEN.append(opener())
    ctx = loop.run_until_complete(_OPEN[-1].__aenter__())
    _WORKER = (loop, as_server(ctx, "rematch"), TrialIndex(plan.trials), Shared(), plan)


def _worker_evaluate(chunk: Sequence[str]) -> tuple[list[tuple[str, str]], int, int]:
    assert _WORKER is not None
    loop, ctx, index, shared, plan = _WORKER
    return loop.run_until_complete(_evaluate(ctx, index, shared, plan, chunk))


async def start(ctx: Context) -> None:
    """Begin the history at the server's first start: what was stored before is the full
    re-match's (`fhir-server trials rematch`), not news."""
    first = State(since=clock.instant(clock.now()))
    try:
        await ctx.store.commit([Outbox(put=(_dump(first),), expect=((STATE, None),))])
    except FhirError as exc:
        if exc.kind is not Kind.PRECONDITION_FAILED:
            raise  # else begun already


async def run(ctx: Context, every: float, wake: Callable[[], None]) -> None:
    """The server's task: a look every `every` seconds, until cancelled; a failed look is
    logged and tried again at the next. The history is begun here if the store could not be
    reached when the server started."""
    begun = False
    while True:
        await asyncio.sleep(every)
        try:
            if not begun:
                await start(ctx)
                begun = True
            await look(ctx, wake)
        except Busy:
            continue  # another worker process runs it
        except Exception:  # noqa: BLE001 - the job must outlive one bad look
            log.exception("the re-match job failed; it resumes at its next look")


def summary(report: Report) -> str:
    pairs = report.pruned + report.evaluated
    share = f" ({100 * report.pruned / pairs:.1f}%)" if pairs else ""
    return (f"{report.studies} trials x {report.patients} patients: {report.pruned} pairs pruned{share}, "
            f"{report.evaluated} evaluated; {report.alerts} new matches told in {report.events} "
            f"events; {report.wall:.1f} s ({report.cpu:.1f} s CPU in this process)")

