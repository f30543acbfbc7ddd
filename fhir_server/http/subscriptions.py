"""`Subscription/{id}/$status` and `Subscription/{id}/$events` (Subscriptions R5 Backport IG
1.1.0, OperationDefinitions backport-subscription-status and backport-subscription-events);
services/subscriptions.py does the work. Subscription CRUD and search are the generic routes."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from ..model.errors import Kind, fail
from ..search import query_pairs
from ..services import crud, subscriptions
from .auth import authenticate, context_of
from .negotiation import check_acceptable, fhir_response
from .routes import read_payload

router = APIRouter(dependencies=[Depends(authenticate)])
_EVENTS_PARAMETERS = ("eventsSinceNumber", "eventsUntilNumber", "content")


@router.get("/Subscription/{id}/$status")
@router.post("/Subscription/{id}/$status")
async def status(request: Request, id: str) -> Response:
    """The subscription's status: a searchset Bundle of one Parameters (query-status)."""
    check_acceptable(request)
    crud.check_id(id)
    return fhir_response(request, await subscriptions.status(context_of(request), id))


async def _parameters(request: Request) -> dict[str, str]:
    """$events' parameters: from the query string (GET) or a Parameters body (POST)."""
    if request.method == "GET":
        given = query_pairs(request.scope["query_string"])
    else:
        body = (await read_payload(request)).checked
        if body.get("resourceType") != "Parameters":
            raise fail(Kind.INVALID, "structure", "The body of $events must be a Parameters resource.")
        given = [(str(p.get("name")), str(p.get("valueString", p.get("valueCode", ""))))
                 for p in body.get("parameter") or () if isinstance(p, dict)]
    unknown = sorted({name for name, _ in given} - set(_EVENTS_PARAMETERS))
    if unknown:
        raise fail(Kind.INVALID, "not-supported", f"Unknown $events parameter '{unknown[0]}'.",
                   expression=unknown[0])
    return dict(given)


@router.get("/Subscription/{id}/$events")
@router.post("/Subscription/{id}/$events")
async def events(request: Request, id: str) -> Response:
    """Kept events of the subscription, replayed as a query-event notification Bundle."""
    check_acceptable(request)
    crud.check_id(id)
    given = await _parameters(request)
    return fhir_response(request, await subscriptions.events(
        context_of(request), id, given.get("eventsSinceNumber"), given.get("eventsUntilNumber"),
        given.get("content")))
