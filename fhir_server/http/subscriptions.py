"""`Subscription/$status`, `Subscription/{id}/$status` and `Subscription/{id}/$events` (Subscriptions R5 Backport IG
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
_STATUS_PARAMETERS = ("id", "status")


@router.get("/Subscription/$status")
@router.post("/Subscription/$status")
async def statuses(request: Request) -> Response:
    """The status of the caller's Subscriptions, each `id` and `status` given (repeated, or
    comma-separated in a query) narrowing them: a searchset Bundle of Parameters."""
    check_acceptable(request)
    values: dict[str, list[str]] = {name: [] for name in _STATUS_PARAMETERS}
    for name, value in await _parameters(request, "$status", _STATUS_PARAMETERS):
        values[name].extend(value.split(","))
    return fhir_response(request, await subscriptions.statuses(
        context_of(request), values["id"], values["status"]))


@router.get("/Subscription/{id}/$status")
@router.post("/Subscription/{id}/$status")
async def status(request: Request, id: str) -> Response:
    """The subscription's status: a searchset Bundle of one Parameters (query-status)."""
    check_acceptable(request)
    crud.check_id(id)
    return fhir_response(request, await subscriptions.status(context_of(request), id))


async def _parameters(request: Request, operation: str,
                      known: tuple[str, ...]) -> list[tuple[str, str]]:
    """An operation's parameters, in order: from the query string (GET) or a Parameters body
    (POST); 400 naming the first one that is not in `known`."""
    if request.method == "GET":
        given = query_pairs(request.scope["query_string"])
    else:
        body = (await read_payload(request)).checked
        if body.get("resourceType") != "Parameters":
            raise fail(Kind.INVALID, "structure", f"The body of {operation} must be a Parameters resource.")
        given = [(str(p.get("name")), str(p.get("valueString", p.get("valueCode", p.get("valueId", "")))))
                 for p in body.get("parameter") or () if isinstance(p, dict)]
    unknown = sorted({name for name, _ in given} - set(known))
    if unknown:
        raise fail(Kind.INVALID, "not-supported", f"Unknown {operation} parameter '{unknown[0]}'.",
                   expression=unknown[0])
    return given


@router.get("/Subscription/{id}/$events")
@router.post("/Subscription/{id}/$events")
async def events(request: Request, id: str) -> Response:
    """Kept events of the subscription, replayed as a query-event notification Bundle."""
    check_acceptable(request)
    crud.check_id(id)
    given = dict(await _parameters(request, "$events", _EVENTS_PARAMETERS))
    return fhir_response(request, await subscriptions.events(
        context_of(request), id, given.get("eventsSinceNumber"), given.get("eventsUntilNumber"),
        given.get("content")))
