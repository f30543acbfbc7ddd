"""GET [base]/metadata (FHIR R4 http.html#capabilities)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from ..services.capabilities import capability_statement
from .negotiation import check_acceptable, fhir_response

router = APIRouter()


@router.get("/metadata")
async def metadata(request: Request) -> Response:
    check_acceptable(request)
    settings = request.app.state.settings
    statement = capability_statement(
        request.app.state.context.registry,
        settings.base_url,
        conditional_delete_multiple=settings.conditional_delete_multiple,
    )
    return fhir_response(request, statement)
