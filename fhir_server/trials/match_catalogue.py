"""The trial catalogue `$match` ranks: every current ResearchStudy with its eligibility Groups
(read into a `TrialIndex` once) and its sites' Locations.

Reading 10,000 trials and their Groups costs seconds, so the catalogue is kept per store and
read again only when a ResearchStudy, Group or Location was written since (the newest entry
of each type's history: every write, deletion included, makes one, whichever worker wrote it).
These are the server's own reads of public catalogue data; what the caller may see of it is
applied per request (match.py).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from ..services import reach
from ..services.context import Context
from ..store.base import HistoryQuery, Store
from .eligibility import TrialIndex, Trial, is_eligibility_group, read_trial
from .criteria_review import is_draft
from .eligibility_codes import PROFILE
from .match_sites import Site, sites

TYPES = ("ResearchStudy", "Group", "Location")
Stamp = tuple[tuple[str, int, str] | None, ...]


@dataclass(frozen=True, slots=True)
class Catalogue:
    studies: dict[str, dict[str, Any]]  # by id, as stored
    trials: dict[str, Trial]  # by study id
    index: TrialIndex
    sites: dict[str, tuple[Site, ...]]  # by study id
    max_age_days: int  # a site status confirmed longer ago is unknown


Read = tuple[tuple[Any, ...], ...]  # the versions of the Groups a Trial was read from
# Per store: the stamp the catalogue was read at, the catalogue, and what each trial was read from.
_KEPT: weakref.WeakKeyDictionary[Store, tuple[Stamp, Catalogue, dict[str, Read]]] = weakref.WeakKeyDictionary()


def shared(ctx: Context) -> Store:
    """The app's store under a request's own (an AuditedStore made per request, which would
    keep nothing from one request to the next): what per-process memory is kept by."""
    return getattr(ctx.store, "inner", ctx.store)


async def newest(ctx: Context, resource_type: str) -> tuple[str, int, str] | None:
    """The newest history entry of `resource_type` (id, version, instant): every write of
    that type, deletion included, makes a new one."""
    page = await ctx.store.history(HistoryQuery(resource_type, count=1))
    version = page.versions[0] if page.versions else None
    return (version.id, version.version, version.last_updated) if version else None


async def _stamp(ctx: Context) -> Stamp:
    return tuple([await newest(ctx, resource_type) for resource_type in TYPES])


async def _all(ctx: Context, resource_type: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [resource async for resource in reach.matching(ctx, resource_type, params)]


def _enrolled(study: dict[str, Any], groups: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The eligibility Groups a study's `enrollment` names, in order (a draft no person
    approved is never read: criteria_review.py)."""
    found = []
    for reference in study.get("enrollment", []):
        target = (reference.get("reference") or "").split("/_history/")[0]
        group = groups.get(target)
        if group is not None and is_eligibility_group(group) and not is_draft(group):
            found.append(group)
    return found


async def load(ctx: Context) -> Catalogue:
    """The catalogue as stored now (kept until one of its types is written). A trial whose
    eligibility Groups are the very versions it was read from is not read again."""
    stamp = await _stamp(ctx)
    kept = _KEPT.get(shared(ctx))
    if kept is not None and kept[0] == stamp and kept[1].max_age_days == ctx.site_status_max_age_days:
        return kept[1]
    before, read_from = (kept[1].trials, kept[2]) if kept is not None else ({}, {})
    studies = {s["id"]: s for s in await _all(ctx, "ResearchStudy", [])}
    groups = {f"Group/{g['id']}": g for g in await _all(ctx, "Group", [("_profile", PROFILE)])}
    locations = {f"Location/{loc['id']}": loc for loc in await _all(ctx, "Location", [])}
    trials: dict[str, Trial] = {}
    now_from: dict[str, Read] = {}
    for id, study in studies.items():
        enrolled = _enrolled(study, groups)
        # Version and time: an erased Group written anew starts again at version 1.
        now_from[id] = tuple((g.get("id"), (g.get("meta") or {}).get("versionId"),
                              (g.get("meta") or {}).get("lastUpdated")) for g in enrolled)
        same = id in before and read_from.get(id) == now_from[id]
        trials[id] = before[id] if same else read_trial(id, enrolled)
    catalogue = Catalogue(studies, trials, TrialIndex(trials.values()),
                          {id: sites(study, locations) for id, study in studies.items()},
                          ctx.site_status_max_age_days)
    _KEPT[shared(ctx)] = (stamp, catalogue, now_from)
    return catalogue
