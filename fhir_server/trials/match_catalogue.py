"""The trial catalogue `$match` ranks: every current ResearchStudy with its eligibility Groups
(read into a `TrialIndex`) and its sites' Locations.

Reading 10,000 trials and their Groups costs seconds, so the catalogue is kept per store and
brought up to date from the store's history of ResearchStudy, Group and Location (every write,
deletion included, makes an entry there, whichever worker process wrote it):

- While the newest entry of each type is the one it was read at, it is current.
- Otherwise only the resources written since are read again (`_id` searches with the full
  read's own parameters), and only the trials they bear on are worked out again: a study
  written; the studies whose `enrollment` names a Group written; the sites of the studies
  naming a Location written (catalogue_history.py tells what was written).
- A trial whose eligibility Groups are the very versions it was read from keeps its `Trial`.

These are the server's own reads of public catalogue data; what the caller may see of it is
applied per request (match.py). The catalogue as brought up to date equals one read afresh:
tests/trials/test_catalogue_kept.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from ..model.errors import FhirError
from ..services import reach
from ..services.context import Context
from ..services.server_writes import as_server
from ..store.base import Store
from .catalogue_history import TYPES, Locks, Position, position, reading_lock, searches, stamp
from .criteria_review import is_draft
from .eligibility import TrialIndex, Trial, is_eligibility_group, read_trial
from .eligibility_codes import PROFILE
from .gazetteer import Point
from .match_sites import Site, nearest_open, recruiting, sites


Read = tuple[tuple[Any, ...], ...]  # the versions of the Groups a Trial was read from
# What each type is read with (the Groups: those claiming the eligibility profile).
PARAMS: dict[str, list[tuple[str, str]]] = {"ResearchStudy": [], "Group": [("_profile", PROFILE)],
                                             "Location": []}


@dataclass(frozen=True, slots=True)
class Catalogue:
    studies: dict[str, dict[str, Any]]  # by id, as stored
    trials: dict[str, Trial]  # by study id
    index: TrialIndex
    sites: dict[str, tuple[Site, ...]]  # by study id
    max_age_days: int  # a site status confirmed longer ago is unknown
    # Worked out at first use, once per study (and day): a forward $match asks them of every
    # trial of the catalogue, 10,000 of them (its filters, and the sites it counts). Not
    # copied by `dataclasses.replace` (a new `max_age_days` judges the sites anew).
    _accruing: dict[str, bool] = field(default_factory=dict, init=False, repr=False, compare=False)
    _recruiting: dict[date, dict[str, tuple[Site, ...]]] = field(default_factory=dict, init=False,
                                                                  repr=False, compare=False)

    def accruing(self, study: str) -> bool:
        """Whether the study is open for accrual (`open_for_accrual`)."""
        found = self._accruing.get(study)
        if found is None:
            found = self._accruing[study] = open_for_accrual(self.studies[study])
        return found

    def nearest(self, study: str, origin: Point | None, today: date) -> tuple[Site | None, float | None]:
        """The study's recruiting site nearest `origin` on `today`, and its distance in km
        (match_sites.nearest_open)."""
        return nearest_open(self.recruiting(study, today), origin)

    def recruiting(self, study: str, today: date) -> tuple[Site, ...]:
        """The study's sites recruiting on `today` (match_sites.recruiting)."""
        by_study = self._recruiting.get(today)
        if by_study is None:
            self._recruiting.clear()  # one day kept
            by_study = self._recruiting[today] = {}
        found = by_study.get(study)
        if found is None:
            found = by_study[study] = recruiting(self.sites[study], today, self.max_age_days)
        return found


def open_for_accrual(study: dict[str, Any]) -> bool:
    """Open for accrual: ECLAIRE's recruitment status when the study has one, else its R4
    status `active`."""
    for extension in study.get("extension") or ():  # no list made: called for every trial
        if extension.get("url") == ECLAIRE_RECRUITMENT:
            codes = {c.get("code") for c in (extension.get("valueCodeableConcept") or {}).get("coding", [])}
            return "recruiting" in codes
    return study.get("status") == OPEN


