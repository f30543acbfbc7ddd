"""SMART App Launch, standalone: authorization code with PKCE through the login, TOTP and
consent pages, token exchange, refresh rotation, OpenID identity; and every way it must fail."""

from __future__ import annotations

import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pyotp
import pytest
from fastapi.testclient import TestClient
from joserfc import jwt

from fhir_server.auth.users import Users
from tests.auth.live import PASSWORD, REDIRECT, authorize, challenge, code_of, pending_of, second_factor, sign_in
from tests.builders import consent, patient
from tests.conftest import token as system_token
from tests.http.helpers import send

APP = "portal"
AUD = "http://localhost/fhir"
SCOPE = "openid fhirUser launch/patient patient/*.rs offline_access"


@pytest.fixture
def portal(app_client: TestClient) -> TestClient:
    """A public app, patient Hélène (with a record) as a user, and a token for set-up."""
    registry = app_client.app.state.oauth.registry  # type: ignore[attr-defined]
    registry.add_app(APP, SCOPE + " launch user/*.rs", [REDIRECT])
    Users(registry).add("helene", PASSWORD, "Patient/helene")
    admin = {"Authorization": f"Bearer {system_token(app_client, 'system/*.cruds')}"}
    assert send(app_client, "PUT", "/fhir/Patient/helene", {**patient(), "id": "helene"}, **admin).status_code == 201
    assert send(app_client, "PUT", "/fhir/Patient/other", {**patient(family="Autre"), "id": "other"}, **admin).status_code == 201
    return app_client


def _authorize(client: TestClient, verifier: str, **overrides: str) -> Any:
    return authorize(client, verifier, APP, overrides.pop("scope", SCOPE), **overrides)


def _sign_in(client: TestClient, verifier: str, decision: str = "approve",
             username: str = "helene", **overrides: str) -> Any:
    return sign_in(client, verifier, APP, overrides.pop("scope", SCOPE), username, decision,
                   **overrides)


def _exchange(client: TestClient, code: str, verifier: str) -> Any:
    return client.post("/auth/token", data={"grant_type": "authorization_code", "code": code,
                                            "redirect_uri": REDIRECT, "client_id": APP,
                                            "code_verifier": verifier})


