"""GET [base]/metadata (FHIR R4 http.html#capabilities), with `_summary` (search.html#summary:
`true` gives the statement's summary elements, without the 700 kB of search parameters) and,
as on every interaction, `_format` and `_pretty`; `mode=terminology` gives the
TerminologyCapabilities instead (docs/terminology.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from .. import __version__, clock
from ..model import jsonbody
from ..model.errors import Kind, fail
from ..model.summary import summarize
from ..services.capabilities import capability_statement, summary_view
from ..terminology_service import terminology_capabilities
from .auth_routes import oauth_uris
from .errors import WRITES, not_allowed
from .negotiation import check_acceptable, fhir_response

router = APIRouter()
router.add_api_route("/metadata", not_allowed, methods=WRITES)  # 405, not a type "metadata"

_VIEWS = ("false", "true", "text", "data")
_MODES = ("full", "terminology")  # http.html#capabilities; `normative` is not offered


@router.get("/metadata")
async def metadata(request: Request) -> Response:
    check_acceptable(request)
    mode = request.query_params.get("_summary", "false")
    if mode not in _VIEWS:
        raise fail(Kind.INVALID, "invalid", f"_summary must be one of {', '.join(_VIEWS)} here.",
                   expression="_summary")
    kind = request.query_params.get("mode", "full")
    if kind not in _MODES:
        raise fail(Kind.INVALID, "invalid", f"mode must be one of {', '.join(_MODES)} here.",
                   expression="mode")
    state = request.app.state
    if kind == "terminology":
        if getattr(state, "terminology_capabilities", None) is None:
            document = terminology_capabilities(state.context.terminology, state.settings.base_url,
                                                software="fhir-server", version=__version__,
                                                date=clock.instant())
            state.terminology_capabilities = {view: jsonbody.dump(summarize(document, view))
                                              for view in _VIEWS}
        return fhir_response(request, state.terminology_capabilities[mode])
    if getattr(state, "capabilities", None) is None:
        # Built once per view (about 60 ms, 700 kB in full): it only changes with the code and
        # settings.
        statement = capability_statement(
            state.context.registry,
            state.settings.base_url,
            conditional_delete_multiple=state.settings.conditional_delete_multiple,
            oauth_uris=oauth_uris(state.settings) if state.tokens is not None else None,
        )
        state.capabilities = {view: jsonbody.dump(_view(statement, view)) for view in _VIEWS}
    return fhir_response(request, state.capabilities[mode])


def _view(statement: dict[str, Any], mode: str) -> dict[str, Any]:
    return summary_view(statement) if mode == "true" else summarize(statement, mode)
