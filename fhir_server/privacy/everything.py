"""`Patient/[id]/$everything` (FHIR R4 patient-operation-everything.html): the patient's
compartment, type after type, plus the resources outside any patient compartment that it
references (practitioners, organisations, locations, medications) and the caller may read.

Every resource comes through the service layer (`services.search` confined to the compartment,
`services.crud.read` for references), so access and audit apply as to any other request: a
caller who may not read the Patient gets 404, as for a patient who does not exist.

Paging is keyset paging per type: the cursor names the type and the store's own cursor
within it, so a page never re-reads what earlier pages returned. It also carries the moment
the first page was read: AuditEvents recorded since are left out, or the pages' own
AuditEvents (each read of the record is one, in its compartment) would keep the paging going.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import orjson

from .. import clock
from ..model.bundle import bundle
from ..model.errors import FhirError, Kind, fail
from ..services import crud, export, search
from ..services.context import Context
from ..services.export_job import Source, outside_compartments
from ..services.guard import decision

CURSOR = "_cursor"
_AS_OF = "|"  # between the moment paging began and the type's cursor, in `_cursor`
# The clinical date `start`/`end` apply to, per type (a search parameter of that type). Types
# not listed use their `date` parameter if they have one; types with neither (the Patient,
# Coverage, Device...) are returned whatever the range. The parameters' own semantics apply
# (search.html#date: a period overlapping the range matches).
CLINICAL_DATE = {
    "AllergyIntolerance": "date", "Claim": "created", "Communication": "sent",
    "Condition": "onset-date", "DeviceRequest": "authored-on", "ExplanationOfBenefit": "created",
    "Goal": "start-date", "ImagingStudy": "started", "Media": "created",
    "MedicationAdministration": "effective-time", "MedicationDispense": "whenhandedover",
    "MedicationRequest": "authoredon", "MedicationStatement": "effective",
    "QuestionnaireResponse": "authored", "ServiceRequest": "authored", "Specimen": "collected",
}


@dataclass(frozen=True, slots=True)
class Request:
    """The operation's parameters, checked."""

    start: str | None = None
    end: str | None = None
    since: str | None = None
    types: tuple[str, ...] = ()
    count: int | None = None
    cursor: str | None = None


# The operation's parameters (patient-operation-everything.html), each with the Parameters
# value types a POST may give it; all but `_type` are 0..1.
VALUE_TYPES = {"start": ("valueDate", "valueDateTime"), "end": ("valueDate", "valueDateTime"),
               "_since": ("valueInstant",), "_type": ("valueCode",), "_count": ("valueInteger",)}
REPEATABLE = frozenset({"_type"})
_ELEMENT_KEYS = frozenset({"name", "id", "extension", "modifierExtension"})  # not its value


def parse_request(params: Sequence[tuple[str, str]]) -> Request:
    """The parameters of a GET (query) or POST (`parameters` of its body); INVALID on a bad one."""
    known = {*VALUE_TYPES, CURSOR}
    unknown = sorted({k for k, _ in params if k not in known})
    if unknown:
        raise _invalid(f"$everything does not take {', '.join(unknown)}.", unknown[0])
    repeated = sorted({k for k, _ in params if k not in REPEATABLE and sum(n == k for n, _ in params) > 1})
    if repeated:
        raise _invalid(f"{repeated[0]} may be given once only.", repeated[0])
    values = dict(params)
    start, end = values.get("start"), values.get("end")
    for name in ("start", "end", "_since"):
        if values.get(name) is not None:
            _instant(values[name], name)
    if start and end and _instant(start, "start") > _instant(end, "end", last=True):
        raise _invalid(f"start ({start}) is after end ({end}).", "start")
    count = None
    if "_count" in values:
        if not values["_count"].isascii() or not values["_count"].isdigit() or int(values["_count"]) < 1:
            raise _invalid("_count must be a positive integer.", "_count")
        count = int(values["_count"])
    types = tuple(t for v in (v for k, v in params if k == "_type") for t in v.split(",") if t)
    return Request(start, end, values.get("_since"), types, count, values.get(CURSOR))


