"""The access side of the inverse trial match (trials/inverse.py): what the caller sees
(access/study_match.py), and which patients' Consents let them be counted or pre-screened for
a study (access/consent.py), read from the store as the server: they decide, they are not
the caller's request."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ..access import View, inverse_view, linked
from ..access import consent as consents
from .context import Context
from .reach import current, resources
from ..search import parse_query

__all__ = ["FIGURES_ERASED", "FIGURES_PREFIX", "Agreements", "View", "agreements", "counted", "owner", "prescreened", "view", "visible"]

Agreements = dict[str, list[dict[str, Any]]]  # active Consents by patient id
PAGE = 1000
# Outbox records `<FIGURES_PREFIX><study>`: a study's counts of the day, shared by the server's
# processes (trials/inverse_counts.py). They name the patients counted, so an erasure drops
# them all; the next call computes the day's counts anew.
FIGURES_PREFIX = "trials/figures/"
# Rewritten by every erasure as it drops them, so that a daily figures pass that read the
# erased patient before does not store them again (trials/figures_pass.py).
FIGURES_ERASED = "trials/figures-erased"


def view(ctx: Context) -> View | None:
    """What the caller sees of an inverse match; None: answer as for a missing study."""
    return inverse_view(ctx.principal)


async def visible(ctx: Context, study_id: str) -> View | None:
    """What the caller sees of ResearchStudy/`study_id`'s inverse match: `view`, narrowed
    for an investigator to the studies they are linked to (access/study_match.py `linked`),
    read from the store whatever the caller's own access: the links decide, they are not
    the caller's request. None for a study that does not exist, too."""
    seen = view(ctx)
    if seen is not View.COUNTS:
        return seen
    principal = ctx.principal
    assert principal is not None
    study = await current(ctx, f"ResearchStudy/{study_id}")
    if study is None:
        return None
    identities = {r: body for r in principal.recipients or () if (body := await current(ctx, r)) is not None}
    places = [r for s in study.get("site", []) if isinstance(s, dict)
              and isinstance(r := s.get("reference"), str) and r.startswith("Location/")]
    sites = [body for r in places if (body := await current(ctx, r)) is not None]
    return seen if linked(principal, study, identities, sites) else None


async def agreements(ctx: Context) -> Agreements:
    """Every active Consent, by the id of its patient."""
    query, _ = parse_query("Consent", [("status", "active"), ("_count", str(PAGE))], ctx.registry)
    found: Agreements = defaultdict(list)
    async for consent in resources(ctx, query):
        patient = owner(consent)
        if patient is not None:
            found[patient].append(consent)
    return found


def owner(resource: dict[str, Any]) -> str | None:
    """The id of the Patient a resource is about (its `subject` or `patient`), whatever the
    reference's form."""
    for field in ("subject", "patient"):
        reference = consents.local((resource.get(field) or {}).get("reference", ""))
        if reference.startswith("Patient/"):
            return reference.removeprefix("Patient/")
    return None


def counted(found: Agreements, patient: str, day: str) -> bool:
    """Whether the patient may be counted in a study's aggregate figures."""
    return consents.counted(found.get(patient, []), day)


def prescreened(found: Agreements, patient: str, study: str, day: str) -> bool:
    """Whether the patient's Consent allows pre-screening for `study` (`ResearchStudy/<id>`)."""
    return consents.prescreening(found.get(patient, []), study, day) is not None
