"""SMART Backend Services end to end in-process: discovery, the token endpoint with
private_key_jwt (RS384, ES384), tokens on the FHIR API, introspection, revocation, keys."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from fhir_server.auth.tokens import TokenService
from tests.auth.conftest import Backend, es384, register, rs384
from tests.builders import patient
from tests.http.helpers import send


def _token(client: TestClient, backend: Backend, scope: str, **options: object) -> dict[str, object]:
    response = client.post("/auth/token", data=backend.form(scope, **options))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return dict(response.json())


def _bearer(token: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_discovery_says_what_works(app_client: TestClient) -> None:
    """Served as application/json without a token; the CapabilityStatement carries oauth-uris."""
    found = app_client.get("/fhir/.well-known/smart-configuration")
    assert found.status_code == 200
    assert found.headers["content-type"].startswith("application/json")
    config = found.json()
    assert config["token_endpoint"] == "http://localhost/auth/token"
    assert "client_credentials" in config["grant_types_supported"]
    assert "private_key_jwt" in config["token_endpoint_auth_methods_supported"]
    assert set(config["token_endpoint_auth_signing_alg_values_supported"]) == {"RS384", "ES384"}
    assert {"client-confidential-asymmetric", "permission-v1", "permission-v2"} <= set(config["capabilities"])
    # Only what works: no encounter picker in standalone launches.
    assert "context-standalone-encounter" not in config["capabilities"]
    jwks = app_client.get("/auth/jwks").json()
    assert [k["kty"] for k in jwks["keys"]] == ["RSA"] and "d" not in jwks["keys"][0]
    metadata = app_client.get("/fhir/metadata")
    assert metadata.status_code == 200
    [security] = [r["security"] for r in metadata.json()["rest"]]
    [uris] = security["extension"]
    assert {e["url"]: e["valueUri"] for e in uris["extension"]}["token"] == config["token_endpoint"]


@pytest.mark.parametrize("make", [es384, rs384], ids=["ES384", "RS384"])
def test_backend_client_gets_a_token_and_uses_it(app_client: TestClient, make: type[Backend]) -> None:
    """Scopes are narrowed to the registration; expires_in is a number; the token works."""
    backend = register(app_client, make("site-system"), "system/Patient.rs system/Communication.rs")
    token = _token(app_client, backend, "system/Patient.rs system/Observation.rs")
    assert token["token_type"] == "Bearer"
    assert isinstance(token["expires_in"], int) and token["expires_in"] > 0
    assert token["scope"] == "system/Patient.rs"
    headers = _bearer(token["access_token"])
    assert app_client.get("/fhir/Patient", headers=headers).status_code == 200
    denied = app_client.get("/fhir/Observation", headers=headers)
    assert denied.status_code == 403
    assert denied.json()["resourceType"] == "OperationOutcome"
    assert 'error="insufficient_scope"' in denied.headers["www-authenticate"]
    created = send(app_client, "POST", "/fhir/Patient", patient(), **headers)
    assert created.status_code == 403


def test_requests_without_a_valid_token_get_401(app_client: TestClient, auth_settings: object) -> None:
    """Missing, malformed, foreign-audience and expired tokens; metadata stays open."""
    missing = app_client.get("/fhir/Patient")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="fhir"'
    assert missing.json()["issue"][0]["code"] == "login"
    garbage = app_client.get("/fhir/Patient", headers=_bearer("not.a.jwt"))
    assert garbage.status_code == 401
    assert 'error="invalid_token"' in garbage.headers["www-authenticate"]
    tokens: TokenService = app_client.app.state.tokens  # type: ignore[attr-defined]
    foreign = TokenService(tokens.keys, tokens.registry, issuer=tokens.issuer,
                           audience="https://other.example.org/fhir", lifetime=300)
    other = foreign.issue(subject="x", client_id="x", scope="system/*.cruds")["access_token"]
    assert app_client.get("/fhir/Patient", headers=_bearer(other)).status_code == 401
    stale = TokenService(tokens.keys, tokens.registry, issuer=tokens.issuer,
                         audience=tokens.audience, lifetime=-120)
    expired = stale.issue(subject="x", client_id="x", scope="system/*.cruds")["access_token"]
    response = app_client.get("/fhir/Patient", headers=_bearer(expired))
    assert response.status_code == 401 and "expired" in response.json()["issue"][0]["diagnostics"]
    assert app_client.get("/fhir/metadata").status_code == 200
    batch = {"resourceType": "Bundle", "type": "batch", "entry": []}
    assert send(app_client, "POST", "/fhir", batch).status_code == 401


@pytest.mark.parametrize(("options", "why"), [
    ({"lifetime": 600}, "lives longer than five minutes"),
    ({"lifetime": -120}, "expired"),
    ({"audience": "http://testserver/fhir"}, "wrong audience"),
    ({"alg": "ES256"}, "algorithm SMART does not allow"),
])
def test_bad_assertions_are_refused(app_client: TestClient, options: dict[str, object], why: str) -> None:
    backend = register(app_client, es384("c1"), "system/*.rs")
    if options.get("alg") == "ES256":
        from joserfc.jwk import ECKey

        backend = register(app_client, Backend("c1", ECKey.generate_key("P-256", private=True,
                                                                           auto_kid=True), "ES256"),
                           "system/*.rs")
    response = app_client.post("/auth/token", data=backend.form("system/*.rs", **options))
    assert response.status_code in (400, 401), why
    assert response.json()["error"] == "invalid_client", why


def test_replayed_assertion_and_unknown_client_and_wrong_key(app_client: TestClient) -> None:
    backend = register(app_client, es384("c2"), "system/*.rs")
    form = backend.form("system/*.rs", jti="once")
    assert app_client.post("/auth/token", data=form).status_code == 200
    replay = app_client.post("/auth/token", data=backend.form("system/*.rs", jti="once"))
    assert replay.json()["error"] == "invalid_client"
    stranger = es384("nobody")
    assert app_client.post("/auth/token", data=stranger.form("system/*.rs")).json()["error"] == "invalid_client"
    impostor = es384("c2")  # right id, another key
    assert app_client.post("/auth/token", data=impostor.form("system/*.rs")).json()["error"] == "invalid_client"


def test_scope_and_grant_type_errors(app_client: TestClient) -> None:
    backend = register(app_client, es384("c3"), "system/Communication.rs")
    refused = app_client.post("/auth/token", data=backend.form("system/Patient.cruds patient/*.rs"))
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_scope"
    form = {**backend.form("system/Communication.rs"), "grant_type": "password"}
    assert app_client.post("/auth/token", data=form).json()["error"] == "unsupported_grant_type"


def test_introspection_and_revocation(app_client: TestClient) -> None:
    """RFC 7662 / 7009 for an authenticated client; a revoked token stops working at once."""
    backend = register(app_client, es384("c4"), "system/*.rs")
    access = _token(app_client, backend, "system/*.rs")["access_token"]
    seen = app_client.post("/auth/introspect", data={
        "token": access, "client_assertion_type": backend.form("")["client_assertion_type"],
        "client_assertion": backend.assertion()}).json()
    assert seen["active"] is True and seen["scope"] == "system/*.rs" and seen["client_id"] == "c4"
    unauthenticated = app_client.post("/auth/introspect", data={"token": access})
    assert unauthenticated.status_code == 401
    assert app_client.post("/auth/revoke", data={
        "token": access, "client_assertion_type": backend.form("")["client_assertion_type"],
        "client_assertion": backend.assertion()}).status_code == 200
    assert app_client.get("/fhir/Patient", headers=_bearer(access)).status_code == 401
    gone = app_client.post("/auth/introspect", data={
        "token": access, "client_assertion_type": backend.form("")["client_assertion_type"],
        "client_assertion": backend.assertion()}).json()
    assert gone == {"active": False}


def test_key_rotation_keeps_old_tokens_valid(app_client: TestClient) -> None:
    tokens: TokenService = app_client.app.state.tokens  # type: ignore[attr-defined]
    before = tokens.issue(subject="x", client_id="x", scope="system/*.rs")["access_token"]
    old_kid = tokens.keys.signing_key().kid
    new_kid = tokens.keys.rotate()
    assert new_kid != old_kid
    kids = {k["kid"] for k in app_client.get("/auth/jwks").json()["keys"]}
    assert kids == {old_kid, new_kid}
    after = tokens.issue(subject="x", client_id="x", scope="system/*.rs")["access_token"]
    for token in (before, after):
        assert app_client.get("/fhir/Patient", headers=_bearer(token)).status_code == 200
    time.sleep(0)  # the old key leaves the JWKS only once its tokens have expired


def test_cors_for_browser_apps(app_client: TestClient) -> None:
    preflight = app_client.options("/fhir/Patient", headers={
        "Origin": "https://portal.example.org", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://portal.example.org"
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    other = app_client.options("/fhir/Patient", headers={
        "Origin": "https://evil.example.com", "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in other.headers
