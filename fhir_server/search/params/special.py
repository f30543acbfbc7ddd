"""The special `near` parameter of Location (FHIR R4 location.html#positional).

`near=[latitude]|[longitude]|[distance]|[units]`: Locations whose position lies within
`distance` of the point, on a sphere of mean Earth radius (great-circle, haversine). Units are
UCUM `km` (the default when omitted), `m`, `[mi_i]`; a missing distance is refused rather than
guessed.
"""

from __future__ import annotations

import math
from typing import Any

from ...model.errors import Kind, fail
from ..ast import NearPredicate
from ..entries import PositionEntry

EARTH_RADIUS_KM = 6371.0088
_UNITS_KM = {"km": 1.0, "m": 0.001, "[mi_i]": 1.609344, "mi": 1.609344}


def index_position(param: str, value: Any, out: list[Any]) -> None:
    """Location.position; coordinates off the globe are refused here, at write time, rather
    than by a store's geospatial index in the middle of a transaction."""
    if value.__class__ is not dict:
        return
    lat, lon = value.get("latitude"), value.get("longitude")
    if lat.__class__ in (int, float) and lon.__class__ in (int, float):
        for name, number, limit in (("latitude", lat, 90), ("longitude", lon, 180)):
            if not -limit <= number <= limit:
                raise fail(Kind.UNPROCESSABLE, "value",
                           f"Location.position.{name} must lie between -{limit} and {limit} "
                           "(WGS84 degrees).", expression=f"Location.position.{name}")
        out.append(PositionEntry(param, float(lat), float(lon)))


def parse_near(param: str, parts: list[str], text: str) -> NearPredicate:
    if len(parts) < 3 or len(parts) > 4 or not parts[2]:
        raise ValueError("near needs [latitude]|[longitude]|[distance]|[units]")
    unit = parts[3] if len(parts) == 4 and parts[3] else "km"
    if unit not in _UNITS_KM:
        raise ValueError(f"unknown distance unit {unit!r}")
    lat, lon, distance = float(parts[0]), float(parts[1]), float(parts[2])
    if not (-90 <= lat <= 90 and -180 <= lon <= 180 and distance >= 0):
        raise ValueError("near coordinates out of range")
    return NearPredicate(param, lat, lon, distance * _UNITS_KM[unit], text)


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def match_near(p: NearPredicate, e: PositionEntry) -> bool:
    return distance_km(p.latitude, p.longitude, e.latitude, e.longitude) <= p.distance_km