def test_standalone_launch_gives_patient_context_identity_and_refresh(portal: TestClient) -> None:
    verifier = secrets.token_urlsafe(48)
    code = code_of(_sign_in(portal, verifier))
    issued = _exchange(portal, code, verifier)
    assert issued.status_code == 200, issued.text
    body = issued.json()
    assert body["patient"] == "helene" and body["token_type"] == "Bearer"
    assert isinstance(body["expires_in"], int)
    assert set(body["scope"].split()) == set(SCOPE.split())  # user/ scopes are not a patient's
    keys = portal.app.state.tokens.keys.verification_keys()  # type: ignore[attr-defined]
    identity = jwt.decode(body["id_token"], keys).claims
    assert identity["fhirUser"] == f"{AUD}/Patient/helene" and identity["aud"] == APP
    assert identity["nonce"] == "n-456"
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    assert portal.get("/fhir/Patient/helene", headers=headers).status_code == 200
    assert portal.get("/fhir/Patient/other", headers=headers).status_code == 404
    # Refresh: a new pair each time; the old refresh token is spent; no widening.
    refreshed = portal.post("/auth/token", data={"grant_type": "refresh_token", "client_id": APP,
                                                 "refresh_token": body["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["refresh_token"] != body["refresh_token"]
    again = portal.post("/auth/token", data={"grant_type": "refresh_token", "client_id": APP,
                                             "refresh_token": body["refresh_token"]})
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    wider = portal.post("/auth/token", data={
        "grant_type": "refresh_token", "client_id": APP, "scope": SCOPE + " patient/*.cruds",
        "refresh_token": refreshed.json()["refresh_token"]})
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"


def test_pkce_and_code_misuse_are_refused(portal: TestClient) -> None:
    verifier = secrets.token_urlsafe(48)
    code = code_of(_sign_in(portal, verifier))
    wrong = _exchange(portal, code, secrets.token_urlsafe(48))
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    # The code is spent by the failed attempt too: a stolen code is worth one try.
    assert _exchange(portal, code, verifier).json()["error"] == "invalid_grant"
    fresh = code_of(_sign_in(portal, verifier))
    assert _exchange(portal, fresh, verifier).status_code == 200
    reused = _exchange(portal, fresh, verifier)
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(("overrides", "why"), [
    ({"code_challenge_method": "plain"}, "plain PKCE"),
    ({"code_challenge": "", "code_challenge_method": ""}, "no PKCE"),
    ({"aud": "https://other.example.org/fhir"}, "another server's audience"),
    ({"response_type": "token"}, "implicit flow"),
])
def test_bad_authorization_requests_go_back_with_an_error(portal: TestClient, overrides: dict[str, str],
                                                          why: str) -> None:
    response = _authorize(portal, secrets.token_urlsafe(48), **overrides)
    assert response.status_code == 302, why
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["error"][0] in ("invalid_request", "unsupported_response_type"), why
    assert query["state"] == ["s-123"], why


def test_unknown_redirect_uri_is_never_followed(portal: TestClient) -> None:
    response = _authorize(portal, secrets.token_urlsafe(48), redirect_uri="https://evil.example.com/cb")
    assert response.status_code == 400
    assert "evil" not in response.headers.get("location", "")
    assert "<html" in response.text


def test_denying_consent_returns_access_denied(portal: TestClient) -> None:
    response = _sign_in(portal, secrets.token_urlsafe(48), decision="deny")
    assert response.status_code == 302
    assert parse_qs(urlsplit(response.headers["location"]).query)["error"] == ["access_denied"]


def test_forms_need_the_login_cookie(portal: TestClient) -> None:
    """A form posted from another site does not carry the cookie: refused (CSRF)."""
    pending = pending_of(_authorize(portal, secrets.token_urlsafe(48)).text)
    portal.cookies.clear()
    response = portal.post("/auth/login", data={"pending": pending, "username": "helene",
                                                "password": PASSWORD})
    assert response.status_code == 400


def test_repeated_failures_lock_the_account_with_back_off(portal: TestClient) -> None:
    pending = pending_of(_authorize(portal, secrets.token_urlsafe(48)).text)
    statuses = [portal.post("/auth/login", data={"pending": pending, "username": "helene",
                                                 "password": "wrong password!"}).status_code
                for _ in range(6)]
    assert statuses[:5] == [401] * 5 and statuses[5] == 429
    locked = portal.post("/auth/login", data={"pending": pending, "username": "helene",
                                              "password": PASSWORD})
    assert locked.status_code == 429  # even the right password waits
    assert "30" in locked.text or "31" in locked.text or "6" in locked.text


def test_pages_speak_french_or_english(portal: TestClient) -> None:
    french = _authorize(portal, secrets.token_urlsafe(48), ui_locales="fr")
    assert '<html lang="fr">' in french.text and "Mot de passe" in french.text
    english = portal.get(f"/auth/authorize?{urlencode({'response_type': 'code', 'client_id': APP, 'redirect_uri': REDIRECT, 'scope': SCOPE, 'state': 's-123', 'aud': AUD, 'code_challenge': challenge('v' * 43), 'code_challenge_method': 'S256'})}",
                         headers={"Accept-Language": "en-GB,en;q=0.8"})
    assert '<html lang="en">' in english.text and "Password" in english.text
    assert english.headers["x-frame-options"] == "DENY"


def test_discovery_lists_the_launch_capabilities(portal: TestClient) -> None:
    config = portal.get("/fhir/.well-known/smart-configuration").json()
    assert config["authorization_endpoint"] == "http://localhost/auth/authorize"
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert {"launch-standalone", "launch-ehr", "client-public", "context-standalone-patient",
            "context-ehr-patient", "sso-openid-connect", "permission-offline",
            "permission-user"} <= set(config["capabilities"])
    # No encounter picker in a standalone launch: not claimed.
    assert "context-standalone-encounter" not in config["capabilities"]



def test_a_public_app_revokes_its_refresh_token(portal: TestClient) -> None:
    verifier = secrets.token_urlsafe(48)
    body = _exchange(portal, code_of(_sign_in(portal, verifier)), verifier).json()
    revoked = portal.post("/auth/revoke", data={"token": body["refresh_token"], "client_id": APP})
    assert revoked.status_code == 200
    refused = portal.post("/auth/token", data={"grant_type": "refresh_token", "client_id": APP,
                                               "refresh_token": body["refresh_token"]})
    assert refused.json()["error"] == "invalid_grant"
    # Introspection is for confidential clients only.
    assert portal.post("/auth/introspect", data={"token": body["access_token"],
                                                 "client_id": APP}).status_code == 401


def test_ehr_launch_puts_the_launched_patient_in_context(portal: TestClient) -> None:
    """The EHR (a backend client) registers the context; a practitioner signs in; the token
    names that patient and reaches that patient's compartment only."""
    from tests.auth.conftest import es384, register

    ehr = register(portal, es384("ehr"), "system/Patient.rs")
    ehr_token = portal.post("/auth/token", data=ehr.form("system/Patient.rs")).json()["access_token"]
    launch = portal.post("/auth/launch", json={"patient": "other"},
                         headers={"Authorization": f"Bearer {ehr_token}"})
    assert launch.status_code == 200, launch.text
    Users(portal.app.state.oauth.registry).add("dr", PASSWORD, "Practitioner/rpps-10101010101")  # type: ignore[attr-defined]
    admin = {"Authorization": f"Bearer {system_token(portal, 'system/*.cruds')}"}
    agreed = consent("other", actor="Practitioner/rpps-10101010101", start="2020-01-01")
    assert send(portal, "POST", "/fhir/Consent", agreed, **admin).status_code == 201
    verifier = secrets.token_urlsafe(48)
    scope = "launch openid fhirUser patient/*.rs"
    redirect = _sign_in(portal, verifier, username="dr", scope=scope, launch=launch.json()["launch"])
    body = _exchange(portal, code_of(redirect), verifier).json()
    assert body["patient"] == "other"
    assert set(body["scope"].split()) == set(scope.split())
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    assert portal.get("/fhir/Patient/other", headers=headers).status_code == 200
    assert portal.get("/fhir/Patient/helene", headers=headers).status_code == 404
    unknown = _authorize(portal, verifier, scope=scope, launch="made-up")
    assert parse_qs(urlsplit(unknown.headers["location"]).query)["error"] == ["invalid_request"]
    spent = _authorize(portal, verifier, scope=scope, launch=launch.json()["launch"])
    assert parse_qs(urlsplit(spent.headers["location"]).query)["error"] == ["invalid_request"]
    assert portal.post("/auth/launch", json={"patient": "other"}).status_code == 401


def test_a_practitioner_standalone_launch_gets_no_patient_scopes(portal: TestClient) -> None:
    Users(portal.app.state.oauth.registry).add("dr2", PASSWORD, "Practitioner/rpps-2")  # type: ignore[attr-defined]
    verifier = secrets.token_urlsafe(48)
    body = _exchange(portal, code_of(_sign_in(portal, verifier, username="dr2",
                                            scope="openid fhirUser patient/*.rs user/*.rs")), verifier).json()
    assert set(body["scope"].split()) == {"openid", "fhirUser", "user/*.rs"}
    assert "patient" not in body


def test_openid_discovery_matches_the_id_tokens(portal: TestClient) -> None:
    found = portal.get("/auth/.well-known/openid-configuration")
    assert found.status_code == 200 and found.headers["content-type"].startswith("application/json")
    config = found.json()
    smart = portal.get("/fhir/.well-known/smart-configuration").json()
    assert config["issuer"] == smart["issuer"] == "http://localhost/auth"
    assert config["jwks_uri"] == smart["jwks_uri"]
    assert config["id_token_signing_alg_values_supported"] == ["RS256"]


def _to_picker(portal: TestClient, verifier: str, username: str, scope: str) -> tuple[str, Any, str]:
    """Sign in (first time: enrol the second factor) up to the patient picker: the pending
    login, the picker page and the TOTP secret."""
    pending = pending_of(_authorize(portal, verifier, scope=scope).text)
    second = portal.post("/auth/login", data={"pending": pending, "username": username, "password": PASSWORD})
    secret = re.search(r'id="secret">([A-Z2-7]+)<', second.text)
    assert secret is not None
    picker = portal.post("/auth/totp", data={"pending": pending, "code": pyotp.TOTP(secret.group(1)).now()})
    assert picker.status_code == 200
    return pending, picker, secret.group(1)


def test_a_practitioner_picks_a_patient_who_consented(portal: TestClient) -> None:
    """Standalone launch with launch/patient: the picker offers the patients whose consent in
    force names the practitioner, and the token's patient is the one picked."""
    admin = {"Authorization": f"Bearer {system_token(portal, 'system/*.cruds')}"}
    actor = "Practitioner/rpps-3"
    for body in (consent("helene", actor=actor, start="2020-01-01"),
                 consent("other", actor=actor, start="2020-01-01", end="2021-01-01")):  # expired
        assert send(portal, "POST", "/fhir/Consent", body, **admin).status_code == 201
    Users(portal.app.state.oauth.registry).add("dr3", PASSWORD, actor)  # type: ignore[attr-defined]
    verifier = secrets.token_urlsafe(48)
    scope = "openid fhirUser launch/patient patient/*.rs"
    pending, picker, secret = _to_picker(portal, verifier, "dr3", scope)
    offered = re.findall(r'name="patient" value="([^"]+)"', picker.text)
    assert offered == ["helene"]
    assert portal.post("/auth/pick", data={"pending": pending, "patient": "other"}).status_code == 400
    pending = pending_of(_authorize(portal, verifier, scope=scope).text)
    portal.post("/auth/login", data={"pending": pending, "username": "dr3", "password": PASSWORD})
    totp = pyotp.TOTP(secret)
    portal.post("/auth/totp", data={"pending": pending, "code": totp.at(time.time() + totp.interval)})
    consent_page = portal.post("/auth/pick", data={"pending": pending, "patient": "helene"})
    assert consent_page.status_code == 200 and "Autoriser" in consent_page.text
    redirect = portal.post("/auth/consent", data={"pending": pending, "decision": "approve"},
                           follow_redirects=False)
    body = _exchange(portal, code_of(redirect), verifier).json()
    assert body["patient"] == "helene" and "patient/*.rs" in body["scope"].split()
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    assert portal.get("/fhir/Patient/helene", headers=headers).status_code == 200
    assert portal.get("/fhir/Patient/other", headers=headers).status_code == 404


def test_a_representative_picks_the_patient_they_represent(portal: TestClient) -> None:
    """A legal representative (RelatedPerson, relationship GUARD) signs in and is offered the
    patient they represent; their token acts for that patient until the representation ends."""
    admin = {"Authorization": f"Bearer {system_token(portal, 'system/*.cruds')}"}
    mother = {"resourceType": "RelatedPerson", "id": "mother", "active": True,
              "patient": {"reference": "Patient/helene"},
              "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                                            "code": "GUARD"}]}]}
    assert send(portal, "PUT", "/fhir/RelatedPerson/mother", mother, **admin).status_code == 201
    Users(portal.app.state.oauth.registry).add("mother", PASSWORD, "RelatedPerson/mother")  # type: ignore[attr-defined]
    verifier = secrets.token_urlsafe(48)
    pending, picker, _ = _to_picker(portal, verifier, "mother", "openid fhirUser launch/patient patient/*.rs")
    assert re.findall(r'name="patient" value="([^"]+)"', picker.text) == ["helene"]
    portal.post("/auth/pick", data={"pending": pending, "patient": "helene"})
    redirect = portal.post("/auth/consent", data={"pending": pending, "decision": "approve"},
                           follow_redirects=False)
    body = _exchange(portal, code_of(redirect), verifier).json()
    assert body["patient"] == "helene"
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    assert portal.get("/fhir/Patient/helene", headers=headers).status_code == 200
    assert portal.get("/fhir/Patient/other", headers=headers).status_code == 404
    ended = {**mother, "period": {"start": "2010-01-01", "end": "2020-01-01"}}
    assert send(portal, "PUT", "/fhir/RelatedPerson/mother", ended, **admin).status_code == 200
    assert portal.get("/fhir/Patient/helene", headers=headers).status_code == 403


def _launch(portal: TestClient, patient: str) -> str:
    from tests.auth.conftest import es384, register

    ehr = register(portal, es384(f"ehr-{patient}"), "system/Patient.rs")
    access = portal.post("/auth/token", data=ehr.form("system/Patient.rs")).json()["access_token"]
    response = portal.post("/auth/launch", json={"patient": patient},
                           headers={"Authorization": f"Bearer {access}"})
    return str(response.json()["launch"])


def test_a_launch_for_another_patient_is_refused(portal: TestClient) -> None:
    """A patient signing in through a launch naming someone else gets access_denied; so does
    a practitioner without that patient's consent."""
    scope = "launch openid fhirUser patient/*.rs"
    denied = _sign_in_until_refused(portal, "helene", scope, _launch(portal, "other"))
    assert parse_qs(urlsplit(denied.headers["location"]).query)["error"] == ["access_denied"]
    Users(portal.app.state.oauth.registry).add("dr4", PASSWORD, "Practitioner/rpps-4")  # type: ignore[attr-defined]
    denied = _sign_in_until_refused(portal, "dr4", scope, _launch(portal, "helene"))
    assert parse_qs(urlsplit(denied.headers["location"]).query)["error"] == ["access_denied"]


def _sign_in_until_refused(portal: TestClient, username: str, scope: str, launch: str) -> Any:
    verifier = secrets.token_urlsafe(48)
    pending = pending_of(_authorize(portal, verifier, scope=scope, launch=launch).text)
    second = portal.post("/auth/login", data={"pending": pending, "username": username,
                                              "password": PASSWORD})
    answer = second_factor(portal, pending, username, second.text)
    assert answer.status_code == 302, answer.text
    return answer


def test_a_code_works_only_for_the_client_it_was_issued_to(portal: TestClient) -> None:
    registry = portal.app.state.oauth.registry  # type: ignore[attr-defined]
    registry.add_app("other-app", SCOPE, [REDIRECT])
    verifier = secrets.token_urlsafe(48)
    code = code_of(_sign_in(portal, verifier))
    stolen = portal.post("/auth/token", data={"grant_type": "authorization_code", "code": code,
                                              "redirect_uri": REDIRECT, "client_id": "other-app",
                                              "code_verifier": verifier})
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
