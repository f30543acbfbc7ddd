"""The authorization endpoint of SMART App Launch and the pages a person goes through:
sign in, second factor (enrolment the first time), consent; then back to the app with a code.

The authorization request is validated first (client, redirect URI, response type, PKCE S256,
and `aud`, which must be this server's FHIR base URL), and kept server-side while the person
goes through the pages, under a random id that travels both in an HttpOnly cookie and in the
forms: a page posted from elsewhere does not carry the cookie's value (CSRF).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from authlib.oauth2.rfc6749 import AccessDeniedError, InvalidRequestError, OAuth2Error
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ..audit.events import security_event
from ..auth.pages import TEXT, describe, language, render
from ..auth.server import FormRequest, Grantee, SmartAuthorizationServer
from ..auth.users import Locked, User, Users
from ..services.launch_context import openable, patients_for
from ..settings import Settings
from .. import clock
from .auth import context_of

login_router = APIRouter()

COOKIE = "fhir_login"
_PENDING_SECONDS = 600
_MAX_FORM_BYTES = 16 * 1024
_CSP = ("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'{targets}; "
        "frame-ancestors 'none'")


def _page(template: str, lang: str, status: int = 200, *, redirect_to: str | None = None,
          **values: Any) -> HTMLResponse:
    """A page; `redirect_to` is where its form's answer may redirect (browsers apply CSP
    form-action to the redirect after a form is posted, so the app's origin must be named)."""
    origin = ""
    if redirect_to:
        parts = urlsplit(redirect_to)
        origin = f" {parts.scheme}://{parts.netloc}"
    headers = {"Cache-Control": "no-store", "X-Frame-Options": "DENY",
               "Content-Security-Policy": _CSP.format(targets=origin)}
    return HTMLResponse(render(template, lang, **values), status_code=status, headers=headers)


def _message(lang: str, key: str, status: int, **fields: Any) -> HTMLResponse:
    t = TEXT[lang]
    return _page("message.html", lang, status, title=t["login_title"],
                 message=t[key].format(**fields))


async def _read_form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > _MAX_FORM_BYTES:
        return {}
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


def _oauth_request(settings: Settings, request: Request, params: dict[str, list[str]]) -> FormRequest:
    return FormRequest(f"{settings.auth_url}/authorize", request.headers, params, method="GET")


@login_router.api_route("/authorize", methods=["GET", "POST"])
async def authorize(request: Request) -> Response:
    """Validate an authorization request (GET, or POST: SMART `authorize-post`), then ask the
    person to sign in."""
    settings: Settings = request.app.state.settings
    oauth: SmartAuthorizationServer = request.app.state.oauth
    if request.method == "POST":
        params = parse_qs((await request.body())[:_MAX_FORM_BYTES].decode("utf-8", "replace"))
    else:
        params = parse_qs(request.url.query)
    single = {k: v[0] for k, v in params.items()}
    lang = language(single.get("ui_locales"), request.headers.get("accept-language"))
    try:
        oauth_request = _oauth_request(settings, request, params)
        grant = await run_in_threadpool(oauth.get_consent_grant, oauth_request, None)
    except OAuth2Error as exc:
        return _refuse(lang, exc)
    target = grant.redirect_uri  # verified: registered for this client
    if not single.get("state"):
        # SMART App Launch 2.2: `state` is required (the app's defence against CSRF).
        return _refuse(lang, InvalidRequestError("state is required.", redirect_uri=target))
    if single.get("aud", "").rstrip("/") != settings.base_url.rstrip("/"):
        # SMART: a token for another server must never be issued; tell the app.
        return _refuse(lang, InvalidRequestError("aud is not this FHIR server.",
                                                 state=single["state"], redirect_uri=target))
    launch_patient = None
    if "launch" in single:  # EHR launch: the context the EHR registered (POST /auth/launch)
        context = oauth.registry.get("launch", single["launch"])
        if context is None:
            return _refuse(lang, InvalidRequestError(
                "Unknown or expired launch.", state=single.get("state"),
                redirect_uri=single.get("redirect_uri")))
        launch_patient = context["patient"]
        oauth.registry.forget("launch", single["launch"])  # a launch opens one session only
    pending = secrets.token_urlsafe(24)
    oauth.registry.put("pending", pending, {"params": params, "stage": "login", "lang": lang,
                                            "launch_patient": launch_patient}, _PENDING_SECONDS)
    t = TEXT[lang]
    response = _page("login.html", lang, title=t["login_title"], client_id=single["client_id"],
                     pending=pending, action="login")
    response.set_cookie(COOKIE, pending, max_age=_PENDING_SECONDS, httponly=True,
                        samesite="lax", secure=settings.auth_url.startswith("https:"),
                        path="/auth")
    return response


