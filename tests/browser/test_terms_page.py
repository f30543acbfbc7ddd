"""The terms-of-use page at sign-in in real Chromium, against a real server process whose
terms version in force the patient has not accepted yet: accepted in French, the app gets its
token; declined in English, the app gets access_denied (docs/privacy.md, "Accounts")."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx2 as httpx
import pyotp
import pytest
from playwright.sync_api import Browser, Page

from fhir_server.auth.registry import Registry as AuthRegistry
from fhir_server.auth.users import Users
from tests.browser.test_login_pages import PASSWORD, REDIRECT, SCOPE, _authorize_url, _capture_redirect
from tests.builders import patient
from tests.e2e.conftest import Server

VERSION = "2026-12"
TERMS_URL = "https://portal.example.org/cgu"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path, workers=1, env={"FHIR_SERVER_TERMS_VERSION": VERSION,
                                               "FHIR_SERVER_TERMS_URL": TERMS_URL})
    registry = AuthRegistry(tmp_path / "auth.db")
    registry.add_app("portal", SCOPE, [REDIRECT])
    Users(registry).add("helene", PASSWORD, "Patient/helene")
    with running.client() as http:
        assert http.put("/Patient/helene", json={**patient(), "id": "helene"},
                        headers={"Content-Type": "application/fhir+json"}).status_code == 201
    yield running
    running.stop()


def _to_terms(page: Page, server: Server, verifier: str, lang: str) -> None:
    labels = {"fr": ("Identifiant", "Mot de passe", "Se connecter", "Code à 6 chiffres", "Vérifier"),
              "en": ("Username", "Password", "Sign in", "6-digit code", "Verify")}[lang]
    page.goto(_authorize_url(server, verifier, lang))
    page.get_by_label(labels[0]).fill("helene")
    page.get_by_label(labels[1]).fill(PASSWORD)
    page.get_by_role("button", name=labels[2]).click()
    secret = page.locator("#secret").inner_text()
    page.get_by_label(labels[3]).fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name=labels[4]).click()


def test_new_terms_are_accepted_before_the_app_gets_a_token(browser: Browser, server: Server,
                                                            tmp_path: Path) -> None:
    page = browser.new_page()
    redirected = _capture_redirect(page)
    verifier = secrets.token_urlsafe(48)
    _to_terms(page, server, verifier, "fr")
    page.get_by_role("heading", name="Conditions d'utilisation").wait_for()
    assert "version 2026-12" in page.locator("#terms-intro").inner_text()
    assert page.get_by_role("link", name="Lire les conditions d'utilisation").get_attribute("href") == TERMS_URL
    page.screenshot(path=str(tmp_path / "terms.png"))
    page.get_by_role("button", name="J'accepte").click()
    page.get_by_role("heading", name="Autoriser l'accès").wait_for()
    page.get_by_role("button", name="Autoriser").click()
    page.wait_for_url(f"{REDIRECT}**")
    code = parse_qs(urlsplit(redirected[-1]).query)["code"][0]
    issued = httpx.post(f"{server.base}/auth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "client_id": "portal", "code_verifier": verifier})
    assert issued.status_code == 200, issued.text
    assert list(Users(AuthRegistry(tmp_path / "auth.db")).accepted_terms("helene")) == [VERSION]


def test_declined_terms_send_the_app_access_denied(browser: Browser, server: Server,
                                                   tmp_path: Path) -> None:
    page = browser.new_page()
    redirected = _capture_redirect(page)
    _to_terms(page, server, secrets.token_urlsafe(48), "en")
    page.get_by_role("heading", name="Terms of use").wait_for()
    page.get_by_role("button", name="I decline").click()
    page.wait_for_url(f"{REDIRECT}**")
    query = parse_qs(urlsplit(redirected[-1]).query)
    assert query["error"] == ["access_denied"] and query["state"] == ["st"]
    assert Users(AuthRegistry(tmp_path / "auth.db")).accepted_terms("helene") == {}
