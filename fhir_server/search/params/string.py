"""String parameters (FHIR R4 search.html#string).

"By default, a field matches a string query if the value of the field equals or starts with
the supplied parameter value, after both have been normalized by case and accent."
`:contains` matches anywhere in the (normalized) field, `:exact` the whole field, case and
accents included. Normalization here: Unicode NFKD, combining marks dropped, case-folded,
runs of whitespace collapsed to one space and trimmed.

HumanName and Address index every part separately (search.html#string: "any of the string
fields in the HumanName, including family, given, prefix, suffix and/or text"; for Address
"line, city, district, state, country, postalCode and/or text").

`phonetic` (Patient, Person, Practitioner, RelatedPerson) is indexed and matched like any
string: no phonetic algorithm is applied (not done).
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from typing import Literal, Any

from ..ast import StringPredicate
from ..entries import StringEntry


@lru_cache(maxsize=1 << 16)
def normalize(text: str) -> str:
    """Case- and accent-insensitive form of `text` with whitespace collapsed.

    Cached: codings' displays and names repeat across resources, and this is the hot path.
    """
    if text.isascii():
        return " ".join(text.lower().split())
    # casefold can yield characters that decompose further (so NFKD again), then drop accents.
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    return " ".join("".join(c for c in folded if not unicodedata.combining(c)).split())


def _add(param: str, value: Any, out: list[Any]) -> None:
    if value.__class__ is str and value:
        out.append(StringEntry(param, normalize(value), value))


def index_string(param: str, value: Any, out: list[Any]) -> None:
    """string, markdown."""
    _add(param, value, out)


def _parts(param: str, value: Any, out: list[Any], singles: tuple[str, ...], lists: tuple[str, ...]) -> None:
    if value.__class__ is not dict:
        return
    for key in singles:
        _add(param, value.get(key), out)
    for key in lists:
        items = value.get(key)
        if items.__class__ is list:
            for item in items:
                _add(param, item, out)


def index_human_name(param: str, value: Any, out: list[Any]) -> None:
    _parts(param, value, out, ("family", "text"), ("given", "prefix", "suffix"))


def index_address(param: str, value: Any, out: list[Any]) -> None:
    _parts(param, value, out, ("city", "district", "state", "postalCode", "country", "text"), ("line",))


INDEXERS = {
    "string": index_string,
    "markdown": index_string,
    "HumanName": index_human_name,
    "Address": index_address,
}


def parse_string(param: str, modifier: str | None, text: str) -> StringPredicate:
    mode: Literal["start", "exact", "contains"] = "start"
    if modifier == "exact":
        mode = "exact"
    elif modifier == "contains":
        mode = "contains"
    return StringPredicate(param, normalize(text), text, mode)


def match_string(p: StringPredicate, e: StringEntry) -> bool:
    if p.mode == "exact":
        return e.exact == p.exact
    if p.mode == "contains":
        return p.value in e.value
    return e.value.startswith(p.value)
