"""The sign-in of a person for an app (SMART App Launch, authorization code): the states a
login goes through and what each answers. The HTTP layer (http/login_routes.py) only parses
requests and renders what this module returns.

    authorize -> login (password) -> totp (second factor; enrolment the first time; or a
              code sent by e-mail: auth/email_codes.py)
              -> [terms: the version in force, once per account] -> [pick: a practitioner's,
              representative's or relative's patient] -> consent -> code

A suspended account is stopped after its password (it cannot sign in, and its codes and
refresh tokens give no token: grants.py). When the platform's terms have a version in force
(`Terms`), an account that has not accepted that version is asked to, and goes on only once
it does; the acceptance is kept with the account (users.py) and audited.

The authorization request is validated first (client, redirect URI, response type, PKCE S256,
`state`, and `aud`, which must be this server's FHIR base URL), then kept server-side while
the person goes through the pages, under a random id that travels both in an HttpOnly cookie
and in the forms: a page posted from elsewhere does not carry the cookie's value (CSRF).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlencode

from anyio import to_thread

from .. import clock
from authlib.oauth2.rfc6749 import AccessDeniedError, InvalidRequestError, OAuth2Error

from .launch import LaunchContext
from .pages import TEXT, describe, language
from . import email_codes
from .clients import FormRequest
from .grants import Grantee
from .server import SmartAuthorizationServer
from .users import Locked, User, Users

PENDING_SECONDS = 600


@dataclass(frozen=True, slots=True)
class Page:
    """A page to show: a template with its values; `session` starts the login cookie;
    `redirect_to` is where the page's form may lead (the app, after consent)."""

    template: str
    lang: str
    status: int = 200
    values: dict[str, Any] = field(default_factory=dict)
    redirect_to: str | None = None
    session: str | None = None


@dataclass(frozen=True, slots=True)
class Redirect:
    """Back to the app (with a code or an error); `ends_session` clears the login cookie."""

    location: str
    ends_session: bool = False


Answer = Page | Redirect


class Choice(Protocol):
    """A patient the picker offers."""

    @property
    def id(self) -> str: ...

    @property
    def label(self) -> str: ...


class Reach(Protocol):
    """Which patients a user may have in context (services/launch_context.py)."""

    async def openable(self, fhir_user: str) -> Sequence[str]: ...

    async def choices(self, fhir_user: str) -> Sequence[Choice]: ...


