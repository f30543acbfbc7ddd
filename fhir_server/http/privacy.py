"""The person's rights over their record (docs/privacy.md): `Patient/[id]/$everything`
(patient-operation-everything.html), the record as PDF or CSV, a physician's referrals as xlsx.
The work is in privacy/; these routes parse and render."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from ..model.errors import Kind, fail
from ..privacy import everything, exports
from ..search import query_pairs
from ..services import crud
from ..services.context import Context
from .auth import authenticate, context_of
from .export import accepted, request_url
from .headers import prefer
from .negotiation import check_acceptable, fhir_response
from .routes import read_payload

router = APIRouter(dependencies=[Depends(authenticate)])


@router.get("/Patient/{id}/$everything")
@router.post("/Patient/{id}/$everything")
async def patient_everything(request: Request, id: str) -> Response:
    """The patient's compartment and what it references, one searchset page at a time (a POST
    gives its parameters in a Parameters body); under `Prefer: respond-async`, the compartment
    as ndjson files of a Bulk Data job (docs/export.md)."""
    check_acceptable(request)
    crud.check_id(id)
    params = _params(request)
    if request.method == "POST":
        params += everything.parameters((await read_payload(request)).checked)
    asked = everything.parse_request(params)
    if prefer(request, "respond-async") is not None:
        job = await everything.kick_off(context_of(request), id, asked, url=request_url(request),
                                        policy=request.app.state.export_policy)
        return accepted(request, job)
    return fhir_response(request, await everything.everything(context_of(request), id, asked))


def _params(request: Request) -> list[tuple[str, str]]:
    return [(k, v) for k, v in query_pairs(request.scope["query_string"])
            if k not in ("_format", "_pretty")]


@router.get("/Patient/{id}/$record-export")
async def record_export(request: Request, id: str) -> Response:
    """The record as a file for people: `format` pdf or csv (a zip), `language` fr or en."""
    return await _file(request, id, exports.patient_export)


@router.get("/Practitioner/{id}/$referrals-export")
async def referrals_export(request: Request, id: str) -> Response:
    """The referrals the physician sent and their answers: `format` xlsx, `language` fr or en."""
    return await _file(request, id, exports.referrals_export)


def _file_params(request: Request) -> dict[str, str]:
    """`format` and `language`, each once at most; INVALID naming any other or a repeat."""
    pairs = _params(request)
    for name, _ in pairs:
        if name not in ("format", "language"):
            raise fail(Kind.INVALID, "invalid", f"This export does not take {name}.", expression=name)
        if sum(n == name for n, _ in pairs) > 1:
            raise fail(Kind.INVALID, "invalid", f"{name} may be given once only.", expression=name)
    return dict(pairs)


Maker = Callable[[Context, str, str | None, exports.Language], Awaitable[exports.Export]]


async def _file(request: Request, id: str, make: Maker) -> Response:
    crud.check_id(id)
    params = _file_params(request)
    export = await make(context_of(request), id, params.get("format"),
                        exports.parse_language(params.get("language")))
    return Response(export.content, media_type=export.media_type, headers={
        "Content-Disposition": f'attachment; filename="{export.filename}"', "Cache-Control": "no-store"})
