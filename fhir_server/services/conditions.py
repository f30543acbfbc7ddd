"""Search criteria of conditional interactions (If-None-Exist, PUT/PATCH/DELETE ?criteria).

Unlike a search, a condition never ignores a parameter it does not understand: dropping one
would widen the match and update or delete the wrong resource (http.html#cond-update).
"""

from __future__ import annotations

from dataclasses import replace
from ..model.errors import FhirError, Kind, fail
from ..search import Query, parse_query, query_pairs
from .context import Context
from .guard import check_links


def condition(ctx: Context, resource_type: str, criteria: str) -> Query:
    """Parse `criteria` (a query string) strictly; INVALID if it selects nothing (empty, or
    only result parameters such as `_count` or `_sort`, which would match every resource) or
    is not fully understood."""
    # Clients also send the "Patient?identifier=..." form in If-None-Exist.
    query_string = criteria.split("?", 1)[1] if "?" in criteria else criteria
    params = query_pairs(query_string)
    query, issues = parse_query(resource_type, params, ctx.registry)
    if issues:
        raise FhirError(Kind.INVALID, tuple(replace(i, severity="error") for i in issues))
    if not query.clauses:
        raise fail(
            Kind.INVALID,
            "required",
            "A conditional interaction needs search criteria that select resources "
            "(result parameters such as _count or _sort select none).",
            details_code="MSG_INVALID_CONDITIONAL",
        )
    check_links(ctx, query)
    return query
