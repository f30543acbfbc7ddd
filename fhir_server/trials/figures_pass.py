"""The day's figures of every study, computed ahead in one pass (docs/matching.md, "The daily
figures pass"), so that an investigator's first inverse `$match` of the day for a study is
served from its stored snapshot (inverse_counts.py) instead of reading every counted record.

- **Once per UTC day**, by one process: `fhir-server figures run`, which the server starts at
  start and when the day changes, as a child process at a lower priority
  (privacy/retention_schedule.py `every_day`). A lease in the outbox (rematch.Lease) keeps a
  second process from running beside it; the record DONE says which day was done.
- **One read of the population.** The patients counted today (consents_kept.agreements)
  are read in id order, BATCH records by one `Store.gather` (rematch.about), each once for
  every study: one `TrialIndex` over the catalogue leaves each patient the trials their
  diagnoses do not rule out, and only those pairs are judged, into the study's cells exactly
  as the call computing a snapshot does (inverse_counts.Cells).
- **No member lists.** A cell's rounding draws from the digest of its members
  (inverse_counts.set_digest, a sum): the pruned cell, ~97% of the population for each of
  10,000 studies, is the population's size and digest less the evaluated cells'.
- **Stored as a call stores it**: each study's record under study_access.FIGURES_PREFIX, by
  compare-and-set; a study whose snapshot of the day a call stored first keeps it.
- **Audited**: the pass reads each counted patient's record, so each gets an AuditEvent in
  their compartment saying so, as the server (PRINCIPAL; `record`), recorded every CHUNK
  patients as they are read.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson

from .. import clock
from ..model.errors import FhirError, Kind, fail
from ..services import study_access, subscriptions
from ..services.context import Context
from ..services.server_writes import as_server
from ..store.base import Outbox, Store
from . import consents_kept, inverse_counts, match_catalogue, rematch
from .eligibility import TrialIndex, pinned, read_record
from .match import home
from .prescreening import pseudonym_key

PRINCIPAL = "fhir-server (figures)"  # who the pass's AuditEvents name
LEASE = "trials/figures-lease"
DONE = "trials/figures-done"  # the last day whose pass finished
CHUNK = 1000  # patients between two renewals of the lease, their AuditEvents recorded together
WRITES = 200  # snapshots stored by one unit of work
# Records that the records of these patients were read for the day's figures (one AuditEvent
# each: cli.py `figures_audit`, audit/events.py `figures_events`).
Record = Callable[[str, Sequence[str]], Awaitable[object]]


@dataclass(slots=True)
class Report:
    """What a pass did."""

    day: str
    done_before: bool = False  # the day's pass had run: nothing done
    studies: int = 0
    patients: int = 0
    pruned: int = 0  # (patient, study) pairs the index ruled out
    evaluated: int = 0
    events: int = 0  # AuditEvents recorded
    stored: int = 0  # snapshots stored (the others a call stored first)
    cpu: float = 0.0  # this process's CPU seconds
    wall: float = 0.0

    def summary(self) -> str:
        if self.done_before:
            return f"the trial figures of {self.day} were computed already"
        pairs = self.pruned + self.evaluated
        share = f" ({100 * self.pruned / pairs:.1f}%)" if pairs else ""
        return (f"trial figures of {self.day}: {self.studies} studies x {self.patients} patients, "
                f"{self.pruned} pairs pruned{share}, {self.evaluated} evaluated; {self.stored} "
                f"snapshots stored; {self.events} AuditEvents; {self.wall:.1f} s "
                f"({self.cpu:.1f} s CPU)")


async def done(store: Store) -> str | None:
    """The last day whose pass finished."""
    found = await subscriptions.one(store, DONE)
    return None if found is None else str(orjson.loads(found)["day"])


async def run(ctx: Context, record: Record) -> Report:
    """Today's pass, unless done already; Busy if another process runs it."""
    started, wall = time.process_time(), time.perf_counter()
    server = as_server(ctx, "figures")
    today = clock.now().date()
    report = Report(today.isoformat())
    lease = rematch.Lease(server.store, LEASE)
    await lease.take()
    try:
        if await done(server.store) == report.day:
            report.done_before = True
            return report
        key = pseudonym_key(ctx)
        erased = await subscriptions.one(server.store, study_access.FIGURES_ERASED)
        catalogue = await match_catalogue.load(server)
        tallies, population = await _counted(server, catalogue, today, key, lease, record, report)
        await _store(server.store, catalogue, today, key, tallies, population, report, erased)
        await lease.commit([(DONE, orjson.dumps({"day": report.day}))])
    finally:
        await lease.release()
    report.cpu, report.wall = time.process_time() - started, time.perf_counter() - wall
    return report


