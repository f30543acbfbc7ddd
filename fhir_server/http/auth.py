"""Authentication of FHIR requests: a SMART access token becomes the request's claims, from
which the service layer builds the Principal (services/principals.py).

Every route of the FHIR API depends on `authenticate`, except `metadata` and SMART discovery.
Without a valid bearer token the answer is 401 with `WWW-Authenticate` (RFC 6750), but for
the trial search routes of PUBLIC_ROUTES when the request has no Authorization header at all
and public trial search is on: its principal is then the public one, which the service layer
confines to the trial catalogue (access/public.py). The service layer gets the principal in
its Context (`context_of`) and decides access there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re

from fastapi import Request

from ..access import Claims, public_principal, server_principal, token_required
from ..auth.psc import Professional, UnknownProfessional, check_register
from ..auth.registry import Client
from ..auth.tokens import InvalidToken, TokenClaims, TokenService
from ..auth.users import Users
from ..model.errors import Kind, fail
from ..search.references import type_and_id
from ..services.context import Context
from ..services.principals import practitioner_with_rpps, principal_of

log = logging.getLogger("fhir_server.auth")

NO_AUTH = server_principal("auth-off")
BREAK_GLASS_HEADER = "X-Break-Glass-Reason"
PUBLIC = public_principal()
# The routes a request without a token may take, by method, relative to the FHIR base: trial
# search (GET, and POST `_search`), a trial's read, and trial matching. A FHIR id has no `_`
# or `$`, so `_history` and operations on one trial are not among them.
PUBLIC_ROUTES = {
    "GET": re.compile(r"/ResearchStudy(/[A-Za-z0-9\-.]{1,64})?/?"),
    "POST": re.compile(r"/ResearchStudy/(_search|\$match)/?"),
}


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
    header = request.headers.get("authorization")
    if header is None and _public_route(request):
        request.state.principal = PUBLIC
        return
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise token_required()
    token = token.strip()
    try:
        # Off the event loop when a key set may be fetched: other requests go on meanwhile.
        verified, client = (await asyncio.to_thread(tokens.verified, token)
                            if tokens.may_fetch(token) else tokens.verified(token))
    except InvalidToken as exc:
        raise fail(Kind.UNAUTHORIZED, "expired" if "expired" in str(exc) else "security",
                   str(exc)) from None
    if verified.professional is not None:
        verified = await _signed_in_professional(request, verified, verified.professional)
    request.state.principal = await principal_of(request.app.state.context,
                                                 _claims(request, verified, client))


def _public_route(request: Request) -> bool:
    """Whether a request without a token may go on as the public principal."""
    settings = request.app.state.settings
    if not settings.public_trial_search:
        return False
    route = PUBLIC_ROUTES.get(request.method)
    path = request.url.path.removeprefix(settings.base_path)
    return route is not None and route.fullmatch(path) is not None


async def _signed_in_professional(request: Request, verified: TokenClaims,
                                  professional: Professional) -> TokenClaims:
    """A Pro Santé Connect token with its professional's stored Practitioner as fhirUser
    (created on first sign-in); 401 for a professional the RPPS register refuses."""
    try:
        check_register(request.app.state.settings.data_dir / "rpps.db", professional)
    except UnknownProfessional as exc:
        raise fail(Kind.UNAUTHORIZED, "security", str(exc)) from None
    fhir_user = await practitioner_with_rpps(context_of(request), professional.rpps,
                                             professional.practitioner())
    return dataclasses.replace(verified, fhir_user=fhir_user)


def _claims(request: Request, verified: TokenClaims, client: Client | None) -> Claims:
    """What the token, the user account and its registered `client` say about the caller."""
    registry = request.app.state.oauth.registry
    fhir_user = type_and_id(verified.fhir_user) if verified.fhir_user else None
    # An administrator's account names the token's fhirUser: a token without one (a backend
    # client's) needs no look-up.
    user = Users(registry).get(verified.subject) if fhir_user is not None else None
    return Claims(
        subject=verified.subject, client_id=verified.client_id, scope=verified.scope,
        patient=verified.patient, fhir_user=fhir_user, token_id=verified.token_id,
        unreadable_user=bool(verified.fhir_user) and fhir_user is None,
        admin=user is not None and user.admin and user.fhir_user == fhir_user,
        acts_for=client.acts_for if client is not None else (),
        break_glass=request.headers.get(BREAK_GLASS_HEADER))


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
