"""Trial sites for `$match`: each `ResearchStudy.site` Location with its recruiting status, the
date that status was last confirmed, and where it lies; the nearest recruiting one.

The catalogue records a site's status on the site reference (/work/wt/MATCH-API.md §1):
extension `site-recruitment-status` with `status` (valueCode; only `recruiting` is open) and
`confirmed` (valueDateTime or valueDate). A status confirmed more than STALE_AFTER ago counts as
unknown. A Location lies at its `position`, else at its French postal code's place in the
offline gazetteer (gazetteer.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from ..search import distance_km
from .eligibility_codes import OURS
from .gazetteer import Point, place

SITE_STATUS_URL = f"{OURS}/StructureDefinition/site-recruitment-status"
STALE_AFTER = timedelta(days=90)
RECRUITING = "recruiting"


@dataclass(frozen=True, slots=True)
class Site:
    location: str  # `Location/<id>`
    status: str | None  # as recorded, None when none is
    confirmed: str | None  # when the status was last confirmed
    point: Point | None
    geocoded: bool = False  # placed by the gazetteer (postal code), not by its position

    def recruiting(self, today: date) -> bool:
        """Recruiting, as confirmed within STALE_AFTER."""
        if self.status != RECRUITING or not self.confirmed:
            return False
        try:
            confirmed = date.fromisoformat(self.confirmed[:10])
        except ValueError:
            return False
        return today - confirmed <= STALE_AFTER


def _status(reference: dict[str, Any]) -> tuple[str | None, str | None]:
    for extension in reference.get("extension", []):
        if extension.get("url") != SITE_STATUS_URL:
            continue
        parts = {e.get("url"): e for e in extension.get("extension", [])}
        status = (parts.get("status") or {}).get("valueCode")
        confirmed = parts.get("confirmed") or {}
        return status, confirmed.get("valueDateTime") or confirmed.get("valueDate")
    return None, None


def position(location: dict[str, Any]) -> tuple[Point | None, bool]:
    """Where a Location lies, and whether the gazetteer placed it."""
    found = location.get("position") or {}
    if isinstance(found.get("latitude"), (int, float)) and isinstance(found.get("longitude"), (int, float)):
        return (float(found["latitude"]), float(found["longitude"])), False
    postal = (location.get("address") or {}).get("postalCode")
    point = place(postal) if isinstance(postal, str) else None
    return point, point is not None


def sites(study: dict[str, Any], locations: dict[str, dict[str, Any]]) -> tuple[Site, ...]:
    """The sites of a ResearchStudy, with their status and place (`locations`: the
    Locations of the catalogue by `Location/<id>`)."""
    found = []
    for reference in study.get("site", []):
        target = (reference.get("reference") or "").split("/_history/")[0]
        if not target.startswith("Location/"):
            continue
        status, confirmed = _status(reference)
        point, geocoded = position(locations.get(target, {}))
        found.append(Site(target, status, confirmed, point, geocoded))
    return tuple(found)


def nearest(candidates: tuple[Site, ...], origin: Point | None, today: date) -> tuple[Site | None, float | None]:
    """The nearest recruiting site to `origin` and its distance in km (the first recruiting
    site by reference without an origin; (None, None) when no site is recruiting)."""
    open_sites = sorted((s for s in candidates if s.recruiting(today)), key=lambda s: s.location)
    if not open_sites:
        return None, None
    if origin is None:
        return open_sites[0], None
    placed = [(distance_km(*origin, *s.point), s.location, s) for s in open_sites if s.point is not None]
    if not placed:
        return open_sites[0], None
    distance, _, site = min(placed)
    return site, round(distance, 1)