def _refuse(lang: str, exc: OAuth2Error) -> Response:
    """An invalid request: back to the app when its redirect URI is known and valid, else a
    page (RFC 6749 section 4.1.2.1: never redirect to an unverified URI)."""
    target = getattr(exc, "redirect_uri", None)
    if target:
        error = {"error": exc.error, "error_description": exc.description or ""}
        if getattr(exc, "state", None):
            error["state"] = exc.state
        return RedirectResponse(f"{target}{'&' if '?' in target else '?'}{urlencode(error)}", 302)
    return _message(lang, "invalid", 400, why=exc.description or exc.error)


@dataclass(frozen=True, slots=True)
class _Step:
    """A form of a login in progress: what was posted, the login's id, state and language."""

    form: dict[str, str]
    pending: str
    data: dict[str, Any]
    lang: str


async def _step(request: Request, stage: str) -> _Step | HTMLResponse:
    """The login in progress a form belongs to, if its id matches the cookie and it is at
    `stage`; otherwise the page saying the request expired."""
    form = await _read_form(request)
    cookie = request.cookies.get(COOKIE, "")
    posted = form.get("pending", "")
    data = None
    if cookie and secrets.compare_digest(cookie, posted):
        data = request.app.state.oauth.registry.get("pending", posted)
    if data is None or data["stage"] != stage:
        return _message(language(None, request.headers.get("accept-language")), "expired", 400)
    return _Step(form, posted, data, data["lang"])


@login_router.post("/login")
async def login(request: Request) -> Response:
    step = await _step(request, "login")
    if isinstance(step, HTMLResponse):
        return step
    form, pending, data, lang = step.form, step.pending, step.data, step.lang
    t = TEXT[lang]
    users = Users(request.app.state.oauth.registry)
    client_id = data["params"]["client_id"][0]
    username = form.get("username", "")
    try:
        user = await run_in_threadpool(users.check_password, username, form.get("password", ""))
    except Locked as locked:
        await _audit_login(request, 429, username, client_id)
        return _page("login.html", lang, 429, title=t["login_title"], client_id=client_id,
                     pending=pending, action="login",
                     error=t["locked"].format(seconds=int(locked.seconds) + 1))
    await _audit_login(request, 200 if user else 401, username, client_id,
                       user.fhir_user if user else None)
    if user is None:
        return _page("login.html", lang, 401, title=t["login_title"], client_id=client_id,
                     pending=pending, action="login", error=t["bad_login"])
    data.update(stage="totp", username=user.username, fhir_user=user.fhir_user)
    request.app.state.oauth.registry.update("pending", pending, data)
    return _totp_page(users, user.username, user.totp_enrolled, lang, pending)


async def _audit_login(request: Request, status: int, username: str, client_id: str,
                       fhir_user: str | None = None) -> None:
    """Each password attempt, successful or not, is audited (BALP security event)."""
    await request.app.state.recorder.record(security_event(
        kind="login", status=status, recorded=clock.instant(), who=username or "(empty)",
        client_id=client_id, address=request.client.host if request.client else None,
        fhir_user=fhir_user))


def _totp_page(users: Users, username: str, enrolled: bool, lang: str, pending: str,
               error: str | None = None, status: int = 200) -> HTMLResponse:
    t = TEXT[lang]
    if enrolled:
        return _page("totp.html", lang, status, title=t["totp_title"], pending=pending,
                     action="totp", error=error)
    return _page("totp.html", lang, status, title=t["enrol_title"], pending=pending,
                 action="totp", error=error, secret=users.totp_secret(username),
                 uri=users.provisioning_uri(username))