@dataclass(frozen=True, slots=True)
class _Kept:
    """A catalogue and what it was worked out from. Never changed once kept: a new one
    replaces it (a request or the re-match job may still be using the old)."""

    catalogue: Catalogue
    at: Position  # where the history stood when it was read
    groups: dict[str, dict[str, Any]]  # the eligibility Groups, by `Group/<id>`
    locations: dict[str, dict[str, Any]]  # by `Location/<id>`
    read_from: dict[str, Read]  # by study id
    enrolling: dict[str, frozenset[str]]  # `Group/<id>` -> the studies whose enrollment names it
    siting: dict[str, frozenset[str]]  # `Location/<id>` -> the studies naming it as a site


_EMPTY = _Kept(Catalogue({}, {}, TrialIndex(()), {}, 0), Position((), (), frozenset(), False),
               {}, {}, {}, {}, {})
log = logging.getLogger(__name__)
OPEN = "active"  # ResearchStudy.status of a study open for accrual (R4)
ECLAIRE_RECRUITMENT = "https://interop.esante.gouv.fr/ig/fhir/eclaire/StructureDefinition/eclaire-recruitment-status"
# Per store (the app's, not a request's: `shared`).
_KEPT: weakref.WeakKeyDictionary[Store, _Kept] = weakref.WeakKeyDictionary()
_LOCKS: Locks = weakref.WeakKeyDictionary()


def shared(ctx: Context) -> Store:
    """The app's store under a request's own (an AuditedStore made per request, which would
    keep nothing from one request to the next): what per-process memory is kept by."""
    return getattr(ctx.store, "inner", ctx.store)


async def load(ctx: Context) -> Catalogue:
    """The catalogue as stored now: the one kept while the history shows no write since,
    else the one kept brought up to date, or read afresh the first time (or when the history
    no longer shows where the kept one stood: an erasure)."""
    store = shared(ctx)
    async with reading_lock(_LOCKS, store):  # one read at a time: 10,000 trials take seconds
        kept = _KEPT.get(store)
        if kept is None or not kept.at.current(await stamp(ctx, TYPES)):
            at, changes = await position(ctx, TYPES, kept.at if kept is not None else None)
            kept = await _read(ctx, at) if kept is None or changes is None else await _update(ctx, kept, changes, at)
            _KEPT[store] = kept
    if kept.catalogue.max_age_days != ctx.site_status_max_age_days:
        kept = _KEPT[store] = dataclasses.replace(kept, catalogue=dataclasses.replace(
            kept.catalogue, max_age_days=ctx.site_status_max_age_days))
    return kept.catalogue


async def warm(ctx: Context) -> None:
    """Read the catalogue ahead of the first `$match` (the server's start), as the server.
    A store away is left to that call."""
    try:
        read = await load(as_server(ctx, "catalogue"))
    except FhirError:
        log.warning("the trial catalogue could not be read ahead at start")
        return
    log.info("the trial catalogue was read ahead", extra={"trials": len(read.trials)})


async def _current(ctx: Context, resource_type: str, ids: Iterable[str] | None) -> dict[str, dict[str, Any]]:
    """The current resources of `resource_type` the catalogue is read from, by `Type/id`:
    every one (`ids` None), or those of `ids` (absent: deleted, or no longer read)."""
    return {f"{resource_type}/{r['id']}": r for search in searches(PARAMS[resource_type], ids)
            async for r in reach.matching(ctx, resource_type, search)}


async def _read(ctx: Context, at: Position) -> _Kept:
    """The catalogue read afresh (the history stood at `at` before the reads)."""
    found = [await _current(ctx, t, None) for t in TYPES]
    studies = {key.removeprefix("ResearchStudy/"): study for key, study in found[0].items()}
    return await asyncio.to_thread(_worked_out, ctx, _EMPTY, at, studies, studies.keys(),
                                   (found[1], found[1].keys()), (found[2], found[2].keys()))


async def _update(ctx: Context, kept: _Kept, changes: tuple[set[str], ...], at: Position) -> _Kept:
    """`kept` with the resources written since read again (`changes`: ids by type)."""
    found = [await _current(ctx, t, ids) for t, ids in zip(TYPES, changes)]
    studies = _replaced(kept.catalogue.studies, changes[0],
                        {key.removeprefix("ResearchStudy/"): s for key, s in found[0].items()})
    groups = {f"Group/{id}" for id in changes[1]}
    locations = {f"Location/{id}" for id in changes[2]}
    return await asyncio.to_thread(_worked_out, ctx, kept, at, studies, changes[0],
                                   (_replaced(kept.groups, groups, found[1]), groups),
                                   (_replaced(kept.locations, locations, found[2]), locations))


