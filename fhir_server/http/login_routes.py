"""The authorization endpoint and the sign-in pages over HTTP: each route reads its form,
hands it to the login state machine (auth/login.py) and renders the answer, with the login
cookie, framing and Content-Security-Policy headers."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from .. import clock
from ..audit.events import security_event
from ..auth.login import PENDING_SECONDS, Answer, Choice, Login, LoginFlow, Page, Terms
from ..auth.pages import render
from ..services.context import Context
from ..services.launch_context import openable, patients_for
from ..settings import Settings
from .auth import context_of

login_router = APIRouter()

COOKIE = "fhir_login"
_MAX_FORM_BYTES = 16 * 1024
_CSP = ("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'{targets}; "
        "frame-ancestors 'none'")


class _Reach:
    """The patients a user may have in context, from the store (services)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def openable(self, fhir_user: str) -> list[str]:
        return await openable(self.ctx, fhir_user)

    async def choices(self, fhir_user: str) -> list[Choice]:
        return list(await patients_for(self.ctx, fhir_user))


def _flow(request: Request) -> LoginFlow:
    settings: Settings = request.app.state.settings

    async def audit(status: int, username: str, client_id: str, fhir_user: str | None) -> None:
        """Each password attempt, successful or not, is audited (BALP security event)."""
        await request.app.state.recorder.record(security_event(
            kind="login", status=status, recorded=clock.instant(), who=username or "(empty)",
            client_id=client_id, address=request.client.host if request.client else None,
            fhir_user=fhir_user))

    async def terms_audit(username: str, client_id: str, fhir_user: str, version: str) -> None:
        """The acceptance of the terms in force, by whom, for which version."""
        await request.app.state.recorder.record(security_event(
            kind="terms", status=200, recorded=clock.instant(), who=username,
            client_id=client_id, address=request.client.host if request.client else None,
            fhir_user=fhir_user, terms=version))

    terms = Terms(settings.terms_version, settings.terms_url) if settings.terms_version else None
    return LoginFlow(request.app.state.oauth, base_url=settings.base_url,
                     authorize_url=f"{settings.auth_url}/authorize",
                     reach=_Reach(context_of(request)), audit=audit, terms=terms,
                     terms_audit=terms_audit,
                     send_code=getattr(request.app.state, "sign_in_codes", None))


def _render(request: Request, answer: Answer) -> Response:
    """A page (its form may lead to `redirect_to`: browsers apply CSP form-action to the
    redirect after a form is posted, so the app's origin is named) or a redirect."""
    if not isinstance(answer, Page):
        response: Response = RedirectResponse(answer.location, 302)
        if answer.ends_session:
            response.delete_cookie(COOKIE, path="/auth")
        return response
    origin = ""
    if answer.redirect_to:
        parts = urlsplit(answer.redirect_to)
        origin = f" {parts.scheme}://{parts.netloc}"
    headers = {"Cache-Control": "no-store", "X-Frame-Options": "DENY",
               "Content-Security-Policy": _CSP.format(targets=origin)}
    response = HTMLResponse(render(answer.template, answer.lang, **answer.values),
                            status_code=answer.status, headers=headers)
    if answer.session:
        settings: Settings = request.app.state.settings
        response.set_cookie(COOKIE, answer.session, max_age=PENDING_SECONDS, httponly=True,
                            samesite="lax", secure=settings.auth_url.startswith("https:"),
                            path="/auth")
    return response


async def _read_form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > _MAX_FORM_BYTES:
        return {}
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


@login_router.api_route("/authorize", methods=["GET", "POST"])
async def authorize(request: Request) -> Response:
    """An authorization request (GET, or POST: SMART `authorize-post`)."""
    if request.method == "POST":
        params = parse_qs((await request.body())[:_MAX_FORM_BYTES].decode("utf-8", "replace"))
    else:
        params = parse_qs(request.url.query)
    return _render(request, await _flow(request).start(
        params, request.headers.get("accept-language")))


async def _resume(request: Request, stage: str) -> tuple[LoginFlow, dict[str, str], Login | Page]:
    flow = _flow(request)
    form = await _read_form(request)
    login = flow.resume(request.cookies.get(COOKIE, ""), form, stage,
                        request.headers.get("accept-language"))
    return flow, form, login


@login_router.post("/login")
async def login(request: Request) -> Response:
    flow, form, step = await _resume(request, "login")
    if isinstance(step, Page):
        return _render(request, step)
    return _render(request, await flow.password(step, form.get("username", ""),
                                                form.get("password", "")))


@login_router.post("/totp")
async def totp(request: Request) -> Response:
    flow, form, step = await _resume(request, "totp")
    if isinstance(step, Page):
        return _render(request, step)
    return _render(request, await flow.second_factor(step, form.get("code", "")))


@login_router.post("/terms")
async def terms(request: Request) -> Response:
    flow, form, step = await _resume(request, "terms")
    if isinstance(step, Page):
        return _render(request, step)
    return _render(request, await flow.accept_terms(step, form.get("decision") == "accept"))


@login_router.post("/email-code")
async def email_code(request: Request) -> Response:
    flow, _, step = await _resume(request, "totp")
    if isinstance(step, Page):
        return _render(request, step)
    return _render(request, await flow.email_code(step))


@login_router.post("/pick")
async def pick(request: Request) -> Response:
    flow, form, step = await _resume(request, "pick")
    if isinstance(step, Page):
        return _render(request, step)
    return _render(request, flow.pick(step, form.get("patient", "")))


@login_router.post("/consent")
async def consent(request: Request) -> Response:
    flow, form, step = await _resume(request, "consent")
    if isinstance(step, Page):
        return _render(request, step)
    return _render(request, await flow.consent(step, form.get("decision") == "approve"))
