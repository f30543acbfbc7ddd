"""The sign-in, second-factor and consent pages in real Chromium (Debian's package, driven by
Playwright), against a real server process: a patient launches the portal app standalone and
the app ends up with a token for her record."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2 as httpx
import pyotp
import pytest
from playwright.sync_api import Browser, Page, Route

from fhir_server.auth.registry import Registry as AuthRegistry
from fhir_server.auth.users import Users
from tests.builders import patient
from tests.e2e.conftest import Server

REDIRECT = "https://portal.example.org/callback"
SCOPE = "openid fhirUser launch/patient patient/*.rs offline_access"
PASSWORD = "correct horse battery staple"
@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path, workers=1)
    registry = AuthRegistry(tmp_path / "auth.db")
    registry.add_app("portal", SCOPE, [REDIRECT])
    Users(registry).add("helene", PASSWORD, "Patient/helene")
    with running.client() as http:
        body = {**patient(), "id": "helene"}
        assert http.put("/Patient/helene", json=body,
                        headers={"Content-Type": "application/fhir+json"}).status_code == 201
    yield running
    running.stop()


def _authorize_url(server: Server, verifier: str, lang: str) -> str:
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return f"{server.base}/auth/authorize?" + urlencode({
        "response_type": "code", "client_id": "portal", "redirect_uri": REDIRECT, "scope": SCOPE,
        "state": "st", "aud": f"{server.base}/fhir", "code_challenge": challenge,
        "code_challenge_method": "S256", "ui_locales": lang})


def _capture_redirect(page: Page) -> list[str]:
    """The app's redirect URI is not reachable here: answer it in the browser, keep the URL."""
    seen: list[str] = []

    def answer(route: Route) -> None:
        seen.append(route.request.url)
        route.fulfill(status=200, content_type="text/html", body="<p>back in the app</p>")

    page.route(f"{REDIRECT}**", answer)
    return seen


def test_patient_signs_in_enrols_totp_consents_and_the_app_gets_a_token(
    browser: Browser, server: Server, tmp_path: Path,
) -> None:
    page = browser.new_page()
    redirected = _capture_redirect(page)
    verifier = secrets.token_urlsafe(48)
    page.goto(_authorize_url(server, verifier, "fr"))
    assert page.locator("html").get_attribute("lang") == "fr"
    page.get_by_label("Identifiant").fill("helene")
    page.get_by_label("Mot de passe").fill(PASSWORD)
    page.get_by_role("button", name="Se connecter").click()
    # First login: enrolment shows the key; the authenticator app is played by pyotp.
    page.get_by_role("heading", name="Activer la double authentification").wait_for()
    secret = page.locator("#secret").inner_text()
    page.get_by_label("Code à 6 chiffres").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Vérifier").click()
    page.get_by_role("heading", name="Autoriser l'accès").wait_for()
    requested = page.locator("#requested li").all_inner_texts()
    assert "savoir qui vous êtes" in requested
    assert any("dans votre dossier" in line for line in requested)
    page.screenshot(path=str(tmp_path / "consent.png"))
    page.get_by_role("button", name="Autoriser").click()
    page.wait_for_url(f"{REDIRECT}**")
    query = parse_qs(urlsplit(redirected[-1]).query)
    assert query["state"] == ["st"]
    issued = httpx.post(f"{server.base}/auth/token", data={
        "grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": REDIRECT,
        "client_id": "portal", "code_verifier": verifier})
    assert issued.status_code == 200, issued.text
    assert issued.json()["patient"] == "helene"
    record = httpx.get(f"{server.base}/fhir/Patient/helene",
                       headers={"Authorization": f"Bearer {issued.json()['access_token']}"})
    assert record.status_code == 200


def test_wrong_password_is_announced_in_english(browser: Browser, server: Server) -> None:
    page = browser.new_page()
    page.goto(_authorize_url(server, secrets.token_urlsafe(48), "en"))
    page.get_by_label("Username").fill("helene")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    alert = page.get_by_role("alert")
    assert re.search("Wrong username or password", alert.inner_text())
    assert page.get_by_label("Username").get_attribute("aria-describedby") == "error"
