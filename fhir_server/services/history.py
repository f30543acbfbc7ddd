"""History at instance, type and system level (FHIR R4 http.html#history).

Newest first, deletions included. Paging uses a keyset cursor over the store's write sequence,
so pages already handed out do not shift when new versions are written.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from ..model.bundle import bundle, history_entry
from ..model.errors import Kind, fail
from ..model.numbers import whole_number
from ..store.base import HistoryQuery
from .context import Context
from .crud import check_id, check_type
from .guard import decision, note, reachable, visible

CURSOR = "_cursor"
_CURSOR_BOUND = 2**256  # MongoDB's cursor packs a time and an ObjectId (store/mongo/store.py)


# R4's instant allows second 60 (a leap second), which Python's datetime does not.
_LEAP_SECOND = re.compile(r"(T\d\d:\d\d):60(?:\.\d+)?(?=Z|[+-])")


def _since(value: str) -> str:
    """A `_since` instant (time zone required) in the stored UTC form. A leap second is read
    as the last microsecond of its minute: the versions stored before it stay excluded."""
    try:
        moment = datetime.fromisoformat(_LEAP_SECOND.sub(r"\1:59.999999", value).replace("Z", "+00:00"))
        # In UTC, an instant near either end of the calendar falls outside it.
        utc = moment.astimezone(UTC) if moment.tzinfo is not None else None
    except (ValueError, OverflowError):
        utc = None
    if utc is None or "T" not in value:
        raise fail(
            Kind.INVALID,
            "value",
            "_since must be an instant with a time zone, e.g. 2024-01-31T10:00:00Z.",
            expression="_since",
        )
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _count(ctx: Context, value: str) -> int:
    count = whole_number(value)
    if count is None:
        raise fail(Kind.INVALID, "value", "_count must be a non-negative integer.", expression="_count")
    return min(count, ctx.max_page_size)


def _cursor(value: str) -> int:
    cursor = whole_number(value, _CURSOR_BOUND)
    if cursor is None:
        raise fail(Kind.INVALID, "value", "Invalid paging cursor.", expression=CURSOR)
    return cursor


async def history(
    ctx: Context,
    resource_type: str | None,
    id: str | None,
    params: list[tuple[str, str]],
    *,
    base_url: str,
    self_url: str,
) -> dict[str, Any]:
    """A history Bundle; NOT_FOUND for the history of an instance that never existed."""
    if resource_type is not None:
        check_type(resource_type)
    allowed = decision(ctx, "history", resource_type, instance=id is not None)
    if id is not None:
        check_id(id)
        assert resource_type is not None
        current = await ctx.store.read(resource_type, id)
        if current is None or not await reachable(ctx, allowed, current):
            raise fail(Kind.NOT_FOUND, "not-found", f"{resource_type}/{id} is not known.",
                       details_code="MSG_NO_EXIST")
    elif allowed.clauses:
        # A patient's compartment, or a granular scope, cannot be applied to the history of a
        # whole type: only to one resource's.
        raise fail(Kind.FORBIDDEN, "forbidden", "The access token reaches part of this type "
                   "only: ask for the history of one resource.")
    query, kept = parameters(ctx, resource_type, id, params)
    before = query.before_seq
    page = await ctx.store.history(query)
    links = {"self": _link(self_url, kept + ([(CURSOR, str(before))] if before else []))}
    if page.next_seq is not None:
        links["next"] = _link(self_url, [*kept, (CURSOR, str(page.next_seq))])
    shown = [v for v in page.versions if visible(allowed, v)]
    for version in shown:
        note(ctx, version)
    entries = (
        history_entry(base_url, v.resource_type, v.id, v.version, v.last_updated, v.method, v.body)
        for v in shown
    )
    return bundle("history", entries, links=links, last_updated=page.as_of)


def parameters(ctx: Context, resource_type: str | None, id: str | None,
               params: list[tuple[str, str]]) -> tuple[HistoryQuery, list[tuple[str, str]]]:
    """The store query of a history request, and the parameters its links repeat;
    INVALID for a malformed `_since`, `_count` or cursor."""
    since, count, before = None, ctx.default_page_size, None
    kept: list[tuple[str, str]] = []
    for name, value in params:
        if name == "_since":
            since = _since(value)
        elif name == "_count":
            count = _count(ctx, value)
        elif name == CURSOR:
            before = _cursor(value)
            continue
        else:
            continue  # unknown history parameters are ignored, as for search
        kept.append((name, value))
    return HistoryQuery(resource_type, id, since=since, count=count, before_seq=before), kept


def _link(url: str, params: list[tuple[str, str]]) -> str:
    return f"{url}?{urlencode(params)}" if params else url


