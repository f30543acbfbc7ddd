"""GET [base]/metadata (FHIR R4 http.html#capabilities)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from ..model import jsonbody
from ..services.capabilities import capability_statement
from .auth_routes import oauth_uris
from .errors import WRITES, not_allowed
from .negotiation import check_acceptable, fhir_response

router = APIRouter()
router.add_api_route("/metadata", not_allowed, methods=WRITES)  # 405, not a type "metadata"


@router.get("/metadata")
async def metadata(request: Request) -> Response:
    check_acceptable(request)
    state = request.app.state
    if getattr(state, "capabilities", None) is None:
        # Built once (about 60 ms, 700 kB): it only changes with the code and settings.
        state.capabilities = jsonbody.dump(capability_statement(
            state.context.registry,
            state.settings.base_url,
            conditional_delete_multiple=state.settings.conditional_delete_multiple,
            oauth_uris=oauth_uris(state.settings) if state.tokens is not None else None,
        ))
    return fhir_response(request, state.capabilities)
