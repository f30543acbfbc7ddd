"""The authorization server's HTTP face: SMART discovery, JWKS, token, introspection and
revocation (SMART App Launch 2.x; RFC 6749, 7523, 7662, 7009).

Discovery is served as `application/json` at `[base]/.well-known/smart-configuration` and
lists only what works: standalone launch with PKCE (public and confidential-symmetric apps),
backend services (private_key_jwt), refresh tokens, OpenID Connect identity.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from authlib.oauth2.rfc6749 import OAuth2Error
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from ..auth.server import ASSERTION_ALGORITHMS, FormRequest
from ..settings import Settings

discovery_router = APIRouter()
auth_router = APIRouter()

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_MAX_FORM_BYTES = 64 * 1024


def oauth_uris(settings: Settings) -> dict[str, str]:
    """The endpoints the CapabilityStatement's oauth-uris extension names."""
    auth = settings.auth_url
    return {"authorize": f"{auth}/authorize", "token": f"{auth}/token",
            "introspect": f"{auth}/introspect", "revoke": f"{auth}/revoke"}


@discovery_router.get("/.well-known/smart-configuration")
async def smart_configuration(request: Request) -> JSONResponse:
    """SMART discovery (App Launch 2.x, section "Conformance"): what this server does, only."""
    settings: Settings = request.app.state.settings
    auth = settings.auth_url
    return JSONResponse({
        "issuer": auth,
        "jwks_uri": f"{auth}/jwks",
        "authorization_endpoint": f"{auth}/authorize",
        "token_endpoint": f"{auth}/token",
        "introspection_endpoint": f"{auth}/introspect",
        "revocation_endpoint": f"{auth}/revoke",
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "token_endpoint_auth_methods_supported": [
            "private_key_jwt", "client_secret_basic", "client_secret_post", "none"],
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGORITHMS,
        "scopes_supported": [
            "openid", "fhirUser", "launch/patient", "offline_access", "online_access",
            "patient/*.rs", "patient/*.cruds", "user/*.rs", "system/*.rs", "system/*.cruds"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": [
            "launch-standalone", "client-public", "client-confidential-symmetric",
            "client-confidential-asymmetric", "context-standalone-patient", "permission-patient",
            "permission-offline", "permission-online", "permission-v1", "permission-v2",
            "sso-openid-connect", "authorize-post"],
    })


@auth_router.get("/jwks")
async def jwks(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.tokens.keys.jwks())


def _json(status: int, body: Any, headers: Any = None) -> Response:
    merged = {**dict(headers or []), **_NO_STORE}
    return JSONResponse(body, status_code=status, headers=merged)


async def _answer(request: Request, endpoint: Callable[[FormRequest], tuple[Any, ...]]) -> Response:
    """Read the form and let the authorization server answer (off the event loop: it reads
    the client registry and may fetch a client's JWKS)."""
    body = await request.body()
    if len(body) > _MAX_FORM_BYTES:
        return _json(400, {"error": "invalid_request", "error_description": "Form too large."})
    form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    settings: Settings = request.app.state.settings
    try:
        # The public URL, not the one the proxy forwarded: authlib refuses plain http there,
        # except on loopback addresses.
        endpoint_url = f"{settings.auth_url}/{request.url.path.rsplit('/', 1)[-1]}"
        oauth_request = FormRequest(endpoint_url, request.headers, form)
    except OAuth2Error as exc:
        return _json(exc.status_code, dict(exc.get_body()))
    return _json(*await run_in_threadpool(endpoint, oauth_request))


@auth_router.post("/token")
async def token(request: Request) -> Response:
    return await _answer(request, request.app.state.oauth.token)


@auth_router.post("/introspect")
async def introspect(request: Request) -> Response:
    return await _answer(request, request.app.state.oauth.introspect)


@auth_router.post("/revoke")
async def revoke(request: Request) -> Response:
    return await _answer(request, request.app.state.oauth.revoke)
