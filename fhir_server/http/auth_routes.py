"""The authorization server's HTTP face: SMART discovery, JWKS, token, introspection and
revocation (SMART App Launch 2.x; RFC 6749, 7523, 7662, 7009).

Discovery is served as `application/json` at `[base]/.well-known/smart-configuration` and
lists only what works: standalone launch with PKCE (public and confidential-symmetric apps),
backend services (private_key_jwt), refresh tokens, OpenID Connect identity.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from authlib.oauth2.rfc6749 import OAuth2Error
from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from ..access.principal import Principal
from ..audit.events import security_event
from ..auth.jws import peek
from ..auth.registry import Registry
from ..model.errors import Kind, fail
from ..auth.launch import parse_launch
from ..auth.clients import ASSERTION_ALGORITHMS, FormRequest
from ..auth.server import STYLE_DOCUMENT
from ..settings import Settings
from .. import clock
from .auth import authenticate
from .cors import Cors, origins_of

discovery_router = APIRouter()
auth_router = APIRouter()

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# The portal's look (SMART App Launch 2.2, "Styling"), as the pages' stylesheet has it.
SMART_STYLE = {
    "color_background": "#ffffff", "color_error": "#a61c00", "color_highlight": "#0b5394",
    "color_modal_backdrop": "#1a1a1a", "color_success": "#38761d", "color_text": "#1a1a1a",
    "dim_border_radius": "4px", "dim_font_size": "16px", "dim_spacing_size": "16px",
    "font_family_body": "system-ui, sans-serif", "font_family_heading": "system-ui, sans-serif",
}
LAUNCH_LIFETIME = 600
# Both discovery documents name the same (SMART's and OpenID Connect's).
TOKEN_ENDPOINT_AUTH_METHODS = ["private_key_jwt", "client_secret_basic", "client_secret_post",
                               "none"]
_MAX_FORM_BYTES = 64 * 1024


def install_cors(app: FastAPI, settings: Settings, registry: Registry | None) -> None:
    """CORS (http/cors.py): discovery, metadata and key documents open to any origin; the rest
    to the configured origins and those of the registered apps' redirect URIs."""
    auth_path = urlsplit(settings.auth_url).path
    base = settings.base_path
    public = {f"{base}/metadata", f"{base}/.well-known/smart-configuration",
              f"{auth_path}/jwks", f"{auth_path}/.well-known/openid-configuration",
              f"{auth_path}/{STYLE_DOCUMENT}"}

    def app_origins() -> set[str]:
        return origins_of(registry.redirect_uris()) if registry else set()

    app.add_middleware(Cors, public=public, configured=settings.cors_origins,
                       app_origins=app_origins)


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
        "token_endpoint_auth_methods_supported": TOKEN_ENDPOINT_AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGORITHMS,
        "scopes_supported": [
            "openid", "fhirUser", "launch", "launch/patient", "launch/encounter", "offline_access",
            "patient/*.rs", "patient/*.cruds", "user/*.rs", "system/*.rs", "system/*.cruds"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": [
            "launch-ehr", "launch-standalone", "client-public", "client-confidential-symmetric",
            "client-confidential-asymmetric", "context-ehr-patient", "context-ehr-encounter",
            "context-standalone-patient", "context-banner", "context-style", "permission-patient",
            "permission-user",
            "permission-offline", "permission-v1", "permission-v2",
            "sso-openid-connect", "authorize-post"],
    })


# Served instead of discovery when authentication is off, so that a client asking learns why
# (the FHIR routes would take `.well-known` for a resource type).
discovery_off_router = APIRouter()


@discovery_off_router.get("/.well-known/smart-configuration")
async def smart_configuration_off() -> None:
    raise fail(Kind.NOT_FOUND, "not-found",
               "SMART discovery is off: this server runs without authentication (auth=off, "
               "--no-auth), so there is no authorization server and no token is needed.")


@auth_router.get("/.well-known/openid-configuration")
async def openid_configuration(request: Request) -> JSONResponse:
    """OpenID Connect discovery for the issuer `<origin>/auth` (the id_tokens' `iss`)."""
    settings: Settings = request.app.state.settings
    auth = settings.auth_url
    return JSONResponse({
        "issuer": auth,
        "authorization_endpoint": f"{auth}/authorize",
        "token_endpoint": f"{auth}/token",
        "jwks_uri": f"{auth}/jwks",
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "fhirUser"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nonce", "fhirUser"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": TOKEN_ENDPOINT_AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGORITHMS,
    })


@auth_router.post("/launch", dependencies=[Depends(authenticate)])
async def register_launch(request: Request) -> Response:
    """EHR launch, first step: the EHR (a backend client that may read Patients) names the
    patient it opens an app on (and optionally the `encounter`, the `fhirContext` resources,
    `need_patient_banner`: auth/launch.py) and gets the opaque `launch` to pass to the app.
    The caller is authenticated as for the FHIR API (401 otherwise)."""
    principal: Principal = request.state.principal
    if not principal.grant.allows("read", "Patient", ("system",)):
        return _json(403, {"error": "insufficient_scope",
                           "error_description": "Launching needs system/Patient.r."})
    body = await request.body()
    try:
        if len(body) > _MAX_FORM_BYTES:
            raise ValueError("The launch request is too large.")
        context = parse_launch(orjson.loads(body))
    except (orjson.JSONDecodeError, ValueError) as exc:
        return _json(400, {"error": "invalid_request", "error_description": str(exc)})
    launch = secrets.token_urlsafe(24)
    request.app.state.oauth.registry.put(
        "launch", launch, {"launch": context.as_dict(), "client_id": principal.client_id},
        LAUNCH_LIFETIME)
    return _json(200, {"launch": launch, "expires_in": LAUNCH_LIFETIME})


@auth_router.get(f"/{STYLE_DOCUMENT}")
async def smart_style() -> JSONResponse:
    """SMART's style document (`smart_style_url`): the colours and fonts of the portal, for
    apps that want to look like it."""
    return JSONResponse(SMART_STYLE, headers={"Cache-Control": "public, max-age=86400"})


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
    """The token endpoint; every request to it, granted or refused, is audited."""
    response = await _answer(request, request.app.state.oauth.token)
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    ids = form.get("client_id")
    client_id = ids[0] if ids else _assertion_subject(form)
    await request.app.state.recorder.record(security_event(
        kind="token", status=response.status_code, recorded=clock.instant(),
        who=client_id or "unknown client", client_id=client_id,
        address=request.client.host if request.client else None))
    return response


def _assertion_subject(form: dict[str, list[str]]) -> str | None:
    """The client a client assertion names (unverified: for the audit record only)."""
    assertion = (form.get("client_assertion") or [""])[0]
    subject = peek(assertion)[1].get("sub") if assertion else None
    return subject if isinstance(subject, str) else None


@auth_router.post("/introspect")
async def introspect(request: Request) -> Response:
    return await _answer(request, request.app.state.oauth.introspect)


@auth_router.post("/revoke")
async def revoke(request: Request) -> Response:
    return await _answer(request, request.app.state.oauth.revoke)
