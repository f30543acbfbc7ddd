"""Accounts (docs/privacy.md, "Accounts"): suspension stops an account's tokens at their next
use, even one verified and cached a moment before, and its codes and refresh tokens;
reinstatement lets it sign in again, what was issued before the suspension staying refused; the terms version in force is asked for once per account at sign-in,
declining goes back to the app with access_denied; each step audited; bad input changes
nothing."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server import cli
from fhir_server.app import create_app
from fhir_server.auth.users import Users
from fhir_server.settings import Settings
from tests.auth.live import (PASSWORD, REDIRECT, authorize, code_of, pending_of, redirect_error,
                             second_factor)
from tests.builders import patient
from tests.conftest import token as system_token
from tests.http.helpers import send

APP = "portal"
SCOPE = "openid fhirUser launch/patient patient/*.rs offline_access"
TERMS = "2026-12"


def _client(tmp_path: Path, **settings: Any) -> TestClient:
    app = create_app(Settings(data_dir=tmp_path, base_url="http://localhost/fhir", **settings))
    return TestClient(app)


def _setup(client: TestClient) -> Users:
    registry = client.app.state.oauth.registry  # type: ignore[attr-defined]
    registry.add_app(APP, SCOPE, [REDIRECT])
    users = Users(registry)
    users.add("helene", PASSWORD, "Patient/helene")
    admin = {"Authorization": f"Bearer {system_token(client, 'system/*.cruds')}"}
    assert send(client, "PUT", "/fhir/Patient/helene", {**patient(), "id": "helene"}, **admin).status_code == 201
    return users


@pytest.fixture
def portal(tmp_path: Path) -> Any:
    with _client(tmp_path) as client:
        yield client, _setup(client)


@pytest.fixture
def with_terms(tmp_path: Path) -> Any:
    with _client(tmp_path, terms_version=TERMS, terms_url="https://example.org/cgu") as client:
        yield client, _setup(client)


def _to_second_factor(client: TestClient, verifier: str) -> tuple[str, Any]:
    login = authorize(client, verifier, APP, SCOPE)
    pending = pending_of(login.text)
    answer = client.post("/auth/login", data={"pending": pending, "username": "helene",
                                              "password": PASSWORD})
    return pending, answer


def _tokens(client: TestClient, after_totp: Any, pending: str, verifier: str) -> dict[str, Any]:
    assert 'action="consent"' in after_totp.text, after_totp.text
    code = code_of(client.post("/auth/consent", data={"pending": pending, "decision": "approve"},
                               follow_redirects=False))
    issued = client.post("/auth/token", data={"grant_type": "authorization_code", "code": code,
                                              "redirect_uri": REDIRECT, "client_id": APP,
                                              "code_verifier": verifier})
    assert issued.status_code == 200, issued.text
    return issued.json()  # type: ignore[no-any-return]


def _sign_in(client: TestClient) -> dict[str, Any]:
    verifier = secrets.token_urlsafe(48)
    pending, answer = _to_second_factor(client, verifier)
    return _tokens(client, second_factor(client, pending, "helene", answer.text), pending, verifier)


def _events(client: TestClient, subtype: str) -> list[dict[str, Any]]:
    admin = {"Authorization": f"Bearer {system_token(client, 'system/*.cruds')}"}
    found = client.get("/fhir/AuditEvent?_count=500", headers=admin).json().get("entry", [])
    return [e["resource"] for e in found if e["resource"]["subtype"][0]["code"] == subtype]


def test_a_suspension_stops_the_tokens_at_once(portal: Any) -> None:
    client, users = portal
    issued = _sign_in(client)
    headers = {"Authorization": f"Bearer {issued['access_token']}"}
    assert client.get("/fhir/Patient/helene", headers=headers).status_code == 200  # now cached
    users.set_suspended("helene", True)
    refused = client.get("/fhir/Patient/helene", headers=headers)
    assert refused.status_code == 401 and "suspended" in refused.text
    assert refused.json()["resourceType"] == "OperationOutcome"
    refresh = {"grant_type": "refresh_token", "client_id": APP, "refresh_token": issued["refresh_token"]}
    assert client.post("/auth/token", data=refresh).json()["error"] == "invalid_grant"
    # Signing in again: stopped after the password, told why.
    pending, answer = _to_second_factor(client, secrets.token_urlsafe(48))
    assert answer.status_code == 403 and "suspendu" in answer.text
    assert [e["outcome"] for e in _events(client, "110122")][-1] == "4"



def test_reinstatement_does_not_revive_what_was_issued_before_the_suspension(portal: Any) -> None:
    """A suspension for a stolen session ends that session for good: reinstated, the account
    signs in again, and its tokens and refresh tokens from before stay refused."""
    client, users = portal
    issued = _sign_in(client)
    headers = {"Authorization": f"Bearer {issued['access_token']}"}
    refresh = {"grant_type": "refresh_token", "client_id": APP, "refresh_token": issued["refresh_token"]}
    users.set_suspended("helene", True)
    users.set_suspended("helene", False)
    refused = client.get("/fhir/Patient/helene", headers=headers)
    assert refused.status_code == 401 and "suspension" in refused.text
    refreshed = client.post("/auth/token", data=refresh)
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"
    # Nor when the account is re-created.
    users.add("helene", PASSWORD, "Patient/helene")
    assert client.get("/fhir/Patient/helene", headers=headers).status_code == 401
    time.sleep(1)  # access tokens tell the second they were issued (iat), no finer
    again = _sign_in(client)
    assert client.get("/fhir/Patient/helene", headers={
        "Authorization": f"Bearer {again['access_token']}"}).status_code == 200
    assert client.post("/auth/token", data={**refresh, "refresh_token": again["refresh_token"]}
                       ).status_code == 200


def test_a_code_issued_before_the_suspension_gives_no_token(portal: Any) -> None:
    client, users = portal
    verifier = secrets.token_urlsafe(48)
    pending, answer = _to_second_factor(client, verifier)
    second_factor(client, pending, "helene", answer.text)
    code = code_of(client.post("/auth/consent", data={"pending": pending, "decision": "approve"},
                               follow_redirects=False))
    users.set_suspended("helene", True)
    exchanged = client.post("/auth/token", data={"grant_type": "authorization_code", "code": code,
                                                 "redirect_uri": REDIRECT, "client_id": APP,
                                                 "code_verifier": verifier})
    assert exchanged.status_code == 400 and exchanged.json()["error"] == "invalid_grant"


def test_replacing_an_account_keeps_its_suspension(portal: Any) -> None:
    _, users = portal
    users.set_suspended("helene", True)
    users.add("helene", PASSWORD, "Patient/helene")
    assert users.get("helene").suspended


def test_the_terms_in_force_are_asked_for_once(with_terms: Any) -> None:
    client, users = with_terms
    verifier = secrets.token_urlsafe(48)
    pending, answer = _to_second_factor(client, verifier)
    terms = second_factor(client, pending, "helene", answer.text)
    assert terms.status_code == 200 and "version 2026-12" in terms.text
    assert 'href="https://example.org/cgu"' in terms.text
    declined = client.post("/auth/terms", data={"pending": pending, "decision": "decline"},
                           follow_redirects=False)
    assert redirect_error(declined) == "access_denied"
    assert users.accepted_terms("helene") == {}
    # Again, and accepted: on to the consent page, and a token.
    verifier = secrets.token_urlsafe(48)
    pending, answer = _to_second_factor(client, verifier)
    second_factor(client, pending, "helene", answer.text)
    accepted = client.post("/auth/terms", data={"pending": pending, "decision": "accept"})
    _tokens(client, accepted, pending, verifier)
    assert list(users.accepted_terms("helene")) == [TERMS]
    [event] = _events(client, "110137")
    assert event["agent"][0]["who"] == {"reference": "Patient/helene"}
    assert event["entity"][0]["detail"] == [{"type": "version", "valueString": TERMS}]


def test_an_accepted_version_is_not_asked_again(with_terms: Any) -> None:
    client, users = with_terms
    users.accept_terms("helene", TERMS, 1.0)
    _sign_in(client)  # straight to the consent page


def test_a_new_version_is_asked_for_again(with_terms: Any) -> None:
    client, users = with_terms
    users.accept_terms("helene", "2026-06", 1.0)
    verifier = secrets.token_urlsafe(48)
    pending, answer = _to_second_factor(client, verifier)
    assert "version 2026-12" in second_factor(client, pending, "helene", answer.text).text


def test_a_refresh_token_from_before_the_terms_gives_nothing_until_they_are_accepted(
        tmp_path: Path) -> None:
    """The terms are accepted before any access: a refresh token issued before their version
    came in force sends the app back through sign-in (invalid_grant), where they are shown."""
    with _client(tmp_path) as client:
        users = _setup(client)
        issued = _sign_in(client)
    refresh = {"grant_type": "refresh_token", "client_id": APP, "refresh_token": issued["refresh_token"]}
    with _client(tmp_path, terms_version=TERMS) as client:
        refused = client.post("/auth/token", data=refresh)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"] == "invalid_grant" and "terms" in refused.text
        assert users.accepted_terms("helene") == {}
        users.accept_terms("helene", TERMS, 1.0)
        assert client.post("/auth/token", data=refresh).status_code == 200


def test_the_terms_form_is_only_for_its_stage(with_terms: Any) -> None:
    """Posting the terms form out of turn (before the second factor) accepts nothing."""
    client, users = with_terms
    pending, _ = _to_second_factor(client, secrets.token_urlsafe(48))
    early = client.post("/auth/terms", data={"pending": pending, "decision": "accept"})
    assert early.status_code == 400 and users.accepted_terms("helene") == {}


@pytest.mark.parametrize("later", [{}, {"terms_version": "2027-01"}])
def test_terms_changed_while_the_page_was_shown(tmp_path: Path, later: dict[str, str]) -> None:
    """The server restarted between showing the terms and their acceptance: with no terms in
    force any more, nothing is recorded and the sign-in goes on; with another version, that
    version is shown, the one displayed is never recorded as accepted in its place."""
    verifier = secrets.token_urlsafe(48)
    with _client(tmp_path, terms_version=TERMS) as client:
        users = _setup(client)
        pending, answer = _to_second_factor(client, verifier)
        assert 'action="terms"' in second_factor(client, pending, "helene", answer.text).text
        cookies = dict(client.cookies)
    with _client(tmp_path, **later) as client:
        client.cookies.update(cookies)
        answer = client.post("/auth/terms", data={"pending": pending, "decision": "accept"})
        assert answer.status_code == 200, answer.text
        assert users.accepted_terms("helene") == {}
        if later:
            assert 'action="terms"' in answer.text and "version 2027-01" in answer.text
            answer = client.post("/auth/terms", data={"pending": pending, "decision": "accept"})
            assert list(users.accepted_terms("helene")) == ["2027-01"]
        _tokens(client, answer, pending, verifier)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(["user", *argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_the_commands_suspend_reinstate_and_show(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str],
                                                 signing_keys: bytes) -> None:
    monkeypatch.setenv("FHIR_SERVER_DATA_DIR", str(tmp_path))
    (tmp_path / "signing-keys.json").write_bytes(signing_keys)
    with _client(tmp_path) as client:
        users = _setup(client)
        users.accept_terms("helene", TERMS, 1_796_000_000.0)
        assert _cli(capsys, "suspend", "helene", "--reason", " ")[0] == 2  # a reason is required
        assert not users.get("helene").suspended
        code, out = _cli(capsys, "suspend", "helene", "--reason", "account shared")
        assert code == 0 and users.get("helene").suspended, out
        assert _cli(capsys, "suspend", "helene", "--reason", "again")[0] == 2
        code, out = _cli(capsys, "show", "helene")
        assert code == 0 and "suspended" in out and f"accepted the terms version {TERMS} on 2026-" in out
        assert _cli(capsys, "reinstate", "helene")[0] == 0 and not users.get("helene").suspended
        assert _cli(capsys, "reinstate", "helene")[0] == 2
        for argv in (("suspend", "nobody", "--reason", "x"), ("reinstate", "nobody"), ("show", "nobody")):
            code, out = _cli(capsys, *argv)
            assert code == 2 and "no user 'nobody'" in out
        events = _events(client, "110137")
        assert [e["agent"][0]["altId"] for e in events] == ["fhir-server user suspend",
                                                            "fhir-server user reinstate"]
        assert {"type": "reason", "valueString": "account shared"} in events[0]["entity"][0]["detail"]
