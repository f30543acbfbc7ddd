"""Routes of the sealing-key registry (docs/sealed-messages.md): `PUT /keys/me` enrols the
signed-in user's public key, `GET /keys/me` and `GET /keys/{type}/{id}` answer a JWK Set
(RFC 7517 §5). Outside the FHIR base: these are JOSE documents, not FHIR resources."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from ..model.errors import Kind, fail
from ..services import sealing_keys
from .auth import authenticate, context_of
from .negotiation import read_body

router = APIRouter(prefix="/keys", dependencies=[Depends(authenticate)])
JWK_SET = "application/jwk-set+json"
MAX_KEY_BYTES = 4096


def _jwks(value: object) -> Response:
    return Response(orjson.dumps(value), media_type=JWK_SET, headers={"Cache-Control": "no-store"})


@router.put("/me")
async def enrol(request: Request) -> Response:
    """Enrol (or replace) the caller's public key: 200 with the key set now published."""
    body = await read_body(request, MAX_KEY_BYTES)
    try:
        jwk = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise fail(Kind.INVALID, "invalid", "The body is one JWK (RFC 7517), a JSON object.") from None
    return _jwks({"keys": [sealing_keys.enrol(context_of(request), jwk)]})


@router.get("/me")
async def own(request: Request) -> Response:
    """The caller's own current key set."""
    return _jwks(await sealing_keys.own(context_of(request)))


@router.get("/{kind}/{id}")
async def published(request: Request, kind: str, id: str) -> Response:
    """The keys content addressed to `kind/id` must be sealed to."""
    return _jwks(await sealing_keys.published(context_of(request), f"{kind}/{id}"))
