"""Every active Consent by patient, kept per process and brought up to date from the store's
history of Consent (catalogue_history.py), as match_catalogue.py keeps the trial catalogue:
who an investigator's figures are drawn from (inverse_population.py) and who allows
pre-screening (inverse.py) are decided by them.

- Read whole (200,000 Consents at 100,000 patients: seconds of CPU) once per process: at
  start, in the background (`warm`), or by the first call that needs them. A call arriving
  meanwhile waits for that read: one read at a time per store.
- After a Consent write (create, update, deletion; from any worker), only the Consents
  written since are read again (`_id` searches with the full read's own parameters), and only
  their patients' entries (the patients they name now and named before) are worked out again:
  a withdrawal takes effect at the next call.
- An erasure removes a patient's Consents and their history without an entry of its own; it
  rewrites the mark `study_access.FIGURES_ERASED` (services/erase.py `forget_figures`), read
  before the history: when the mark differs from the one kept, the Consents are read afresh.

Kept Agreements equal those read afresh: tests/trials/test_consents_kept.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import weakref
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

import orjson

from ..heap import uncollected
from ..model.errors import FhirError
from ..search import parse_query
from ..services import reach, study_access, subscriptions
from ..services.context import Context
from ..services.server_writes import as_server
from ..store.base import Store
from .catalogue_history import Locks, Position, position, reading_lock, searches, stamp
from .match_catalogue import shared

log = logging.getLogger(__name__)

TYPES = ("Consent",)
PAGE = 1000
TURN = 100  # Consents parsed and judged between two turns given to the event loop (~3 ms)
PRESCREENING = b'"trial-pre-screening"'  # the purpose code (access/consent.py PRESCREENING)


@dataclass(slots=True)
class Agreements:
    """Every active Consent by patient, as of `at`, and what was judged of them. A write
    makes a new one: a call may still be using the old."""

    at: Position  # where the Consents' history stood when they were read
    erased: bytes | None  # the erasure mark then
    by_patient: study_access.Agreements  # each patient's Consents in id order
    owners: dict[str, str]  # Consent id -> its patient's
    # Patients one of whose Consents holds the pre-screening purpose code: a superset of
    # those the rule allows for some study (the rule itself is applied to these alone).
    asking: frozenset[str]
    counted_on: dict[str, frozenset[str]] = field(default_factory=dict)  # by day
    # (study, day) -> its pre-screened patients: judged once per set of Consents and day
    prescreened_for: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def counted(self, day: str) -> frozenset[str]:
        """The patients who may be counted on `day` (study_access.counted)."""
        if day not in self.counted_on:
            self.counted_on.clear()  # one day kept
            self.counted_on[day] = frozenset(p for p in self.by_patient
                                             if study_access.counted(self.by_patient, p, day))
        return self.counted_on[day]

    def prescreened(self, study: str, day: str) -> list[str]:
        """The counted patients whose Consent allows pre-screening for `study`
        (`ResearchStudy/<id>`), in id order. Only they are judged: a call served from the
        day's figures (trials/figures_pass.py) needs no one else's. Judged once per study and
        day (10,000 patients asking: 0.3 s of CPU, the event loop held)."""
        found = self.prescreened_for.get((study, day))
        if found is None:
            if any(kept_day != day for _, kept_day in self.prescreened_for):
                self.prescreened_for.clear()  # one day kept
            found = self.prescreened_for[(study, day)] = [
                p for p in sorted(self.asking) if study_access.counted(self.by_patient, p, day)
                and study_access.prescreened(self.by_patient, p, study, day)]
        return list(found)


# Per store (the app's: `shared`), with the lock one read at a time is taken under.
_KEPT: weakref.WeakKeyDictionary[Store, Agreements] = weakref.WeakKeyDictionary()
_LOCKS: Locks = weakref.WeakKeyDictionary()


async def agreements(ctx: Context) -> Agreements:
    """The active Consents as stored now: those kept while the history shows no write since,
    else those kept brought up to date, or read afresh (the first time, or after an erasure)."""
    store = shared(ctx)
    async with reading_lock(_LOCKS, store):
        kept = _KEPT.get(store)
        erased = await subscriptions.one(store, study_access.FIGURES_ERASED)  # before the history
        if kept is not None and kept.erased != erased:
            kept = None
        if kept is not None and kept.at.current(await stamp(ctx, TYPES)):
            return kept
        at, changes = await position(ctx, TYPES, kept.at if kept is not None else None)
        if kept is None or changes is None:
            kept = await _read(ctx, at, erased)
        else:
            kept = await _update(ctx, kept, changes[0], at)
        _KEPT[store] = kept
        return kept


async def warm(ctx: Context) -> None:
    """Read the Consents ahead of the first call (the server's start): a call arriving
    meanwhile waits for this read. A store away or unsafe is left to that call."""
    try:
        read = await agreements(ctx)
    except FhirError:
        log.warning("the Consents could not be read ahead at start")
        return
    log.info("the Consents were read ahead", extra={"patients": len(read.by_patient)})


async def _read(ctx: Context, at: Position, erased: bytes | None) -> Agreements:
    """Every active Consent read afresh (the history stood at `at` before the read), kept out
    of the cyclic garbage collector's walks: millions of containers, never cyclic garbage.
    Collected as they grew, they cost a dozen full collections, the last ones a second of
    CPU each with the event loop held (half the read's CPU, default thresholds), and every
    later full collection would walk them again."""
    with uncollected():
        kept = await _parsed(ctx, at, erased)
    # Collected first: what other requests left as cyclic garbage meanwhile would be frozen
    # for good (one full collection a read afresh: at start and after an erasure).
    gc.collect()
    gc.freeze()  # they are still freed by reference counting once replaced
    return kept


async def _parsed(ctx: Context, at: Position, erased: bytes | None) -> Agreements:
    by_patient: study_access.Agreements = defaultdict(list)
    owners: dict[str, str] = {}
    asking: set[str] = set()
    async for consent in _active(ctx, None):  # each judged as read: no long stretch at the end
        patient = study_access.owner(consent)
        if patient is not None:
            by_patient[patient].append(consent)
            owners[consent["id"]] = patient
            if _asks([consent]):
                asking.add(patient)
    for n, consents in enumerate(by_patient.values(), 1):
        consents.sort(key=_id)
        if n % TURN == 0:
            await asyncio.sleep(0)
    return Agreements(at, erased, dict(by_patient), owners, frozenset(asking))


async def _update(ctx: Context, kept: Agreements, written: set[str], at: Position) -> Agreements:
    """`kept` with the Consents of `written` (ids) read again, and their patients' entries
    worked out again."""
    if not written:  # MongoDB: nothing written, the history not yet settled
        return dataclasses.replace(kept, at=at)
    owners = dict(kept.owners)
    touched = {owners.pop(id) for id in written if id in owners}  # the patients they named
    now: dict[str, list[dict]] = defaultdict(list)
    async for consent in _active(ctx, sorted(written)):
        patient = study_access.owner(consent)
        if patient is not None:
            owners[consent["id"]] = patient
            now[patient].append(consent)
    touched |= now.keys()
    by_patient = dict(kept.by_patient)
    for patient in touched:
        mine = [c for c in kept.by_patient.get(patient, ()) if c["id"] not in written] + now.get(patient, [])
        if mine:
            by_patient[patient] = sorted(mine, key=_id)
        else:
            by_patient.pop(patient, None)
    asking = (kept.asking - touched) | {p for p in touched if _asks(by_patient.get(p, ()))}
    counted_on = {day: (found - touched) | {p for p in touched if study_access.counted(by_patient, p, day)}
                  for day, found in kept.counted_on.items()}
    return Agreements(at, kept.erased, by_patient, owners, asking, counted_on)


async def _active(ctx: Context, ids: list[str] | None) -> AsyncIterator[dict]:
    """The active Consents (those of `ids` only, if given), page after page, read as the
    server."""
    server = as_server(ctx)
    for search in searches([("status", "active"), ("_count", str(PAGE))], ids):
        query, _ = parse_query("Consent", search, server.registry)
        read = 0
        async for consent in reach.resources(server, query):
            yield consent
            read += 1
            if read % TURN == 0:  # parsing a page whole would hold the loop ~30 ms, a store
                await asyncio.sleep(0)  # answering without waiting (the double) throughout


def _asks(consents: Iterable[dict]) -> bool:
    """Whether one of `consents` holds the pre-screening purpose code anywhere."""
    return any(PRESCREENING in orjson.dumps(c) for c in consents)


def _id(consent: dict) -> str:
    return str(consent["id"])