def parameters(body: Any) -> list[tuple[str, str]]:
    """The name-value pairs of a POST's body, a Parameters resource whose every parameter has
    a name and one value of a type the operation defines for it; INVALID otherwise (the
    parameter's name as expression). Paging goes by the `next` links, never by a POST."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise fail(Kind.INVALID, "structure", "The body of a POST $everything must be a Parameters resource.")
    given = body.get("parameter", [])
    if not isinstance(given, list):
        raise fail(Kind.INVALID, "structure", "Parameters.parameter must be a list.")
    pairs = []
    for parameter in given:
        name = parameter.get("name") if isinstance(parameter, dict) else None
        if not isinstance(name, str):
            raise fail(Kind.INVALID, "structure", "Each parameter of the Parameters needs a name.")
        if name not in VALUE_TYPES:
            raise _invalid(f"$everything does not take {name}.", name)
        kinds = [k for k in parameter if k not in _ELEMENT_KEYS]
        value = parameter[kinds[0]] if len(kinds) == 1 and kinds[0] in VALUE_TYPES[name] else None
        # JSON's own type per FHIR type (json.html): integers are numbers, the rest strings.
        if type(value) is not (int if name == "_count" else str):
            raise _invalid(f"{name} takes one {' or '.join(VALUE_TYPES[name])}.", name)
        pairs.append((name, str(value)))
    return pairs


# A FHIR date or dateTime (datatypes.html#dateTime: a time has seconds and a zone), ASCII digits.
_DATE_TIME = re.compile(r"[0-9]{4}(-[0-9]{2}(-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
                        r"(Z|[+-][0-9]{2}:[0-9]{2}))?)?)?", re.ASCII)


def _instant(text: str, name: str, *, last: bool = False) -> datetime:
    """The first (or `last`) moment, in UTC, a FHIR date or dateTime names (a date without a
    zone read as UTC), for ordering start and end; INVALID naming `name` for anything else."""
    if _DATE_TIME.fullmatch(text) is None:
        raise _invalid(f"{name} is not a FHIR date or dateTime: {text!r}.", name)
    try:
        if len(text) in (4, 7):  # YYYY, YYYY-MM
            year, month = int(text[:4]), int(text[5:7]) if len(text) == 7 else (12 if last else 1)
            if not last:
                return datetime(year, month, 1, tzinfo=UTC)
            month_end = date(year + month // 12, month % 12 + 1, 1).toordinal() - 1
            return datetime.fromordinal(month_end).replace(hour=23, minute=59, second=59, tzinfo=UTC)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _invalid(f"{name} is not a FHIR date or dateTime: {text!r}.", name) from None
    if len(text) == 10 and last:
        moment = moment.replace(hour=23, minute=59, second=59)
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _invalid(message: str, expression: str) -> FhirError:
    return fail(Kind.INVALID, "invalid", message, expression=expression)


def compartment_types(ctx: Context, wanted: Sequence[str] = ()) -> list[str]:
    """The types of the Patient compartment (compartmentdefinition-patient), the Patient first;
    only `wanted` ones if given (a type outside the compartment is INVALID)."""
    types = ["Patient", *sorted(t for t in ctx.registry.resource_types
                                if t != "Patient" and ctx.registry.patient_compartment(t))]
    outside = [t for t in wanted if t not in types]
    if outside:
        raise _invalid(f"{', '.join(outside)} is not in the Patient compartment.", "_type")
    return [t for t in types if t in wanted] if wanted else types


def date_param(ctx: Context, resource_type: str) -> str | None:
    """The search parameter `start`/`end` apply to on `resource_type` (CLINICAL_DATE)."""
    for code in (CLINICAL_DATE.get(resource_type), "date"):
        if code and ctx.registry.get(resource_type, code) is not None:
            return code
    return None


def _filters(ctx: Context, resource_type: str, request: Request,
             as_of: str | None = None) -> list[tuple[str, str]]:
    params = [("_lastUpdated", f"ge{request.since}")] if request.since else []
    if as_of is not None and resource_type == "AuditEvent":  # never updated: born after it
        params.append(("_lastUpdated", f"le{as_of}"))
    code = date_param(ctx, resource_type)
    if code is not None:
        params += [(code, f"ge{request.start}")] if request.start else []
        params += [(code, f"le{request.end}")] if request.end else []
    return params


async def everything(ctx: Context, patient_id: str, request: Request) -> dict[str, Any]:
    """One page of `Patient/<patient_id>/$everything` as a searchset Bundle.

    NOT_FOUND if the Patient does not exist or is out of the caller's reach.
    """
    await crud.read(ctx, "Patient", patient_id)
    types = compartment_types(ctx, request.types)
    as_of, position, inner = _start(types, request.cursor)
    size = min(request.count or ctx.default_page_size, ctx.max_page_size)
    matches: list[dict[str, Any]] = []
    next_cursor = None
    for resource_type in types[position:]:
        found, more = await _type_page(ctx, patient_id, resource_type, request,
                                       size - len(matches), inner, as_of)
        matches += found
        inner = None
        if more is not None:
            next_cursor = f"{as_of}{_AS_OF}{resource_type}:{more}"
            break
        if len(matches) >= size:
            following = types.index(resource_type) + 1
            next_cursor = f"{as_of}{_AS_OF}{types[following]}:" if following < len(types) else None
            break
    included = await _referenced(ctx, matches, patient_id)
    return bundle("searchset", [*matches, *included], links=_links(ctx, patient_id, request, next_cursor))


def _start(types: list[str], cursor: str | None) -> tuple[str, int, str | None]:
    """The moment paging began (now, on the first page), the position of the cursor's type,
    and the store's cursor within it."""
    if cursor is None:
        return clock.instant(), 0, None
    as_of, _, rest = cursor.partition(_AS_OF)
    resource_type, _, inner = rest.partition(":")
    if resource_type not in types or _DATE_TIME.fullmatch(as_of) is None:
        raise _invalid("Invalid or expired paging cursor.", CURSOR)
    return as_of, types.index(resource_type), inner or None


