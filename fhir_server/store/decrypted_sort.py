"""`_sort` on a protected parameter, after decryption (FHIR R4 search.html#sort;
docs/blind-indexes.md). Both stores share it, as they share includes.py.

A blind index holds digests, which have no order. When a `_sort` key is protected, the store
collects every match (refusing, 400, past the configured limit), reads the sort values from the
matches' bodies as the index would hold them in plaintext, and orders them as its own sort
does: per key the lowest value ascending or the highest descending (dates, numbers and
quantities by their low / high ends), resources without a value last either way, then creation
order. Pages are cut by position: a cursor holds an offset, never a value, because a name in a
next link would reach proxies' and browsers' logs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from ..model.errors import FhirError, Kind, fail
from ..search import (
    DateEntry,
    IndexEntry,
    NumberEntry,
    QuantityEntry,
    Query,
    ReferenceEntry,
    Sort,
    StringEntry,
    TokenEntry,
    UriEntry,
    extract,
)
from .base import SearchPage, Version
from .cursors import decode, encode

Opener = Callable[[Version], Version]  # a stored version -> the same with its body readable
DEFAULT_COUNT = 20
_TAG = "sorted-after-decryption"  # tells these cursors from keyset ones


def too_many(query: Query, limit: int) -> FhirError:
    """The 400 of a protected `_sort` over more than `limit` matches."""
    names = ",".join(("-" if s.descending else "") + s.param for s in query.sort)
    return fail(Kind.INVALID, "too-costly",
                f"_sort={names} names a protected parameter, sorted after decryption for at most "
                f"{limit} matches; this search matches more: narrow it, or sort on another "
                "parameter.", expression="_sort")


def _value(entry: IndexEntry, descending: bool) -> Any:
    """The plaintext value the stores' sort reads from one entry (None: none)."""
    match entry:
        case StringEntry() | UriEntry():
            return entry.value
        case TokenEntry():
            return entry.code
        case ReferenceEntry():
            return entry.id
        case DateEntry() | NumberEntry() | QuantityEntry():
            return entry.high if descending else entry.low
    return None


def _key(sort: Sort, version: Version, entries: Sequence[IndexEntry]) -> Any:
    if sort.param == "_id":
        return version.id
    values = [v for e in entries if e.param == sort.param and (v := _value(e, sort.descending)) is not None]
    if not values:
        return None
    return max(values) if sort.descending else min(values)


def order(query: Query, matches: Sequence[Version], opened: Opener | None = None) -> list[Version]:
    """`matches` (in creation order) in `query.sort` order. `opened` gives a match with its
    body readable (a store keeping bodies sealed passes its codec's; default: as stored)."""
    entries = {(v.resource_type, v.id): extract(orjson.loads((opened(v) if opened else v).body or b"{}"))
               for v in matches}
    ordered = list(matches)
    # Stable sorts from the last key to the first: each key orders ties of the ones before it.
    for sort in reversed(query.sort):
        keyed = [(_key(sort, v, entries[(v.resource_type, v.id)]), v) for v in ordered]
        present = sorted((kv for kv in keyed if kv[0] is not None), key=lambda kv: kv[0],
                         reverse=sort.descending)
        ordered = [v for _, v in present] + [v for k, v in keyed if k is None]
    return ordered


def sorted_page(query: Query, found: Sequence[Version], cursor: str | None, limit: int,
                opened: Opener | None = None) -> SearchPage:
    """The page of `query` that `cursor` points to, from every match `found` by the
    `unsorted(query, limit)` search (includes left to the store; a count never comes here:
    `BlindIndex.sorts_protected`)."""
    if len(found) > limit:
        raise too_many(query, limit)
    total = len(found) if query.total in ("accurate", "estimate") else None
    count = DEFAULT_COUNT if query.count is None else query.count
    matches, next_cursor, prev_cursor = page(order(query, found, opened), count, cursor)
    return SearchPage(matches, (), next_cursor, prev_cursor, total)


def page(ordered: Sequence[Version], count: int, cursor: str | None
         ) -> tuple[tuple[Version, ...], str | None, str | None]:
    """(matches, next cursor, previous cursor) of the page `cursor` points to."""
    start = 0
    if cursor is not None:
        _, (offset, tag) = decode(cursor, 2)
        if tag != _TAG or not isinstance(offset, int) or offset < 0:
            raise fail(Kind.INVALID, "value", "Invalid or expired paging cursor.", expression="_cursor")
        start = offset
    end = start + count
    next_cursor = encode(False, [end, _TAG]) if end < len(ordered) else None
    prev_cursor = encode(False, [max(0, start - count), _TAG]) if start > 0 else None
    return tuple(ordered[start:end]), next_cursor, prev_cursor


def unsorted(query: Query, limit: int) -> Query:
    """The search that collects every match (one over the limit shows there are more)."""
    return dataclasses.replace(query, sort=(), count=limit + 1, total=None, include=(),
                               revinclude=(), summary=None)
