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
from ..auth.tokens import InvalidToken, TokenClaims, TokenService
from ..auth.users import Users
from ..model.errors import Kind, fail
from ..search.references import type_and_id
from ..services import reach
from ..services.context import Context

log = logging.getLogger("fhir_server.auth")

NO_AUTH = server_principal("auth-off")
BREAK_GLASS_HEADER = "X-Break-Glass-Reason"


def context_of(request: Request) -> Context:
    """The service Context of this request: the app's, with the caller's principal."""
    context: Context = request.app.state.context
    principal = getattr(request.state, "principal", None)
    return dataclasses.replace(context, principal=principal,
                               trail=getattr(request.state, "trail", None),
                               store=getattr(request.state, "store", None) or context.store)


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
    request.state.principal = await _principal(request, claims)


async def _principal(request: Request, claims: TokenClaims) -> Principal:
    """The Principal of a verified token, with what its user reaches today (services/reach)."""
    ctx: Context = request.app.state.context
    grant = parse_scopes(claims.scope)
    fhir_user = type_and_id(claims.fhir_user) if claims.fhir_user else None
    patient = claims.patient
    consented: tuple[str, ...] | None = None
    recipients: tuple[str, ...] | None = None
    snapshots: tuple[str, ...] = ()
    admin = False
    if fhir_user and fhir_user.startswith("RelatedPerson/") and patient is not None:
        if patient not in await reach.represented(ctx, fhir_user):
            patient = None  # no longer their representative: reaches nothing
    if fhir_user and fhir_user.startswith("Practitioner/") and (grant.has_level("user") or patient):
        consented = tuple(await reach.consenting_patients(ctx, fhir_user))
        if patient is not None and patient not in consented:
            patient = None  # the launch patient's consent no longer names them
        user = Users(request.app.state.oauth.registry).get(claims.subject)
        admin = user is not None and user.admin and user.fhir_user == fhir_user
        # An administrator is never an investigator: they would reach referrals unaudited.
        recipients = None if admin else await reach.recipient_identities(ctx, fhir_user) or None
        if admin or recipients:
            # Administrators and investigators never reach a live record, even one whose
            # patient names them in a consent.
            consented, patient = (), None
        snapshots = await reach.snapshots_for(ctx, recipients=recipients or (), sender=fhir_user,
                                              patients=consented)
    elif fhir_user is None:
        client = request.app.state.oauth.registry.client(claims.client_id)
        if client is not None and client.acts_for:
            recipients = client.acts_for
            snapshots = await reach.snapshots_for(ctx, recipients=recipients)
    return Principal(
        subject=claims.subject, client_id=claims.client_id, grant=grant, patient=patient,
        fhir_user=fhir_user, token_id=claims.token_id, consented=consented,
        recipients=recipients, snapshots=snapshots, admin=admin,
        break_glass=_break_glass(request, admin))


MAX_REASON = 500


def _break_glass(request: Request, admin: bool) -> str | None:
    """The reason an administrator gives for an emergency read (`X-Break-Glass-Reason`)."""
    reason = request.headers.get(BREAK_GLASS_HEADER)
    if reason is None:
        return None
    reason = reason.strip()
    if not admin:
        raise fail(Kind.FORBIDDEN, "forbidden", "Only a platform administrator may break the glass.")
    if not reason or len(reason) > MAX_REASON:
        raise fail(Kind.INVALID, "required",
                   f"Breaking the glass needs a reason of 1 to {MAX_REASON} characters.")
    return reason


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
