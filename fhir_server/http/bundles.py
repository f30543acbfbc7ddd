"""POST [base]: batch and transaction Bundles, and their response Bundles (http.html#transaction)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from ..model.bundle import bundle, etag
from ..model.outcome import operation_outcome
from ..services import bundle as bundles
from ..store.base import Version
from .auth import authenticate, context_of
from .errors import status_of
from .headers import prefer
from .negotiation import check_acceptable, fhir_response, read_body

router = APIRouter(dependencies=[Depends(authenticate)])

_STATUS = {"created": "201 Created", "updated": "200 OK", "matched": "200 OK",
           "deleted": "204 No Content", "none": "204 No Content", "unchanged": "200 OK"}
_REASONS = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            409: "Conflict", 410: "Gone", 412: "Precondition Failed", 413: "Payload Too Large",
            422: "Unprocessable Entity", 500: "Internal Server Error", 501: "Not Implemented",
            503: "Service Unavailable"}


def _version_entry(base: str, version: Version, status: str, representation: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    if version.body is not None:
        entry["fullUrl"] = f"{base}/{version.resource_type}/{version.id}"
        if representation:
            entry["resource"] = orjson.Fragment(version.body)
    entry["response"] = {
        "status": status,
        "location": f"{version.resource_type}/{version.id}/_history/{version.version}",
        "etag": etag(version.version),
        "lastModified": version.last_updated,
    }
    return entry


def _entry(base: str, outcome: bundles.EntryOutcome, representation: bool) -> dict[str, Any]:
    if outcome.error is not None:
        code = status_of(outcome.error.kind)
        return {"response": {"status": f"{code} {_REASONS.get(code, '')}".strip(),
                             "outcome": operation_outcome(outcome.error.issues)}}
    if outcome.result is not None:
        status = _STATUS[outcome.result.outcome]
        version = outcome.result.version
        if version is None:
            return {"response": {"status": status}}
        return _version_entry(base, version, status, representation)
    if outcome.version is not None:
        if outcome.not_modified:
            return {"response": {"status": "304 Not Modified", "etag": etag(outcome.version.version)}}
        return _version_entry(base, outcome.version, "200 OK", True)
    return {"resource": outcome.resource, "response": {"status": "200 OK"}}


@router.post("")
@router.post("/")
async def batch_or_transaction(request: Request) -> Response:
    check_acceptable(request)
    settings = request.app.state.settings
    context = context_of(request)
    body = await read_body(request, settings.max_body_bytes)
    bundle_type, entries = bundles.read_bundle(context, body, settings.max_bundle_entries)
    del body  # the entries hold what is needed; each resource is freed once stored
    if bundle_type == "transaction":
        outcome = await bundles.transaction(context, entries)
    else:
        outcome = await bundles.batch(context, entries)
    representation = prefer(request, "return") != "minimal"
    base = settings.base_url.rstrip("/")
    response = bundle(outcome.bundle_type, (_entry(base, e, representation) for e in outcome.entries))
    return fhir_response(request, response)
