"""The kick-off parameters of Bulk Data `$export` (Bulk Data Access IG 2.0.0, export.html
"Query Parameters"), checked before any job exists: what is wrong is INVALID naming the
parameter, and nothing is stored. Under `Prefer: handling=lenient` what the server does not
support is left out instead and reported in the job's error file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import parse_qsl

from .. import clock
from ..model.errors import FhirError, Issue, Kind, fail
from ..search import Registry, parse_query

# export.html#query-parameters: the full type and its two abbreviations SHALL be accepted.
OUTPUT_FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
NDJSON = "application/fhir+ndjson"
# Search parameters a `_typeFilter` may not hold: they change the result, not the filter.
NOT_FILTERS = frozenset({"_include", "_revinclude", "_sort", "_count", "_summary", "_elements",
                         "_total", "_contained", "_containedType"})
# Any other parameter (includeAssociatedData, ...) is refused, or ignored when lenient.
# A job's passes grow with the filters (each skips what earlier ones wrote): bounded.
MAX_TYPE_FILTERS, MAX_TYPE_FILTER_CHARS = 50, 1000
KNOWN = frozenset({"_outputFormat", "_since", "_type", "_typeFilter", "_elements", "patient"})


@dataclass(frozen=True, slots=True)
class Asked:
    """The parameters of one kick-off, checked: types named (empty: every type the caller
    may export), filters per type, elements, and what a lenient request left out."""

    since: str | None = None
    types: tuple[str, ...] = ()
    filters: dict[str, list[list[tuple[str, str]]]] = field(default_factory=dict)
    elements: tuple[str, ...] = ()
    patients: tuple[str, ...] = ()
    ignored: tuple[Issue, ...] = ()


def invalid(message: str, parameter: str, code: str = "invalid") -> FhirError:
    return fail(Kind.INVALID, code, message, expression=parameter)


def parse(registry: Registry, params: Sequence[tuple[str, str]], *, level: str,
          lenient: bool, base: str) -> Asked:
    """The checked parameters of a kick-off at `level` ("system", "patient", "group")."""
    ignored: list[Issue] = []

    def unsupported(message: str, parameter: str) -> None:
        if not lenient:
            raise invalid(message, parameter, "not-supported")
        ignored.append(Issue("not-supported", f"{message} Ignored (Prefer: handling=lenient).",
                             "warning", (parameter,)))

    for name in dict.fromkeys(k for k, _ in params if k not in KNOWN):
        unsupported(f"$export does not support the parameter {name}.", name)
    values = [(k, v) for k, v in params if k in KNOWN]
    for fmt in (v for k, v in values if k == "_outputFormat"):
        if fmt.replace(" ", "+") not in OUTPUT_FORMATS:
            raise invalid(f"_outputFormat {fmt!r} is not supported: the server writes "
                          f"{NDJSON} (also spelt application/ndjson or ndjson).", "_outputFormat",
                          "not-supported")
    patients = tuple(_patient(v) for k, v in values if k == "patient")
    if patients and level == "system":
        raise invalid("The patient parameter is not applicable to a system-level export: use "
                      "Patient/$export or Group/[id]/$export.", "patient")
    since = _since(next((v for k, v in values if k == "_since"), None))
    types = tuple(dict.fromkeys(t.strip() for k, v in values if k == "_type"
                                for t in v.split(",") if t.strip()))
    unknown = [t for t in types if t not in registry.resource_types]
    if unknown:
        raise invalid(f"_type names unknown resource types: {', '.join(unknown)}.", "_type",
                      "not-supported")
    filters = _filters(registry, [v for k, v in values if k == "_typeFilter"], base, unsupported)
    elements = tuple(e.strip() for k, v in values if k == "_elements" for e in v.split(",") if e.strip())
    for element in elements:
        kind, _, name = element.rpartition(".")
        if (kind and kind not in registry.resource_types) or not name or "." in kind:
            raise invalid(f"_elements entry {element!r} is neither [type].[element] nor "
                          "[element] (root elements only).", "_elements")
    return Asked(since, types, filters, elements, patients, tuple(ignored))


def _patient(value: str) -> str:
    kind, _, id = value.strip().removeprefix("/").partition("/")
    if kind != "Patient" or not id or "/" in id:
        raise invalid(f"patient {value!r} is not a reference Patient/[id].", "patient")
    return id


def _since(value: str | None) -> str | None:
    """`_since` as a FHIR instant (with a time zone), not after now."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None or len(value) < 20:
        raise invalid(f"_since {value!r} is not a FHIR instant (e.g. 2024-01-31T12:00:00Z).",
                      "_since")
    if moment > clock.now():
        raise invalid(f"_since {value!r} is in the future.", "_since")
    return clock.instant(moment.astimezone(clock.now().tzinfo))


def _filters(registry: Registry, values: Sequence[str], base: str,
             unsupported: Callable[[str, str], None]) -> dict[str, list[list[tuple[str, str]]]]:
    """`_typeFilter` values (`[type]?[search]`, comma-separated) by type, each a list of
    search parameters checked by the search parser."""
    filters: dict[str, list[list[tuple[str, str]]]] = {}
    split = [v for text in values for v in _split(text)]
    if len(split) > MAX_TYPE_FILTERS:
        raise invalid(f"_typeFilter holds {len(split)} filters; at most {MAX_TYPE_FILTERS} are "
                      "accepted.", "_typeFilter", "too-costly")
    for value in split:
        if len(value) > MAX_TYPE_FILTER_CHARS:
            raise invalid(f"A _typeFilter value is {len(value)} characters long; at most "
                          f"{MAX_TYPE_FILTER_CHARS} are accepted.", "_typeFilter", "too-costly")
        kind, mark, query = value.partition("?")
        if not mark or kind not in registry.resource_types or not query:
            raise invalid(f"_typeFilter {value!r} is not [type]?[search parameters].", "_typeFilter")
        pairs = parse_qsl(query, keep_blank_values=True)
        modifiers = sorted({k for k, _ in pairs if k in NOT_FILTERS})
        if modifiers:
            raise invalid(f"_typeFilter {value!r} holds {', '.join(modifiers)}, which change the "
                          "result rather than filter it.", "_typeFilter")
        _, issues = parse_query(kind, pairs, registry, base=base)
        for issue in issues:
            unsupported(f"_typeFilter {value!r}: {issue.diagnostics}", "_typeFilter")
        left_out = {name for issue in issues for name in issue.expression}
        applied = [(k, v) for k, v in pairs if k not in left_out]
        if applied:
            filters.setdefault(kind, []).append(applied)
        else:  # every criterion left out (reported): it matches nothing, not everything
            filters.setdefault(kind, [])
    return filters


def _split(text: str) -> list[str]:
    """Comma-separated `_typeFilter` values; a comma inside a query is escaped (%2C)."""
    return [part for part in text.split(",") if part]
