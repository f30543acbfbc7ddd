"""The person's rights over their record (docs/privacy.md): `Patient/[id]/$everything`
(patient-operation-everything.html). The work is in privacy/; these routes parse and render."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from ..privacy import everything
from ..search import query_pairs
from ..services import crud
from .auth import authenticate, context_of
from .negotiation import check_acceptable, fhir_response

router = APIRouter(dependencies=[Depends(authenticate)])


@router.get("/Patient/{id}/$everything")
async def patient_everything(request: Request, id: str) -> Response:
    """The patient's compartment and what it references, one searchset page at a time."""
    check_acceptable(request)
    crud.check_id(id)
    asked = everything.parse_request(_params(request))
    return fhir_response(request, await everything.everything(context_of(request), id, asked))


def _params(request: Request) -> list[tuple[str, str]]:
    return [(k, v) for k, v in query_pairs(request.scope["query_string"])
            if k not in ("_format", "_pretty")]
