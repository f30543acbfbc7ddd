"""The authorization endpoint over real HTTP (SMART App Launch 2.2, "Obtain authorization
code"): `state` is required; `authorize-post` works; `online_access` is not offered (no user
session to bind it to)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest

from tests.auth.live import (
    PASSWORD, REDIRECT, LiveClient, audience, authorize, challenge, code_of, live_server,
    new_user, pending_of, redirect_error, registry, second_factor, sign_in)
from tests.builders import patient
from tests.conftest import token as system_token
from tests.http.helpers import send

SCOPE = "openid fhirUser launch/patient patient/*.rs online_access offline_access"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveClient]:
    with live_server(tmp_path_factory.mktemp("authorize")) as client:
        registry(client).add_app("app", SCOPE, [REDIRECT])
        admin = {"Authorization": f"Bearer {system_token(client, 'system/*.cruds')}"}
        body = {**patient(), "id": "helene"}
        assert send(client, "PUT", "/fhir/Patient/helene", body, **admin).status_code == 201
        yield client


def test_a_request_without_state_is_sent_back(live: LiveClient) -> None:
    for state in (None, ""):
        answer = authorize(live, secrets.token_urlsafe(48), "app", SCOPE, state=state)
        assert redirect_error(answer) == "invalid_request"
        assert "state" in answer.headers["location"]  # the description names it


def test_online_access_is_neither_advertised_nor_granted(live: LiveClient) -> None:
    config = live.get("/fhir/.well-known/smart-configuration").json()
    assert "permission-online" not in config["capabilities"]
    assert "online_access" not in config["scopes_supported"]
    verifier = secrets.token_urlsafe(48)
    scope = "openid fhirUser patient/*.rs online_access"
    code = code_of(sign_in(live, verifier, "app", scope, new_user(live, "Patient/helene")))
    body = live.post("/auth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "client_id": "app", "code_verifier": verifier}).json()
    assert "online_access" not in body["scope"].split() and "refresh_token" not in body


def test_authorize_post_is_the_same_request(live: LiveClient) -> None:
    """`authorize-post`: the parameters as a form POST lead to the same sign-in, then code."""
    verifier = secrets.token_urlsafe(48)
    form = {"response_type": "code", "client_id": "app", "redirect_uri": REDIRECT,
            "scope": "openid fhirUser patient/*.rs", "state": "s-123", "aud": audience(live),
            "code_challenge": challenge(verifier), "code_challenge_method": "S256"}
    page = live.post("/auth/authorize", data=form, follow_redirects=False)
    assert page.status_code == 200 and 'name="password"' in page.text
    username = new_user(live, "Patient/helene")
    pending = pending_of(page.text)
    second = live.post("/auth/login", data={"pending": pending, "username": username,
                                            "password": PASSWORD})
    assert second_factor(live, pending, username, second.text).status_code == 200
    code = code_of(live.post("/auth/consent", data={"pending": pending, "decision": "approve"},
                             follow_redirects=False))
    answer = live.post("/auth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "client_id": "app", "code_verifier": verifier})
    assert answer.status_code == 200 and answer.json()["patient"] == "helene"
    without_state = live.post("/auth/authorize", data={**form, "state": ""},
                              follow_redirects=False)
    assert redirect_error(without_state) == "invalid_request"


@pytest.mark.parametrize("name", ["aud", "scope", "code_challenge", "launch"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_repeated_parameter_is_refused(live: LiveClient, name: str, method: str) -> None:
    """RFC 6749 §3.1: no parameter more than once (which `aud` would the app mean?)."""
    verifier = secrets.token_urlsafe(48)
    params = [("response_type", "code"), ("client_id", "app"), ("redirect_uri", REDIRECT),
              ("scope", "openid fhirUser patient/*.rs"), ("state", "s-123"),
              ("aud", audience(live)), ("code_challenge", challenge(verifier)),
              ("code_challenge_method", "S256"),
              (name, "https://evil.example.org/fhir" if name == "aud" else "x")]
    if name == "launch":  # not sent otherwise: twice
        params.append((name, "y"))
    if method == "GET":
        answer = live.get(f"/auth/authorize?{urlencode(params)}", follow_redirects=False)
    else:
        answer = live.post("/auth/authorize", content=urlencode(params), follow_redirects=False,
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 400 and name in answer.text
    assert 'name="password"' not in answer.text
