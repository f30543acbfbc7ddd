"""Bulk Data `$export` over HTTP (Bulk Data Access IG 2.0.0, export.html): kick-off at system,
Patient and Group level (GET, or POST with a Parameters body), the status URL (poll, DELETE)
and the file URLs. services/export.py does the work; these routes parse and render."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from .. import clock
from ..model.errors import Kind, fail
from ..model.http_dates import http_date
from ..search import query_pairs
from ..services import export
from .auth import authenticate, context_of
from .headers import prefer
from .negotiation import check_acceptable, empty_response, fhir_response
from .routes import read_payload

router = APIRouter(dependencies=[Depends(authenticate)])

RETRY_AFTER_SECONDS = 2
NDJSON = "application/fhir+ndjson"
_VALUES = ("valueString", "valueInstant", "valueDateTime", "valueCode", "valueUri")


@router.get("/$export")
@router.post("/$export")
async def export_system(request: Request) -> Response:
    """Kick-off of a system-level export: 202 with the status URL in Content-Location."""
    return await _kick_off(request, "system")


@router.get("/Patient/$export")
@router.post("/Patient/$export")
async def export_patients(request: Request) -> Response:
    """Kick-off of an export of every patient's compartment (or the caller's own)."""
    return await _kick_off(request, "patient")


@router.get("/Group/{id}/$export")
@router.post("/Group/{id}/$export")
async def export_group(request: Request, id: str) -> Response:
    """Kick-off of an export of the compartments of a Group's patients."""
    return await _kick_off(request, "group", group=id)


async def _kick_off(request: Request, level: str, **target: str) -> Response:
    check_acceptable(request)
    if prefer(request, "respond-async") is None:
        raise fail(Kind.INVALID, "required", "$export is asynchronous: send the header "
                   "Prefer: respond-async.", expression="Prefer")
    params = await _params(request)
    id = await export.kick_off(context_of(request), level, params, request=request_url(request),
                               lenient=prefer(request, "handling") == "lenient",
                               policy=request.app.state.export_policy, **target)
    return accepted(request, id)


def request_url(request: Request) -> str:
    """The request's absolute URL as the public base names it (a manifest's `request`)."""
    settings = request.app.state.settings
    url = settings.base_url.rstrip("/") + request.url.path.removeprefix(settings.base_path)
    query = request.scope["query_string"].decode()
    return f"{url}?{query}" if query else url


def accepted(request: Request, id: str) -> Response:
    """202 Accepted for the job `id`, its status URL in Content-Location; the worker woken."""
    request.app.state.wake_exports()
    base = request.app.state.settings.base_url.rstrip("/")
    return empty_response(202, {"Content-Location": f"{base}/{export.STATUS_PATH}/{id}"})


async def _params(request: Request) -> list[tuple[str, str]]:
    """The kick-off parameters: the query string's, and a POST's Parameters."""
    params = [(k, v) for k, v in query_pairs(request.scope["query_string"])
              if k not in ("_format", "_pretty")]
    if request.method != "POST":
        return params
    body = (await read_payload(request)).checked
    if body.get("resourceType") != "Parameters":
        raise fail(Kind.INVALID, "structure", "The body of a POST $export must be a Parameters "
                   "resource.")
    return params + [_parameter(p) for p in body.get("parameter") or []]


def _parameter(parameter: Any) -> tuple[str, str]:
    name = parameter.get("name") if isinstance(parameter, dict) else None
    if not isinstance(name, str):
        raise fail(Kind.INVALID, "structure", "Each parameter of the Parameters needs a name.")
    if isinstance(reference := parameter.get("valueReference"), dict):
        return name, str(reference.get("reference", ""))
    value = next((parameter[k] for k in _VALUES if k in parameter), None)
    if not isinstance(value, str):
        raise fail(Kind.INVALID, "structure", f"Parameter {name} has no value this operation "
                   "takes (a string, instant, code or Patient reference).", expression=name)
    return name, value


@router.get(f"/{export.STATUS_PATH}/{{id}}")
async def export_status(request: Request, id: str) -> Response:
    """202 with X-Progress and Retry-After while the job runs; 200 with the manifest and
    Expires once done; 500 with an OperationOutcome if it failed."""
    found = await export.status(context_of(request), id, request.app.state.export_policy)
    if found.failure is not None:
        raise fail(Kind.FAULT, "exception", found.failure)
    if found.manifest is None:
        return empty_response(202, {"X-Progress": (found.progress or "")[:99],
                                    "Retry-After": str(RETRY_AFTER_SECONDS)})
    expires = clock.instant(datetime.fromtimestamp(found.expires or 0, UTC))
    response = fhir_response(request, found.manifest, headers={"Expires": http_date(expires)})
    response.headers["Content-Type"] = "application/json"  # export.html: complete status
    return response


@router.delete(f"/{export.STATUS_PATH}/{{id}}")
async def export_cancel(request: Request, id: str) -> Response:
    """Cancel a job and delete its files: 202; the status URL then answers 404."""
    await export.cancel(context_of(request), id)
    return empty_response(202)


@router.get(f"/{export.FILE_PATH}/{{id}}/{{name}}")
async def export_file(request: Request, id: str, name: str) -> Response:
    """A file of a finished job, to the client that started it."""
    data = await export.file(context_of(request), id, name, request.app.state.export_policy)
    return Response(data, media_type=NDJSON, headers={"Cache-Control": "no-store"})
