"""Per-site recruiting status of a catalogue trial, with the date it was last confirmed
(docs/catalogue.md, "Site status").

Where it lives: an extension on each `ResearchStudy.site` reference (a Location may be a site
of many trials, each recruiting or not there), `SITE_RECRUITMENT`, with two parts: `status`
(valueCode: `recruiting`, `not-yet-recruiting`, `suspended` or `closed`) and `confirmed`
(valueDateTime or valueDate: when someone last confirmed it). A site without it takes the
trial's own ECLAIRE recruitment status (`recruiting`; `completed-recruiting` is `closed`),
confirmed at the trial's eclaire-review-date. A status confirmed longer ago than the staleness limit
(`FHIR_SERVER_SITE_STATUS_MAX_AGE_DAYS`, 90 by default), or never, counts as `unknown`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal, cast

from ..model.platform_codes import SITE_RECRUITMENT
ECLAIRE = "https://interop.esante.gouv.fr/ig/fhir/eclaire"
RECRUITMENT_SYSTEM = f"{ECLAIRE}/CodeSystem/eclaire-status-recruitment-code-system"
RECRUITMENT_STATUS = f"{ECLAIRE}/StructureDefinition/eclaire-recruitment-status"
REVIEW_DATE = f"{ECLAIRE}/StructureDefinition/eclaire-review-date"

Status = Literal["recruiting", "not-yet-recruiting", "suspended", "closed", "unknown"]
SITE_CODES: frozenset[str] = frozenset({"recruiting", "not-yet-recruiting", "suspended", "closed"})
_FROM_ECLAIRE: dict[str, Status] = {"recruiting": "recruiting", "completed-recruiting": "closed"}


@dataclass(frozen=True, slots=True)
class SiteStatus:
    """One site of a trial: its Location reference, its status (`unknown` when absent or
    stale), when it was last confirmed, and whether that is too long ago."""

    site: str
    status: Status
    confirmed: date | None
    stale: bool


@dataclass(frozen=True, slots=True)
class Recorded:
    """One site of a trial as the catalogue records it, before staleness is judged."""

    site: str
    status: Status  # `unknown` when none is recorded (nor the trial's), or not a site code
    confirmed: date | None

    def as_of(self, today: date, max_age_days: int = 90) -> SiteStatus:
        """The status on `today`: `unknown` if confirmed more than `max_age_days` before, or never."""
        stale = self.confirmed is None or today - self.confirmed > timedelta(days=max_age_days)
        return SiteStatus(self.site, "unknown" if stale else self.status, self.confirmed, stale)


def recorded(study: dict[str, Any]) -> list[Recorded]:
    """Each site of `study` with its own status, else the trial's ECLAIRE one, and when it
    was confirmed."""
    default = _eclaire_status(_extensions(study, RECRUITMENT_STATUS))
    reviewed = _day(next((e.get("valueInstant") or e.get("valueDateTime")
                          for e in _extensions(study, REVIEW_DATE)), None))
    out = []
    for site in study.get("site") or ():
        reference = site.get("reference") if isinstance(site, dict) else None
        if not isinstance(reference, str):
            continue
        own = _extensions(site, SITE_RECRUITMENT)
        if own:
            parts = own[0].get("extension") or []
            code = next((p.get("valueCode") for p in parts if p.get("url") == "status"), None)
            status = cast(Status, code) if code in SITE_CODES else "unknown"
            confirmed = _day(next((p.get("valueDateTime") or p.get("valueDate")
                                   for p in parts if p.get("url") == "confirmed"), None))
        else:
            status, confirmed = default, reviewed
        out.append(Recorded(reference, status, confirmed))
    return out


def site_statuses(study: dict[str, Any], *, today: date, max_age_days: int = 90) -> list[SiteStatus]:
    """The status of each site of `study` as of `today`; a status confirmed more than
    `max_age_days` before, or never, is `unknown` (`stale` says which)."""
    return [r.as_of(today, max_age_days) for r in recorded(study)]


def with_site_status(study: dict[str, Any], site: str, status: Status, confirmed: date) -> dict[str, Any]:
    """A copy of `study` whose site `site` (a Location reference) has `status`, confirmed on
    `confirmed` (any earlier per-site status of that site replaced)."""
    mark = {"url": SITE_RECRUITMENT, "extension": [
        {"url": "status", "valueCode": status},
        {"url": "confirmed", "valueDateTime": confirmed.isoformat()}]}
    sites = []
    for entry in study.get("site") or ():
        if isinstance(entry, dict) and entry.get("reference") == site:
            others = [e for e in entry.get("extension") or () if e.get("url") != SITE_RECRUITMENT]
            entry = {**entry, "extension": [*others, mark]}
        sites.append(entry)
    return {**study, "site": sites}


def _extensions(element: dict[str, Any], url: str) -> list[dict[str, Any]]:
    return [e for e in element.get("extension") or () if isinstance(e, dict) and e.get("url") == url]


def _eclaire_status(holders: list[dict[str, Any]]) -> Status:
    for holder in holders:
        for coding in (holder.get("valueCodeableConcept") or {}).get("coding") or ():
            if coding.get("system") == RECRUITMENT_SYSTEM and coding.get("code") in _FROM_ECLAIRE:
                return _FROM_ECLAIRE[coding["code"]]
    return "unknown"


def _day(value: Any) -> date | None:
    """The calendar day of a FHIR date, dateTime or instant (its own offset), else None."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        if len(value) == 10:
            return date.fromisoformat(value)
        return datetime.fromisoformat(value.replace("Z", "+00:00")).date()
    except ValueError:
        return None
