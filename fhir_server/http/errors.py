"""The one place that maps failures to HTTP statuses and OperationOutcome bodies."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..model.errors import FhirError, Issue, Kind, fail, incident
from ..model.outcome import operation_outcome
from .auth import www_authenticate
from .negotiation import fhir_response

log = logging.getLogger("fhir_server.http")

STATUS: dict[Kind, int] = {
    Kind.INVALID: 400,
    Kind.UNAUTHORIZED: 401,
    Kind.FORBIDDEN: 403,
    Kind.NOT_FOUND: 404,
    Kind.NOT_ALLOWED: 405,
    Kind.NOT_ACCEPTABLE: 406,
    Kind.CONFLICT: 409,
    Kind.GONE: 410,
    Kind.PRECONDITION_FAILED: 412,
    Kind.TOO_LARGE: 413,
    Kind.UNSUPPORTED_MEDIA_TYPE: 415,
    Kind.UNPROCESSABLE: 422,
    Kind.NOT_SUPPORTED: 501,
    Kind.BUSY: 503,
    Kind.TOO_MANY: 429,
    Kind.FAULT: 500,
}


# What a 429 asks the caller to wait before trying again.
TOO_MANY_RETRY_AFTER_SECONDS = 60


def status_of(kind: Kind) -> int:
    """The HTTP status of a failure kind (also used for Bundle entry responses)."""
    return STATUS[kind]


def error_response(request: Request, error: FhirError) -> Response:
    """An OperationOutcome response for `error`."""
    response = fhir_response(request, operation_outcome(error.issues), status=status_of(error.kind))
    first = error.issues[0] if error.issues else None
    challenge = www_authenticate(error.kind, first.code, first.diagnostics) if first else None
    if challenge is not None:
        response.headers["WWW-Authenticate"] = challenge
    if error.kind is Kind.TOO_MANY:
        response.headers["Retry-After"] = str(TOO_MANY_RETRY_AFTER_SECONDS)
    return response


async def _fhir_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FhirError)
    return error_response(request, exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        error = fail(Kind.NOT_ALLOWED, "not-supported",
                     f"{request.method} is not allowed on {request.url.path}.")
        response = error_response(request, error)
        if exc.headers and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    if exc.status_code == 404:
        error = fail(Kind.NOT_FOUND, "not-found", f"No FHIR endpoint at {request.url.path}.")
        return error_response(request, error)
    issue = Issue(code="processing", diagnostics=str(exc.detail))
    return fhir_response(request, operation_outcome([issue]), status=exc.status_code)


class FaultMiddleware:
    """Answers an unexpected exception with an ordinary 500 OperationOutcome.

    Not an exception handler: Starlette runs a handler for `Exception` in its
    ServerErrorMiddleware, which re-raises after answering so the server can log it, and
    uvicorn then drops the keep-alive connection without `Connection: close`: the client's
    next request on it fails. Here the exception ends with the response; the log has it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            if started:  # too late for another answer: the server closes the connection
                raise
            await error_response(Request(scope), incident(log))(scope, receive, send)


async def _validation(request: Request, exc: Exception) -> Response:
    error = fail(Kind.INVALID, "invalid", "The request parameters are invalid.")
    return error_response(request, error)


WRITES = ["POST", "PUT", "PATCH", "DELETE"]


async def not_allowed(request: Request) -> Response:
    """The endpoint of a known path for the methods it does not take: 405, Allow naming the
    others (registered explicitly where a pattern route would otherwise catch the path)."""
    taken = request.scope["route"].methods
    allowed = [m for m in ["GET", "HEAD", *WRITES] if m not in taken and not (m == "HEAD" and "GET" in taken)]
    raise HTTPException(405, headers={"Allow": ", ".join(allowed)})


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into an OperationOutcome (the fault
    middleware first: innermost, so the audit and request-id middlewares see its 500)."""
    app.add_exception_handler(FhirError, _fhir_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_middleware(FaultMiddleware)