async def _counted(ctx: Context, catalogue: match_catalogue.Catalogue, today: date, key: bytes,
                   lease: rematch.Lease, record: Record, report: Report
                   ) -> tuple[dict[str, inverse_counts.Tally], tuple[int, int]]:
    """Every study's cells, and the population's size and digest: each counted patient read
    once, judged against the trials the index leaves them, noted on their audit trail."""
    counted = sorted((await consents_kept.agreements(ctx)).counted(report.day))
    index = TrialIndex(catalogue.trials.values())
    tallies = {study: inverse_counts.Tally() for study in catalogue.trials}
    cells = inverse_counts.Cells(catalogue, today)
    size = digest = 0
    read: list[str] = []
    for start in range(0, len(counted), rematch.BATCH):
        batch = counted[start:start + rematch.BATCH]
        records = await _records(ctx, batch)
        for patient in batch:
            if not any(r["resourceType"] == "Patient" for r in records.get(patient, ())):
                continue  # deleted since the Consents were read
            found = read_record([(pinned(r), r) for r in records[patient]], today)
            share = inverse_counts.member_digest(key, patient)
            size, digest = size + 1, digest + share
            kept = index.kept(found)
            for trial, cell in zip(kept, cells.each(kept, found, home(found)), strict=True):
                tallies[trial.study].add(cell, share)
            report.evaluated += len(kept)
            read.append(patient)
        if len(read) >= CHUNK or start + rematch.BATCH >= len(counted):
            await record(report.day, read)
            report.events += len(read)
            read = []
            await lease.commit([])  # renewed: the pass goes on
    report.studies, report.patients = len(tallies), size
    report.pruned = size * len(tallies) - report.evaluated
    return tallies, (size, digest % inverse_counts.MODULUS)


async def _records(ctx: Context, patients: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """The records of `patients` (at most rematch.BATCH), with the Medications they name, as
    the computing call reads them (inverse_population.population)."""
    found = await rematch.about(ctx, rematch.RECORD, patients)
    await rematch.named_medications(ctx, found, patients)
    return found


async def _store(store: Store, catalogue: match_catalogue.Catalogue, today: date, key: bytes,
                 tallies: dict[str, inverse_counts.Tally], population: tuple[int, int], report: Report,
                 erased: bytes | None) -> None:
    """Each study's snapshot, by compare-and-set against what the store held (WRITES a unit;
    a unit one of whose records a call stored meanwhile is stored again record by record),
    each unit on condition that no erasure came since the pass began (`erased`, the mark
    it read then): one that did may have erased a patient counted here, and the pass fails
    (CONFLICT), to be run again (privacy/retention_schedule.py `every_day`)."""
    held = dict(await store.outbox(study_access.FIGURES_PREFIX))
    writes: list[tuple[str, bytes | None, bytes]] = []
    for study, tally in sorted(tallies.items()):
        name = f"{study_access.FIGURES_PREFIX}{study}"
        before = held.get(name)
        if before is not None and inverse_counts.loaded(before).day == report.day:
            continue  # a call stored the day's first: it stays
        cells = tally.rounded(key, population, catalogue.trials[study])
        figures = inverse_counts.snapshot(catalogue.trials[study], catalogue, today, cells)
        writes.append((name, before, inverse_counts.dumped(figures)))
    for start in range(0, len(writes), WRITES):
        unit = writes[start:start + WRITES]
        if await _put(store, unit, erased):
            report.stored += len(unit)
            continue
        if await subscriptions.one(store, study_access.FIGURES_ERASED) != erased:
            raise fail(Kind.CONFLICT, "conflict", "A patient was erased during the figures pass: "
                       "its figures were not stored; it runs again.")
        for one in unit:
            report.stored += await _put(store, [one], erased)


async def _put(store: Store, writes: Sequence[tuple[str, bytes | None, bytes]], erased: bytes | None) -> bool:
    """Store `writes` (name, expected, body) in one unit, unless an erasure came since the
    mark `erased`; False if one of them was changed meanwhile."""
    try:
        await store.commit([Outbox(put=tuple((n, b) for n, _, b in writes),
                                   expect=((study_access.FIGURES_ERASED, erased),
                                           *((n, e) for n, e, _ in writes)))])
    except FhirError as error:
        if error.kind is not Kind.PRECONDITION_FAILED:
            raise
        return False
    return True
