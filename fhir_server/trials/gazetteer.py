"""An offline gazetteer of French postal codes: a postal code is placed at the seat of its
department (gazetteer-departments.json: coordinates written from public facts, rounded to
0.01°), which is within about 60 km of any address of that department. Good enough to rank
trial sites by distance; not a street geocoder."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

Point = tuple[float, float]  # (latitude, longitude), WGS84 degrees

_TABLE = Path(__file__).with_name("gazetteer-departments.json")


@cache
def _departments() -> dict[str, Point]:
    table = json.loads(_TABLE.read_text(encoding="utf-8"))["departments"]
    return {code: (row["latitude"], row["longitude"]) for code, row in table.items()}


def department(postal_code: str) -> str | None:
    """The department of a French postal code (5 digits): `33000` -> `33`, `97400` -> `974`,
    Corsica `20000`-`20199` -> `2A`, `20200`-`20699` -> `2B`; None for any other text."""
    if not re.fullmatch(r"\d{5}", postal_code):
        return None
    if postal_code.startswith("97"):
        return postal_code[:3]
    if postal_code.startswith("20"):
        return "2A" if int(postal_code) < 20200 else "2B"
    return postal_code[:2]


def place(postal_code: str) -> Point | None:
    """Where a French postal code lies (its department's seat); None when unknown."""
    found = department(postal_code.strip())
    return _departments().get(found) if found else None


def parse_location(text: str) -> Point:
    """A `location` parameter: a French postal code or `latitude,longitude` (decimal
    degrees). ValueError saying why otherwise."""
    text = text.strip()
    coordinates = re.fullmatch(r"(-?\d{1,2}(?:\.\d+)?)\s*,\s*(-?\d{1,3}(?:\.\d+)?)", text)
    if coordinates:
        latitude, longitude = float(coordinates.group(1)), float(coordinates.group(2))
        if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
            raise ValueError("latitude is within [-90, 90] and longitude within [-180, 180]")
        return latitude, longitude
    found = place(text)
    if found is None:
        raise ValueError("a French postal code (5 digits) the gazetteer knows, or 'latitude,longitude'")
    return found
