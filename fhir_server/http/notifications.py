"""Routes of a person's notification preferences (docs/notifications.md): `GET` and `PUT
/notifications/preferences` for the signed-in person (their `fhirUser`), as JSON
`{"channel", "language", "optedOut"}`. Outside the FHIR base: not a FHIR resource."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from ..model.errors import Kind, fail
from ..services import notifications
from .auth import authenticate, context_of
from .negotiation import read_body

router = APIRouter(prefix="/notifications", dependencies=[Depends(authenticate)])
MAX_BYTES = 1024


def _json(value: object) -> Response:
    return Response(orjson.dumps(value), media_type="application/json",
                    headers={"Cache-Control": "no-store"})


@router.get("/preferences")
async def read(request: Request) -> Response:
    ctx = context_of(request)
    wished = await notifications.preferences(request.app.state.schedule, notifications.own(ctx))
    return _json(notifications.preferences_json(wished))


@router.put("/preferences")
async def change(request: Request) -> Response:
    """Replace the caller's preferences: 200 with them, as stored (audited)."""
    ctx = context_of(request)
    person = notifications.own(ctx)
    try:
        body = orjson.loads(await read_body(request, MAX_BYTES))
    except orjson.JSONDecodeError:
        raise fail(Kind.INVALID, "invalid", "The body is a JSON object.") from None
    wished = notifications.parse_preferences(body)
    await notifications.set_preferences(ctx, request.app.state.schedule,
                                        request.app.state.recorder.record, person, wished)
    return _json(notifications.preferences_json(wished))
