"""The e-mailed sign-in code (issue 20; auth/email_codes.py) in real Chromium, against a real
server process sending through a real SMTP server on loopback (STARTTLS): a patient without
her authenticator app asks for a code, reads it in her mailbox, and reaches the consent page."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from fhir_server.auth.registry import Registry as AuthRegistry
from fhir_server.auth.users import Users
from tests.browser.test_login_pages import PASSWORD, REDIRECT, SCOPE, _authorize_url
from tests.e2e.conftest import Server
from tests.notify.mail import SmtpServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Server, SmtpServer]]:
    data = tmp_path / "data"
    data.mkdir()
    with SmtpServer(tmp_path) as smtp:
        running = Server(data, workers=1, env={
            "FHIR_SERVER_SMTP_HOST": "127.0.0.1", "FHIR_SERVER_SMTP_PORT": str(smtp.port),
            "FHIR_SERVER_SMTP_SENDER": "platform@oncotrials.example",
            "FHIR_SERVER_SMTP_CA_FILE": str(smtp.ca_file)})
        registry = AuthRegistry(data / "auth.db")
        registry.add_app("portal", SCOPE, [REDIRECT])
        Users(registry).add("helene", PASSWORD, "Patient/helene")
        with running.client() as http:
            body = {"resourceType": "Patient", "id": "helene",
                    "telecom": [{"system": "email", "value": "helene@example.org"}]}
            assert http.put("/Patient/helene", json=body).status_code == 201
        yield running, smtp
        running.stop()


def test_a_patient_signs_in_with_a_code_sent_by_email(
        browser: Browser, server: tuple[Server, SmtpServer], tmp_path: Path) -> None:
    running, smtp = server
    page = browser.new_page()
    page.goto(_authorize_url(running, secrets.token_urlsafe(48), "fr"))
    page.get_by_label("Identifiant").fill("helene")
    page.get_by_label("Mot de passe").fill(PASSWORD)
    page.get_by_role("button", name="Se connecter").click()
    page.get_by_role("button", name="Recevoir un code par e-mail").click()
    page.get_by_role("status").wait_for()
    assert "Un code vous a été envoyé par e-mail" in page.get_by_role("status").inner_text()
    [mail] = smtp.mailbox.received
    assert mail["X-Envelope-To"] == "helene@example.org"
    assert mail["Subject"] == "Votre code de connexion"
    code = re.search(r"\b(\d{6})\b", mail.get_content())
    assert code
    page.screenshot(path=str(tmp_path / "email-code.png"))
    page.get_by_label("Code à 6 chiffres").fill(code.group(1))
    page.get_by_role("button", name="Vérifier").click()
    page.get_by_role("heading", name="Autoriser l'accès").wait_for()