def _replaced(before: dict[str, dict[str, Any]], keys: set[str],
              now: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`before` with the entries of `keys` as they are `now` (absent from it: gone)."""
    return {key: value for key, value in before.items() if key not in keys} | now


def _worked_out(ctx: Context, kept: _Kept, at: Position, studies: dict[str, dict[str, Any]],
                written: Iterable[str], groups: tuple[dict[str, dict[str, Any]], Iterable[str]],
                locations: tuple[dict[str, dict[str, Any]], Iterable[str]]) -> _Kept:
    """The catalogue of `studies`, `groups` and `locations` (each with what changed since
    `kept`: study ids, `Group/<id>`, `Location/<id>`), worked out again only where a change
    bears on it. Run in a thread: 10,000 trials take seconds, which would otherwise hold the
    event loop (the interpreter's switch interval lets it serve meanwhile)."""
    written = set(written)
    before = kept.catalogue
    found_sites = {id: s for id, s in before.sites.items() if id not in written}
    found_sites |= {id: sites(studies[id], locations[0]) for id in written if id in studies}
    enrolling = _reindexed(kept.enrolling, written, lambda id: _enrollment(before.studies.get(id, {})),
                           lambda id: _enrollment(studies.get(id, {})))
    siting = _reindexed(kept.siting, written, lambda id: (s.location for s in before.sites.get(id, ())),
                        lambda id: (s.location for s in found_sites.get(id, ())))
    for id in _named(siting, locations[1]) - written:  # the sites of a Location written
        found_sites[id] = sites(studies[id], locations[0])
    criteria = written | _named(enrolling, groups[1])
    trials, read_from = dict(before.trials), dict(kept.read_from)
    for id in criteria:
        trials.pop(id, None)
        read_from.pop(id, None)
        if id in studies:
            trials[id], read_from[id] = _trial(id, studies[id], groups[0], kept)
    index = before.index if not criteria else TrialIndex(trials.values())
    catalogue = Catalogue(studies, trials, index, found_sites, ctx.site_status_max_age_days)
    return _Kept(catalogue, at, groups[0], locations[0], read_from, enrolling, siting)


def _trial(id: str, study: dict[str, Any], groups: dict[str, dict[str, Any]], kept: _Kept) -> tuple[Trial, Read]:
    """The trial of `study`, kept as it was read when its Groups are the same versions."""
    enrolled = _enrolled(study, groups)
    # Version and time: a Group erased and written anew starts again at version 1.
    now_from = tuple((g.get("id"), (g.get("meta") or {}).get("versionId"),
                      (g.get("meta") or {}).get("lastUpdated")) for g in enrolled)
    before = kept.catalogue.trials.get(id)
    if before is not None and kept.read_from.get(id) == now_from:
        return before, now_from
    return read_trial(id, enrolled), now_from


def _enrollment(study: dict[str, Any]) -> list[str]:
    """The `Group/<id>` (or other targets) a study's `enrollment` names, in order."""
    return [(reference.get("reference") or "").split("/_history/")[0] for reference in study.get("enrollment", [])]


def _enrolled(study: dict[str, Any], groups: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The eligibility Groups a study's `enrollment` names, in order (a draft no person
    approved is never read: criteria_review.py)."""
    found = []
    for target in _enrollment(study):
        group = groups.get(target)
        if group is not None and is_eligibility_group(group) and not is_draft(group):
            found.append(group)
    return found


def _reindexed(before: dict[str, frozenset[str]], written: set[str], old: Callable[[str], Iterable[str]],
               new: Callable[[str], Iterable[str]]) -> dict[str, frozenset[str]]:
    """`before` (target -> the studies naming it) with the studies `written` naming `new(id)`
    where they named `old(id)`."""
    touched: dict[str, set[str]] = {}  # each target's studies copied once, however many change
    for id in written:
        for target in old(id):
            touched.setdefault(target, set(before.get(target, ()))).discard(id)
        for target in new(id):
            touched.setdefault(target, set(before.get(target, ()))).add(id)
    after = dict(before)
    for target, ids in touched.items():
        if ids:
            after[target] = frozenset(ids)
        else:
            after.pop(target, None)
    return after


def _named(by_target: dict[str, frozenset[str]], targets: Iterable[str]) -> set[str]:
    """The studies naming one of `targets`."""
    return {id for target in targets for id in by_target.get(target, ())}
