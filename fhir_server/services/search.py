"""Search at type, system and compartment level (FHIR R4 search.html, http.html#search).

Parameters the server does not understand are not applied: they are reported in an
OperationOutcome entry (`search.mode = outcome`), or refused with 400 under
`Prefer: handling=strict`. The self link lists the parameters actually applied.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlencode

import orjson

from ..access.policy import Decision, compartment_clause
from ..model import jsonbody
from ..model.bundle import bundle
from ..model.errors import FhirError, Kind, fail
from ..model.ids import new_id
from ..model.outcome import operation_outcome
from ..model.summary import select_elements, summarize
from ..search import Clause, Query, format_query, parse_query
from ..store.base import Version
from .context import Context
from .crud import check_id, check_type
from .guard import check_links, decision, note, visible
from .token_systems import value_set_systems

CURSOR = "_cursor"
# Searches that give their total unless `_total` says otherwise: the ECLAIRE IG's consumers
# read `Bundle.total` from every trial search (its flux 1 and 2; docs/catalogue.md).
COUNTED_BY_DEFAULT = frozenset({"ResearchStudy"})


def _compartment_clause(ctx: Context, resource_type: str, patient_id: str) -> Clause:
    """Membership of `resource_type` in Patient/`patient_id`'s compartment (compartmentdefinition-patient)."""
    clause = compartment_clause(ctx.registry, resource_type, patient_id)
    if clause is None:
        raise fail(
            Kind.INVALID,
            "not-supported",
            f"{resource_type} is not in the Patient compartment.",
            details_code="MSG_PARAM_INVALID",
        )
    return clause


def _reachable(ctx: Context, versions: Sequence[Version]) -> list[Version]:
    """The `_include`/`_revinclude` results the caller may see: each passes the same check a
    search of its own type would (scopes, the patient's compartment)."""
    decisions: dict[str, Decision | None] = {}
    kept = []
    for version in versions:
        rtype = version.resource_type
        if rtype not in decisions:
            try:
                decisions[rtype] = decision(ctx, "search", rtype, included=True)
            except FhirError:
                decisions[rtype] = None
        found = decisions[rtype]
        if found is not None and visible(found, version):
            kept.append(version)
    return kept


def _page_size(ctx: Context, query: Query) -> Query:
    if query.total is None and query.resource_type in COUNTED_BY_DEFAULT:
        query = dataclasses.replace(query, total="accurate")
    count = ctx.default_page_size if query.count is None else min(query.count, ctx.max_page_size)
    if count == 0:
        # search.html#count: _count=0 asks for the count only, as _summary=count does.
        return dataclasses.replace(query, count=count, summary="count")
    return dataclasses.replace(query, count=count)


def _render(version: Version, query: Query) -> Any:
    """The stored resource, subsetted as `_summary` / `_elements` ask (else its bytes as stored)."""
    assert version.body is not None
    if query.summary in ("true", "text", "data"):
        return summarize(jsonbody.load_exact(version.body), query.summary)
    if query.elements:
        return select_elements(jsonbody.load_exact(version.body), query.elements)
    return orjson.Fragment(version.body)


def _link(url: str, params: list[tuple[str, str]]) -> str:
    return f"{url}?{urlencode(params)}" if params else url


async def search(
    ctx: Context,
    resource_type: str | None,
    params: list[tuple[str, str]],
    *,
    strict: bool,
    compartment: str | None = None,
    posted: bool = False,
) -> dict[str, Any]:
    """A searchset Bundle for `params` on `resource_type` (None: all types).

    `compartment` is a Patient id: the search is then confined to that patient's compartment.
    `posted`: the parameters came in a form body (POST `_search`), so the audit record, which
    sees only the URL, is told them as a GET's query string would be.
    """
    if posted and ctx.trail is not None:
        ctx.trail.query = urlencode(params, safe=",:|/$", quote_via=quote)
    if resource_type is not None:
        check_type(resource_type)
    cursor = next((v for k, v in params if k == CURSOR), None)
    params = [(k, v) for k, v in params if k != CURSOR]
    query, issues = parse_query(resource_type, params, ctx.registry, base=ctx.base_url)
    if strict and issues:
        raise FhirError(Kind.INVALID, tuple(dataclasses.replace(i, severity="error") for i in issues))
    issues = [*issues, *value_set_systems(ctx, resource_type, params)]
    query = _page_size(ctx, query)
    allowed = decision(ctx, "search", resource_type)
    check_links(ctx, query)
    if resource_type is None and allowed.clauses:
        raise fail(Kind.FORBIDDEN, "forbidden", "A search across all types needs a system-level "
                   "scope; search one type at a time.")
    filtered = allowed.confine(query)
    if compartment is not None:
        assert resource_type is not None
        check_id(compartment)
        filtered = filtered.restrict(_compartment_clause(ctx, resource_type, compartment))
    filtered = dataclasses.replace(filtered, admit_included=functools.partial(_reachable, ctx))
    page = await ctx.store.search(filtered, cursor)
    for version in (*page.matches, *page.included):
        note(ctx, version)

    if compartment is not None:
        path = f"{ctx.base_url}/Patient/{compartment}/{resource_type}"
    else:
        path = f"{ctx.base_url}/{resource_type}" if resource_type else ctx.base_url
    applied = format_query(query)
    links = {"self": _link(path, applied + ([(CURSOR, cursor)] if cursor else []))}
    if page.next_cursor:
        links["next"] = _link(path, [*applied, (CURSOR, page.next_cursor)])
    if page.prev_cursor:
        links["previous"] = _link(path, [*applied, (CURSOR, page.prev_cursor)])

    entries: list[dict[str, Any]] = []
    if query.summary != "count":
        for mode, versions in (("match", page.matches), ("include", page.included)):
            entries.extend(
                {
                    "fullUrl": f"{ctx.base_url}/{v.resource_type}/{v.id}",
                    "resource": _render(v, query),
                    "search": {"mode": mode},
                }
                for v in versions
            )
    if issues:
        entries.append({
            "fullUrl": f"urn:uuid:{new_id()}",
            "resource": operation_outcome(issues),
            "search": {"mode": "outcome"},
        })
    return bundle("searchset", entries, links=links, total=page.total)

