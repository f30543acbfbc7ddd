"""Trial sites for `$match`: each `ResearchStudy.site` Location with its recruiting status, the
date that status was last confirmed (both as the catalogue records them, read by
catalogue_sites.recorded: a site's own status, else the trial's ECLAIRE one), and where it
lies; the nearest recruiting one.

A status confirmed more than the staleness limit ago (FHIR_SERVER_SITE_STATUS_MAX_AGE_DAYS, 90
days by default) counts as unknown, judged on the day of the match (catalogue_sites.Recorded).
A Location lies at its `position`, else at its French postal code's place in the offline
gazetteer (gazetteer.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from ..search import distance_km
from .catalogue_sites import Recorded, recorded
from .gazetteer import Point, place

RECRUITING = "recruiting"


@dataclass(frozen=True, slots=True)
class Site:
    location: str  # `Location/<id>`
    status: Recorded  # as recorded
    point: Point | None
    geocoded: bool = False  # placed by the gazetteer (postal code), not by its position

    @property
    def confirmed(self) -> str | None:
        """When the status was last confirmed (a FHIR date), None if never."""
        return self.status.confirmed.isoformat() if self.status.confirmed else None

    @property
    def has_status(self) -> bool:
        """Whether any status is recorded for the site (its own, or the trial's)."""
        return self.status.status != "unknown" or self.status.confirmed is not None

    def recruiting(self, today: date, max_age_days: int = 90) -> bool:
        """Recruiting, as confirmed within `max_age_days` of `today`."""
        return self.status.as_of(today, max_age_days).status == RECRUITING


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
    for status in recorded(study):
        target = status.site.split("/_history/")[0]
        if not target.startswith("Location/"):
            continue
        point, geocoded = position(locations.get(target, {}))
        found.append(Site(target, status, point, geocoded))
    return tuple(found)


def nearest(candidates: tuple[Site, ...], origin: Point | None, today: date,
            max_age_days: int = 90) -> tuple[Site | None, float | None]:
    """The nearest recruiting site to `origin` and its distance in km (the first recruiting
    site by reference without an origin; (None, None) when no site is recruiting); a
    catalogue's studies: `Catalogue.nearest`, which keeps their recruiting sites a day."""
    return nearest_open(recruiting(candidates, today, max_age_days), origin)


def recruiting(candidates: tuple[Site, ...], today: date, max_age_days: int = 90) -> tuple[Site, ...]:
    """The sites recruiting on `today`, by reference."""
    return tuple(sorted((s for s in candidates if s.recruiting(today, max_age_days)), key=lambda s: s.location))


def nearest_open(open_sites: tuple[Site, ...], origin: Point | None) -> tuple[Site | None, float | None]:
    """The site of `open_sites` (recruiting ones, in `recruiting`'s order) nearest `origin`
    and its distance in km (the first by reference without an origin; (None, None) when
    there is none)."""
    if not open_sites:
        return None, None
    if origin is None:
        return open_sites[0], None
    placed = [(distance_km(*origin, *s.point), s.location, s) for s in open_sites if s.point is not None]
    if not placed:
        return open_sites[0], None
    distance, _, site = min(placed)
    return site, round(distance, 1)