async def _type_page(ctx: Context, patient_id: str, resource_type: str, request: Request,
                     size: int, cursor: str | None, as_of: str) -> tuple[list[dict[str, Any]], str | None]:
    """Up to `size` entries of one type in the compartment, and the store's cursor of the rest."""
    if not _in_scopes(ctx, resource_type):
        return [], None
    params = [*_filters(ctx, resource_type, request, as_of), ("_count", str(size))]
    if cursor:
        params.append((CURSOR, cursor))
    page = await search.search(ctx, resource_type, params, strict=True, compartment=patient_id)
    entries = [e for e in page.get("entry", []) if e["search"]["mode"] == "match"]
    return entries, next_cursor(page)


def _in_scopes(ctx: Context, resource_type: str) -> bool:
    """Whether the token's scopes cover `resource_type` (a type they leave out is left out of
    the record, not an error)."""
    try:
        decision(ctx, "search", resource_type)
    except FhirError as error:
        if error.kind is Kind.FORBIDDEN:
            return False
        raise
    return True


async def kick_off(ctx: Context, patient_id: str, request: Request, *, url: str,
                   policy: export.Policy) -> str:
    """`$everything` under `Prefer: respond-async` (async.html): a Bulk Data job whose ndjson
    files hold what every page would, read type after type with the same filters in the same
    compartment and under the same access; returns its id. `_count` sizes pages, which files
    do not have; a paging cursor is INVALID. NOT_FOUND, INVALID or TOO_MANY, and no job, as
    `services.export.kick_off`."""
    if request.cursor is not None:
        raise _invalid("A paging cursor has no meaning in an asynchronous request.", CURSOR)
    sources = [Source(t, tuple(_filters(ctx, t, request)), per_patient=True)
               for t in compartment_types(ctx, request.types) if _in_scopes(ctx, t)]
    return await export.kick_off_everything(ctx, patient_id, sources, request=url, policy=policy)


async def _referenced(ctx: Context, entries: list[dict[str, Any]], patient_id: str) -> list[dict[str, Any]]:
    """The resources of types outside any patient compartment that `entries` reference and
    the caller may read (`search.mode` include), each once per page."""
    return [{"fullUrl": f"{ctx.base_url}/{v.resource_type}/{v.id}",
             "resource": orjson.Fragment(v.body or b"{}"), "search": {"mode": "include"}}
            for v in await outside_compartments(ctx, map(parsed, entries))]


def parsed(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry's resource as a dict (search embeds stored bytes as they are)."""
    resource: dict[str, Any] = orjson.loads(orjson.dumps(entry["resource"]))
    return resource


async def record(ctx: Context, patient_id: str, request: Request = Request()) -> list[dict[str, Any]]:
    """Every resource `$everything` gives the caller, all pages read (parsed entries)."""
    entries: list[dict[str, Any]] = []
    cursor = request.cursor
    while True:
        page = await everything(ctx, patient_id, replace(request, cursor=cursor, count=ctx.max_page_size))
        entries += ({**e, "resource": parsed(e)} for e in page.get("entry", []))
        cursor = next_cursor(page)
        if cursor is None:
            return entries


def next_cursor(page: dict[str, Any]) -> str | None:
    """The `_cursor` of a searchset Bundle's next link, None on the last page."""
    following = next((link["url"] for link in page.get("link", []) if link["relation"] == "next"), None)
    return parse_qs(urlsplit(following).query).get(CURSOR, [None])[0] if following else None


def _links(ctx: Context, patient_id: str, request: Request, next_cursor: str | None) -> dict[str, str]:
    path = f"{ctx.base_url}/Patient/{patient_id}/$everything"
    applied = [(k, v) for k, v in (("start", request.start), ("end", request.end),
                                   ("_since", request.since)) if v]
    applied += [("_type", ",".join(request.types))] if request.types else []
    applied += [("_count", str(request.count))] if request.count else []
    links = {"self": _url(path, applied + ([(CURSOR, request.cursor)] if request.cursor else []))}
    if next_cursor:
        links["next"] = _url(path, [*applied, (CURSOR, next_cursor)])
    return links


def _url(path: str, params: list[tuple[str, str]]) -> str:
    return f"{path}?{urlencode(params)}" if params else path
