"""One-time sign-in codes by e-mail, the second factor besides TOTP (issue 20;
auth/email_codes.py): sent through a real SMTP server on loopback with STARTTLS to the
address of the person's own resource; hashed, single use, expiring, limited in attempts and
in sends; audited."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest
from fastapi.testclient import TestClient

from fhir_server import clock
from fhir_server.app import create_app
from fhir_server.auth import email_codes
from fhir_server.settings import Settings
from fhir_server.auth.users import Users
from tests.auth.live import PASSWORD, authorize, new_user, pending_of, registry
from tests.conftest import authorized
from tests.http.helpers import send
from tests.notify.mail import SmtpServer

SCOPE = "openid fhirUser patient/*.rs"
EVENTS = "https://oncotrials.example.org/fhir/CodeSystem/notification-event"


def test_a_code_is_kept_hashed_and_works_once_within_its_minutes() -> None:
    with clock.frozen(clock.now()) as now:
        code, record = email_codes.issue(None)
        assert re.fullmatch(r"\d{6}", code) and code not in repr(record)
        assert email_codes.check(record, code)
        now.advance(email_codes.CODE_MINUTES * 60 + 1)
        assert not email_codes.check(record, code)


def test_a_code_dies_after_its_wrong_attempts() -> None:
    code, record = email_codes.issue(None)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    for _ in range(email_codes.MAX_ATTEMPTS):
        assert not email_codes.check(record, wrong)
    assert not email_codes.check(record, code)


def test_sends_are_spaced_and_counted() -> None:
    with clock.frozen(clock.now()) as now:
        _, record = email_codes.issue(None)
        assert not email_codes.may_send(record)
        for _ in range(email_codes.MAX_SENDS - 1):
            now.advance(email_codes.RESEND_SECONDS)
            assert email_codes.may_send(record)
            _, record = email_codes.issue(record)
        now.advance(timedelta(hours=1).total_seconds())
        assert not email_codes.may_send(record)


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    with SmtpServer(tmp_path) as server:
        yield server


def _app(data: Path, signing_keys: bytes, **settings: Any) -> TestClient:
    data.mkdir()
    (data / "signing-keys.json").write_bytes(signing_keys)
    return TestClient(create_app(Settings(data_dir=data, base_url="http://localhost/fhir",
                                          publish_definitions=False, **settings)))


@pytest.fixture
def client(tmp_path: Path, signing_keys: bytes, smtp: SmtpServer) -> Iterator[TestClient]:
    app = _app(tmp_path / "data", signing_keys, smtp_host="127.0.0.1", smtp_port=smtp.port,
               smtp_sender="platform@oncotrials.example", smtp_ca_file=smtp.ca_file)
    with authorized(app) as client:
        registry(client).add_app("portal", SCOPE, ["https://portal.example.org/callback"])
        for id, telecom in (("helene", [{"system": "email", "value": "helene@example.org"}]),
                            ("nomail", [{"system": "phone", "value": "+33123456789"}])):
            body = {"resourceType": "Patient", "id": id, "telecom": telecom}
            assert send(client, "PUT", f"/fhir/Patient/{id}", body).status_code == 201
        yield client


def _password(client: TestClient, fhir_user: str = "Patient/helene") -> str:
    """A login past its password: its pending id."""
    pending = pending_of(authorize(client, secrets.token_urlsafe(48), "portal", SCOPE,
                                   ui_locales="en").text)
    page = client.post("/auth/login", data={"pending": pending, "username": new_user(client, fhir_user),
                                            "password": PASSWORD})
    assert page.status_code == 200 and "Get a code by e-mail" in page.text, page.text
    return pending


def _code(smtp: SmtpServer) -> str:
    found = re.search(r"\b(\d{6})\b", smtp.mailbox.received[-1].get_content())
    assert found
    return found.group(1)


def _events(client: TestClient, code: str) -> list[dict[str, Any]]:
    found = client.get(f"/fhir/AuditEvent?type={EVENTS}|{code}").json()
    return [e["resource"] for e in found.get("entry", [])]


def test_a_person_signs_in_with_a_code_sent_by_email(client: TestClient, smtp: SmtpServer) -> None:
    pending = _password(client)
    sent = client.post("/auth/email-code", data={"pending": pending})
    assert sent.status_code == 200 and "A code was sent to you by e-mail" in sent.text
    [mail] = smtp.mailbox.received
    assert mail["X-Envelope-To"] == "helene@example.org" and smtp.mailbox.encrypted == [True]
    assert mail["Subject"] == "Your sign-in code"
    code = _code(smtp)
    consent = client.post("/auth/totp", data={"pending": pending, "code": code})
    assert consent.status_code == 200 and 'action="consent"' in consent.text
    [event] = _events(client, "sent")
    assert event["entity"][0]["what"] == {"reference": "Patient/helene"}
    assert "helene@example.org" not in str(event) and code not in str(event)


def test_a_code_is_single_use_and_dies_after_wrong_attempts(client: TestClient, smtp: SmtpServer) -> None:
    first = _password(client)
    client.post("/auth/email-code", data={"pending": first})
    code = _code(smtp)
    assert client.post("/auth/totp", data={"pending": first, "code": code}).status_code == 200
    # spent: another login cannot use it
    second = _password(client)
    assert client.post("/auth/totp", data={"pending": second, "code": code}).status_code == 401
    client.post("/auth/email-code", data={"pending": second})
    code = _code(smtp)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    # each wrong code is a failure of the account (one was made above): locked at the fifth,
    # and then the right code is refused too
    for _ in range(email_codes.MAX_ATTEMPTS - 1):
        assert client.post("/auth/totp", data={"pending": second, "code": wrong}).status_code == 401
    refused = client.post("/auth/totp", data={"pending": second, "code": code})
    assert refused.status_code == 429 and "Too many failed attempts" in refused.text


def test_sends_are_rate_limited(client: TestClient, smtp: SmtpServer) -> None:
    pending = _password(client)
    assert client.post("/auth/email-code", data={"pending": pending}).status_code == 200
    again = client.post("/auth/email-code", data={"pending": pending})
    assert again.status_code == 429 and "wait a minute" in again.text
    assert len(smtp.mailbox.received) == 1


def test_no_address_or_a_failing_relay_says_so_and_sends_nothing(
        client: TestClient, smtp: SmtpServer) -> None:
    pending = _password(client, "Patient/nomail")
    failed = client.post("/auth/email-code", data={"pending": pending})
    assert failed.status_code == 503 and "could not be sent" in failed.text
    smtp.mailbox.failures = 1
    pending = _password(client)
    assert client.post("/auth/email-code", data={"pending": pending}).status_code == 503
    assert smtp.mailbox.received == []
    assert len(_events(client, "undeliverable")) == 2


def test_without_an_smtp_relay_no_code_is_offered(tmp_path: Path, signing_keys: bytes) -> None:
    with authorized(_app(tmp_path / "data", signing_keys)) as client:
        registry(client).add_app("portal", SCOPE, ["https://portal.example.org/callback"])
        pending = pending_of(authorize(client, secrets.token_urlsafe(48), "portal", SCOPE).text)
        page = client.post("/auth/login", data={"pending": pending, "password": PASSWORD,
                                                "username": new_user(client, "Patient/x")})
        assert page.status_code == 200 and "email-code" not in page.text
        assert client.post("/auth/email-code", data={"pending": pending}).status_code == 404


def _sign_in_by_email(client: TestClient, smtp: SmtpServer, username: str) -> None:
    pending = pending_of(authorize(client, secrets.token_urlsafe(48), "portal", SCOPE,
                                   ui_locales="en").text)
    client.post("/auth/login", data={"pending": pending, "username": username, "password": PASSWORD})
    client.post("/auth/email-code", data={"pending": pending})
    consent = client.post("/auth/totp", data={"pending": pending, "code": _code(smtp)})
    assert consent.status_code == 200 and 'action="consent"' in consent.text


def _past_password(client: TestClient, username: str) -> Any:
    pending = pending_of(authorize(client, secrets.token_urlsafe(48), "portal", SCOPE,
                                   ui_locales="en").text)
    page = client.post("/auth/login", data={"pending": pending, "username": username,
                                            "password": PASSWORD})
    assert page.status_code == 200, page.text
    return page


def test_after_an_emailed_code_the_password_alone_never_shows_the_totp_secret(
        client: TestClient, smtp: SmtpServer) -> None:
    """A sign-in by e-mailed code proves a second factor: later logins ask for a code, and
    the TOTP secret is not shown to whoever knows the password only."""
    username = new_user(client, "Patient/helene")
    _sign_in_by_email(client, smtp, username)
    page = _past_password(client, username)
    assert 'id="secret"' not in page.text and "otpauth" not in page.text
    assert "Get a code by e-mail" in page.text
    _sign_in_by_email(client, smtp, username)  # the e-mail factor still works


def test_a_right_emailed_code_forgives_the_failures(client: TestClient, smtp: SmtpServer) -> None:
    username = new_user(client, "Patient/helene")
    users = Users(registry(client))
    for _ in range(4):
        users.record_failure(username)
    _sign_in_by_email(client, smtp, username)
    for _ in range(4):  # five free failures again, not one
        users.record_failure(username)
    users.check_unlocked(username)


@pytest.mark.parametrize("admin", [True, False])
def test_no_emailed_code_for_administrators_or_accounts_with_totp(
        client: TestClient, smtp: SmtpServer, admin: bool) -> None:
    """E-mail is the weaker factor (the address is writable by whoever may edit the
    directory): never for an administrator, nor an account that enrolled TOTP."""
    users = Users(registry(client))
    username = f"boss-{secrets.token_hex(4)}"
    users.add(username, PASSWORD, "Practitioner/boss", admin=admin)
    if not admin:  # enrols TOTP at its first sign-in
        users.totp_secret(username)
        assert users.check_code(username, pyotp.TOTP(users.totp_secret(username)).now())
    page = _past_password(client, username)
    assert "Get a code by e-mail" not in page.text
    pending = pending_of(page.text)
    assert client.post("/auth/email-code", data={"pending": pending}).status_code == 404
    assert smtp.mailbox.received == []
