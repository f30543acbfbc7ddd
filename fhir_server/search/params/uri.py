"""URI parameters (FHIR R4 search.html#uri).

Values compare exactly (case-sensitive, no normalisation). `:below` matches stored URIs that
start with the search value (`url:below=http://acme.org/fhir/` finds
`http://acme.org/fhir/ValueSet/123`); `:above` matches stored URIs the search value starts with.
Both are plain string prefixes.
"""

from __future__ import annotations

from typing import Any

from ..ast import UriPredicate
from ..entries import UriEntry


def index_uri(param: str, value: Any, out: list[Any]) -> None:
    """uri, url, canonical, oid, uuid: the value as written."""
    if value.__class__ is str and value:
        out.append(UriEntry(param, value))


INDEXERS = {t: index_uri for t in ("uri", "url", "canonical", "oid", "uuid")}


def parse_uri(param: str, modifier: str | None, text: str) -> UriPredicate:
    if not text:
        raise ValueError("empty uri")
    if modifier == "above":
        return UriPredicate(param, text, "above")
    if modifier == "below":
        return UriPredicate(param, text, "below")
    return UriPredicate(param, text, "eq")


def match_uri(p: UriPredicate, e: UriEntry) -> bool:
    if p.mode == "below":
        return e.value.startswith(p.value)
    if p.mode == "above":
        return p.value.startswith(e.value)
    return e.value == p.value