# Records a password attempt: status (200, 401, 403, 429), username, client id, FHIR user.
LoginAudit = Callable[[int, str, str, str | None], Awaitable[None]]
# Records the acceptance of the terms: username, client id, FHIR user, version.
TermsAudit = Callable[[str, str, str, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Terms:
    """The version of the platform's terms in force, and where they are published."""

    version: str
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Login:
    """A login in progress, as stored under its id."""

    id: str
    data: dict[str, Any]

    @property
    def lang(self) -> str:
        return str(self.data["lang"])

    @property
    def client_id(self) -> str:
        return str(self.data["params"]["client_id"][0])

    @property
    def param(self) -> dict[str, str]:
        return {k: v[0] for k, v in self.data["params"].items() if v}


class LoginFlow:
    """The login state machine over the authorization server's registry."""

    def __init__(self, oauth: SmartAuthorizationServer, *, base_url: str, authorize_url: str,
                 reach: Reach, audit: LoginAudit, terms: Terms | None = None,
                 terms_audit: TermsAudit | None = None,
                 send_code: email_codes.SendCode | None = None) -> None:
        self.oauth = oauth
        self.send_code = send_code  # None: no e-mail codes (no SMTP relay configured)
        self.registry = oauth.registry
        self.users = Users(oauth.registry)
        self.base_url = base_url.rstrip("/")
        self.authorize_url = authorize_url
        self.reach = reach
        self.audit = audit
        self.terms = terms
        self.terms_audit = terms_audit

    def _request(self, params: dict[str, list[str]]) -> FormRequest:
        return FormRequest(self.authorize_url, {}, params, method="GET")

    async def start(self, params: dict[str, list[str]], accept_language: str | None) -> Answer:
        """An authorization request: refused (back to the app if its redirect URI is verified),
        or the sign-in page of a new login."""
        single = {k: v[0] for k, v in params.items() if v}
        lang = language(single.get("ui_locales"), accept_language)
        try:
            grant = await to_thread.run_sync(self.oauth.get_consent_grant, self._request(params),
                                             None)
        except OAuth2Error as exc:
            return refusal(lang, exc)
        target = grant.redirect_uri  # verified: registered for this client
        if not single.get("state"):
            # SMART App Launch 2.2: `state` is required (the app's defence against CSRF).
            return refusal(lang, InvalidRequestError("state is required.", redirect_uri=target))
        if single.get("aud", "").rstrip("/") != self.base_url:
            # SMART: a token for another server must never be issued; tell the app.
            return refusal(lang, InvalidRequestError(
                "aud is not this FHIR server.", state=single["state"], redirect_uri=target))
        launch = None
        if "launch" in single:  # EHR launch: the context the EHR registered (POST /auth/launch)
            record = self.registry.get("launch", single["launch"])
            if record is None:
                return refusal(lang, InvalidRequestError(
                    "Unknown or expired launch.", state=single["state"], redirect_uri=target))
            launch = LaunchContext.from_record(record)
            self.registry.forget("launch", single["launch"])  # a launch opens one session only
        login = secrets.token_urlsafe(24)
        self.registry.put("pending", login, {
            "params": params, "stage": "login", "lang": lang,
            "launch": launch.as_dict() if launch else None}, PENDING_SECONDS)
        return Page("login.html", lang, values={
            "title": TEXT[lang]["login_title"], "client_id": single["client_id"],
            "pending": login, "action": "login"}, session=login)

    def resume(self, cookie: str, form: dict[str, str], stage: str,
               accept_language: str | None) -> Login | Page:
        """The login a form belongs to, if its id matches the cookie and it is at `stage`;
        otherwise the page saying the request expired."""
        posted = form.get("pending", "")
        data = None
        if cookie and secrets.compare_digest(cookie, posted):
            data = self.registry.get("pending", posted)
        if data is None or data["stage"] != stage:
            return message(language(None, accept_language), "expired", 400)
        return Login(posted, data)

    def _save(self, login: Login, **changes: Any) -> None:
        login.data.update(changes)
        self.registry.update("pending", login.id, login.data)

    async def password(self, login: Login, username: str, password: str) -> Answer:
        """The sign-in form: on to the second factor, or the form again."""
        t = TEXT[login.lang]
        again = {"title": t["login_title"], "client_id": login.client_id, "pending": login.id,
                 "action": "login"}
        try:
            user = await to_thread.run_sync(self.users.check_password, username, password)
        except Locked as locked:
            await self.audit(429, username, login.client_id, None)
            return Page("login.html", login.lang, 429, {
                **again, "error": t["locked"].format(seconds=int(locked.seconds) + 1)})
        status = 401 if user is None else 403 if user.suspended else 200
        await self.audit(status, username, login.client_id, user.fhir_user if user else None)
        if user is None:
            return Page("login.html", login.lang, 401, {**again, "error": t["bad_login"]})
        if user.suspended:  # told only to who knows the password
            self.registry.forget("pending", login.id)
            return message(login.lang, "suspended", 403)
        self._save(login, stage="totp", username=user.username, fhir_user=user.fhir_user)
        return self._totp_page(user, login)

    def _totp_page(self, user: User, login: Login, error: str | None = None,
                   status: int = 200, notice: str | None = None) -> Page:
        t = TEXT[login.lang]
        values = {"pending": login.id, "action": "totp", "error": error, "notice": notice,
                  "email_codes": self._may_email(user)}
        if user.totp_enrolled or user.email_factor:
            # The secret is shown only while the account has no second factor at all (its
            # first sign-in): once one is proven, the password alone must not reveal it.
            return Page("totp.html", login.lang, status, {**values, "title": t["totp_title"]})
        return Page("totp.html", login.lang, status, {
            **values, "title": t["enrol_title"], "secret": self.users.totp_secret(user.username),
            "uri": self.users.provisioning_uri(user.username)})

    def _may_email(self, user: User) -> bool:
        """Whether `user` may sign in with an e-mailed code: never an administrator, nor an
        account that enrolled TOTP (a downgrade: the address is in the directory, which
        others may edit)."""
        return self.send_code is not None and not user.admin and not user.totp_enrolled

    async def email_code(self, login: Login) -> Answer:
        """Send a one-time code to the person's e-mail address (auth/email_codes.py): the
        second-factor page again, saying so, or why not."""
        user = self.users.get(login.data["username"])
        assert user is not None
        if self.send_code is None or not self._may_email(user):
            return message(login.lang, "expired", 404)
        t = TEXT[login.lang]
        previous = login.data.get("email_code")
        if not email_codes.may_send(previous):
            return self._totp_page(user, login, t["email_wait"], 429)
        code, record = email_codes.issue(previous)
        self._save(login, email_code=record)  # counted before sending: a failed send too
        if not await self.send_code(user.fhir_user, code, email_codes.CODE_MINUTES, login.lang):
            return self._totp_page(user, login, t["email_failed"], 503)
        return self._totp_page(user, login, notice=t["email_sent"].format(
            minutes=email_codes.CODE_MINUTES))

    async def _emailed(self, login: Login, user: User, code: str) -> bool:
        """Whether `code` is the login's e-mailed code (spent if so), audited either way; a
        wrong one is then tried as a TOTP code, which counts the failure (Locked while the
        account is locked, whichever factor is tried)."""
        record = login.data.get("email_code")
        if record is None:
            return False
        await to_thread.run_sync(self.users.check_unlocked, user.username)
        right = email_codes.check(record, code)
        self._save(login, email_code=None if right else record)
        if right:
            await to_thread.run_sync(self.users.passed_emailed_code, user.username)
        await self.audit(200 if right else 401, user.username, login.client_id, user.fhir_user)
        return right

    async def second_factor(self, login: Login, code: str) -> Answer:
        """The code of the authenticator app, or the one sent by e-mail: on to the picker or
        the consent page; back to the app with `access_denied` when a launch names a patient
        this user may not open."""
        user = self.users.get(login.data["username"])
        assert user is not None
        try:
            ok = (await self._emailed(login, user, code)
                  or await to_thread.run_sync(self.users.check_code, user.username, code))
        except Locked as locked:
            return message(login.lang, "locked", 429, seconds=int(locked.seconds) + 1)
        if not ok:
            return self._totp_page(user, login, TEXT[login.lang]["bad_code"], 401)
        if self.terms is not None and self.terms.version not in self.users.accepted_terms(user.username):
            return self._terms_page(login, self.terms)
        return await self._signed_in(login, user)

    def _terms_page(self, login: Login, terms: Terms) -> Answer:
        """The terms page, the version shown kept with the login (what "I accept" accepts)."""
        self._save(login, stage="terms", terms=terms.version)
        return Page("terms.html", login.lang, values={
            "title": TEXT[login.lang]["terms_title"], "pending": login.id, "action": "terms",
            "version": terms.version, "url": terms.url}, redirect_to=self._redirect_uri(login))

    async def accept_terms(self, login: Login, accept: bool) -> Answer:
        """The terms page: accepted, on to the picker or the consent page; declined, back to
        the app with `access_denied`. The version in force may have changed since the page
        was shown (a restart with other settings): none any more, nothing is recorded; another
        one, that one is shown."""
        user = self.users.get(login.data["username"])
        assert user is not None
        if not accept:
            self.registry.forget("pending", login.id)
            return refusal(login.lang, AccessDeniedError(
                "The user did not accept the platform's terms.", state=login.param.get("state"),
                redirect_uri=self._redirect_uri(login)))
        if self.terms is None:
            return await self._signed_in(login, user)
        if login.data.get("terms") != self.terms.version:
            return self._terms_page(login, self.terms)
        self.users.accept_terms(user.username, self.terms.version, clock.seconds())
        if self.terms_audit is not None:
            await self.terms_audit(user.username, login.client_id, user.fhir_user, self.terms.version)
        return await self._signed_in(login, user)

    async def _signed_in(self, login: Login, user: User) -> Answer:
        """After the second factor (and the terms): the launched patient checked, or the
        picker, or the consent page."""
        launch = LaunchContext.from_record(login.data)
        if launch and launch.patient not in await self.reach.openable(user.fhir_user):
            # Not themself, no consent in force naming them, not represented by them.
            self.registry.forget("pending", login.id)
            return refusal(login.lang, AccessDeniedError(
                "This user may not open the launched patient's record.",
                state=login.param.get("state"), redirect_uri=self._redirect_uri(login)))
        if "launch/patient" in login.param.get("scope", "").split() and user.patient is None \
                and not launch:
            # A practitioner's, representative's or relative's standalone launch: the patient
            # is picked among those who consented, represented, or delegating.
            choices = await self.reach.choices(user.fhir_user)
            self._save(login, stage="pick", choices=[c.id for c in choices])
            return Page("pick.html", login.lang, values={
                "title": TEXT[login.lang]["pick_title"], "pending": login.id, "action": "pick",
                "choices": choices})
        return self._consent_page(login)

    def pick(self, login: Login, chosen: str) -> Answer:
        """The patient picked: one of those offered, else the request is void."""
        if chosen not in login.data["choices"]:
            return message(login.lang, "expired", 400)
        login.data["launch"] = LaunchContext(chosen).as_dict()
        return self._consent_page(login)

    def _redirect_uri(self, login: Login) -> str | None:
        client = self.registry.client(login.client_id)
        return login.param.get("redirect_uri") or (
            client.redirect_uris[0] if client and client.redirect_uris else None)

    def _consent_page(self, login: Login) -> Page:
        """The consent page, last step before going back to the app."""
        self._save(login, stage="consent")
        return Page("consent.html", login.lang, values={
            "title": TEXT[login.lang]["consent_title"], "client_id": login.client_id,
            "pending": login.id, "action": "consent",
            "requested": describe(login.param.get("scope", ""), login.lang)},
            redirect_to=self._redirect_uri(login))

    async def consent(self, login: Login, approve: bool) -> Redirect:
        """Approve: back to the app with a code; deny: back with `access_denied`."""
        self.registry.forget("pending", login.id)
        grantee = Grantee(login.data["username"], login.data["fhir_user"],
                          login.param.get("nonce"), LaunchContext.from_record(login.data))
        approved = grantee if approve else None

        def answer() -> tuple[int, Any, Any]:
            request = self._request(login.data["params"])
            grant = self.oauth.get_consent_grant(request, approved)
            return self.oauth.create_authorization_response(request, approved, grant)  # type: ignore[no-any-return]

        _, _, headers = await to_thread.run_sync(answer)
        return Redirect(dict(headers).get("Location", ""), ends_session=True)


def refusal(lang: str, exc: OAuth2Error) -> Answer:
    """An invalid request: back to the app when its redirect URI is known and valid, else a
    page (RFC 6749 section 4.1.2.1: never redirect to an unverified URI)."""
    target = getattr(exc, "redirect_uri", None)
    if target:
        error = {"error": exc.error, "error_description": exc.description or ""}
        if getattr(exc, "state", None):
            error["state"] = exc.state
        return Redirect(f"{target}{'&' if '?' in target else '?'}{urlencode(error)}")
    return message(lang, "invalid", 400, why=exc.description or exc.error)


def message(lang: str, key: str, status: int, **fields: Any) -> Page:
    t = TEXT[lang]
    return Page("message.html", lang, status, {"title": t["login_title"],
                                               "message": t[key].format(**fields)})
