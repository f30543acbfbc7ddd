"""Authentication of FHIR requests: a SMART access token becomes the request's Principal.

Every route of the FHIR API depends on `authenticate`, except `metadata` and SMART discovery.
Without a valid bearer token the answer is 401 with `WWW-Authenticate` (RFC 6750). The
service layer gets the principal in its Context (`context_of`) and decides access there.
"""

from __future__ import annotations

import dataclasses
import logging

from fastapi import Request

from ..access import parse_scopes
from ..access.principal import Principal, server_principal
from ..auth.tokens import InvalidToken, TokenService
from ..model.errors import Kind, fail
from ..services.context import Context
from ..services.launch_context import consenting_patients

log = logging.getLogger("fhir_server.auth")

NO_AUTH = server_principal("auth-off")


def context_of(request: Request) -> Context:
    """The service Context of this request: the app's, with the caller's principal."""
    context: Context = request.app.state.context
    principal = getattr(request.state, "principal", None)
    return dataclasses.replace(context, principal=principal,
                               trail=getattr(request.state, "trail", None))


async def authenticate(request: Request) -> None:
    """Find the caller (a FastAPI dependency of every protected route)."""
    tokens: TokenService | None = request.app.state.tokens
    if tokens is None:  # auth=off, announced at start-up
        request.state.principal = NO_AUTH
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise fail(Kind.UNAUTHORIZED, "login", "An access token is required (Authorization: "
                   "Bearer <token>); see /.well-known/smart-configuration.")
    try:
        claims = tokens.verify(token.strip())
    except InvalidToken as exc:
        raise fail(Kind.UNAUTHORIZED, "expired" if "expired" in str(exc) else "security",
                   str(exc)) from None
    grant = parse_scopes(claims.scope)
    consented = None
    if claims.fhir_user and "Practitioner/" in claims.fhir_user and grant.has_level("user"):
        practitioner = "Practitioner/" + claims.fhir_user.rsplit("Practitioner/", 1)[1]
        consented = tuple(await consenting_patients(request.app.state.context, practitioner))
    request.state.principal = Principal(
        subject=claims.subject, client_id=claims.client_id, grant=grant,
        patient=claims.patient, fhir_user=claims.fhir_user, token_id=claims.token_id,
        consented=consented)


def www_authenticate(kind: Kind, code: str, diagnostics: str) -> str | None:
    """The WWW-Authenticate header of a 401 or 403 (RFC 6750 section 3), None otherwise."""
    if kind is Kind.UNAUTHORIZED:
        if code == "login":
            return 'Bearer realm="fhir"'
        description = diagnostics.replace('"', "'")
        return f'Bearer realm="fhir", error="invalid_token", error_description="{description}"'
    if kind is Kind.FORBIDDEN:
        return 'Bearer realm="fhir", error="insufficient_scope"'
    return None