@login_router.post("/totp")
async def totp(request: Request) -> Response:
    step = await _step(request, "totp")
    if isinstance(step, HTMLResponse):
        return step
    form, pending, data, lang = step.form, step.pending, step.data, step.lang
    t = TEXT[lang]
    users = Users(request.app.state.oauth.registry)
    user = users.get(data["username"])
    assert user is not None
    try:
        ok = await run_in_threadpool(users.check_code, user.username, form.get("code", ""))
    except Locked as locked:
        return _message(lang, "locked", 429, seconds=int(locked.seconds) + 1)
    if not ok:
        return _totp_page(users, user.username, user.totp_enrolled, lang, pending,
                          error=t["bad_code"], status=401)
    launch_patient = data.get("launch_patient")
    if launch_patient and not await _may_open(request, user, launch_patient):
        # A launch names a patient this user may not reach (not themself, no consent in force).
        oauth_request = _oauth_request(request.app.state.settings, request, data["params"])
        request.app.state.oauth.registry.forget("pending", pending)
        return _refuse(lang, AccessDeniedError(
            "This user may not open the launched patient's record.",
            state=oauth_request.payload.data.get("state"),
            redirect_uri=oauth_request.payload.data.get("redirect_uri")))
    scope = data["params"].get("scope", [""])[0].split()
    if "launch/patient" in scope and user.patient is None and not launch_patient:
        # A practitioner's or representative's standalone launch: the patient is picked among
        # those who consented, or those represented.
        choices = await patients_for(context_of(request), user.fhir_user)
        data.update(stage="pick", choices=[c.id for c in choices])
        request.app.state.oauth.registry.update("pending", pending, data)
        return _page("pick.html", lang, title=t["pick_title"], pending=pending, action="pick",
                     choices=choices)
    return _to_consent(request, pending, data)


async def _may_open(request: Request, user: User, patient: str) -> bool:
    """Whether `user` may have `patient` in context: a patient only themself, a practitioner
    a patient whose consent in force names them, a representative a patient represented."""
    return patient in await openable(context_of(request), user.fhir_user)


@login_router.post("/pick")
async def pick(request: Request) -> Response:
    step = await _step(request, "pick")
    if isinstance(step, HTMLResponse):
        return step
    chosen = step.form.get("patient", "")
    if chosen not in step.data["choices"]:
        return _message(step.lang, "expired", 400)
    step.data["launch_patient"] = chosen
    return _to_consent(request, step.pending, step.data)


def _to_consent(request: Request, pending: str, data: dict[str, Any]) -> HTMLResponse:
    """The consent page, last step before going back to the app."""
    lang = data["lang"]
    data["stage"] = "consent"
    registry = request.app.state.oauth.registry
    registry.update("pending", pending, data)
    client_id = data["params"]["client_id"][0]
    client = registry.client(client_id)
    redirect = data["params"].get("redirect_uri", [None])[0] or (
        client.redirect_uris[0] if client and client.redirect_uris else None)
    return _page("consent.html", lang, title=TEXT[lang]["consent_title"], client_id=client_id,
                 pending=pending, action="consent",
                 requested=describe(data["params"].get("scope", [""])[0], lang),
                 redirect_to=redirect)


@login_router.post("/consent")
async def consent(request: Request) -> Response:
    """Approve: back to the app with a code; deny: back with `access_denied`."""
    step = await _step(request, "consent")
    if isinstance(step, HTMLResponse):
        return step
    form, pending, data = step.form, step.pending, step.data
    oauth: SmartAuthorizationServer = request.app.state.oauth
    oauth.registry.forget("pending", pending)
    settings: Settings = request.app.state.settings
    params = data["params"]
    grantee = Grantee(data["username"], data["fhir_user"], params.get("nonce", [None])[0],
                      data.get("launch_patient"))
    approved = grantee if form.get("decision") == "approve" else None

    def answer() -> tuple[int, Any, Any]:
        oauth_request = _oauth_request(settings, request, params)
        grant = oauth.get_consent_grant(oauth_request, approved)
        return oauth.create_authorization_response(oauth_request, approved, grant)  # type: ignore[no-any-return]

    status, _, headers = await run_in_threadpool(answer)
    location = dict(headers).get("Location", "")
    response = RedirectResponse(location, status_code=302 if status == 302 else status)
    response.delete_cookie(COOKIE, path="/auth")
    return response
