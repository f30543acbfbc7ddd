"""Client authentication at the token, introspection and revocation endpoints, over real HTTP
(RFC 6749 §2.3.1 client_secret_basic and client_secret_post, RFC 7523 private_key_jwt, RFC
7662 introspection, RFC 7009 revocation: only by the client the token was issued to)."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from joserfc import jwt

from tests.auth.conftest import ASSERTION_TYPE, es384
from tests.auth.live import (
    REDIRECT, LiveClient, audience, code_of, live_server, new_user, registry, sign_in, token_url)
from tests.builders import patient
from tests.conftest import token as system_token
from tests.http.helpers import send

SCOPE = "openid fhirUser launch/patient patient/*.rs offline_access"
SECRET = "a confidential app's long secret"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveClient]:
    """A public app, a second public app, a confidential app, and patient Hélène."""
    with live_server(tmp_path_factory.mktemp("client-auth")) as client:
        apps = registry(client)
        apps.add_app("pub", SCOPE, [REDIRECT])
        apps.add_app("pub2", SCOPE, [REDIRECT])
        apps.add_app("conf", SCOPE, [REDIRECT], secret=SECRET)
        admin = {"Authorization": f"Bearer {system_token(client, 'system/*.cruds')}"}
        body = {**patient(), "id": "helene"}
        assert send(client, "PUT", "/fhir/Patient/helene", body, **admin).status_code == 201
        yield client


def basic(client_id: str, secret: str) -> dict[str, str]:
    """RFC 6749 §2.3.1: both parts form-urlencoded, then Basic."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": f"Basic {base64.b64encode(raw).decode()}"}


def _tokens(live: LiveClient, app: str, *, headers: dict[str, str] | None = None,
            **form: str) -> dict[str, Any]:
    """A token response for Hélène through the pages and the code exchange."""
    verifier = secrets.token_urlsafe(48)
    code = code_of(sign_in(live, verifier, app, SCOPE, new_user(live, "Patient/helene")))
    answer = live.post("/auth/token", headers=headers or {}, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "code_verifier": verifier, **form})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _reads(live: LiveClient, access_token: str) -> int:
    return live.get("/fhir/Patient/helene",
                    headers={"Authorization": f"Bearer {access_token}"}).status_code


def test_another_client_cannot_revoke_a_token(live: LiveClient) -> None:
    """RFC 7009 §2.1: the server checks the token was issued to the client revoking it."""
    issued = _tokens(live, "pub", client_id="pub")
    for token in (issued["access_token"], issued["refresh_token"]):
        refused = live.post("/auth/revoke", data={"token": token, "client_id": "pub2"})
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"] == "unauthorized_client"
        assert refused.json()["error_description"]
    assert _reads(live, issued["access_token"]) == 200
    refreshed = live.post("/auth/token", data={"grant_type": "refresh_token", "client_id": "pub",
                                               "refresh_token": issued["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    # Its own client revokes it: refused at once afterwards.
    own = refreshed.json()["access_token"]
    assert live.post("/auth/revoke", data={"token": own, "client_id": "pub"}).status_code == 200
    assert _reads(live, own) == 401


def test_client_secret_basic_at_the_token_endpoint(live: LiveClient) -> None:
    issued = _tokens(live, "conf", headers=basic("conf", SECRET))
    assert _reads(live, issued["access_token"]) == 200
    refreshed = live.post("/auth/token", headers=basic("conf", SECRET), data={
        "grant_type": "refresh_token", "refresh_token": issued["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text


def test_a_wrong_basic_secret_is_refused(live: LiveClient) -> None:
    verifier = secrets.token_urlsafe(48)
    code = code_of(sign_in(live, verifier, "conf", SCOPE, new_user(live, "Patient/helene")))
    refused = live.post("/auth/token", headers=basic("conf", "not the secret"), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "code_verifier": verifier})
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    assert refused.headers["www-authenticate"].startswith("Basic")


RESERVED_SECRET = "p@ss:w+rd%2F é&x=y"


@pytest.mark.parametrize(("sent", "accepted"), [
    (quote_plus(RESERVED_SECRET), True),  # RFC 6749 §2.3.1: form-urlencoded, space as +
    (RESERVED_SECRET, True),  # not encoded, as many clients send it
    (quote(RESERVED_SECRET), True),  # percent-encoded, space as %20: the same once decoded
    (quote_plus(quote_plus(RESERVED_SECRET)), False),  # decoded once only
    (RESERVED_SECRET.replace(" ", "+"), False),  # a + sent unencoded is a +, not a space
])
def test_a_basic_secret_is_form_urldecoded_once(live: LiveClient, sent: str,
                                                accepted: bool) -> None:
    registry(live).add_app("reserved", SCOPE, [REDIRECT], secret=RESERVED_SECRET)
    raw = f"reserved:{sent}".encode()
    answer = live.post("/auth/revoke", data={"token": "not-a-token"}, headers={
        "Authorization": f"Basic {base64.b64encode(raw).decode()}"})
    assert answer.status_code == (200 if accepted else 401), answer.text


def test_client_secret_post_at_the_token_endpoint(live: LiveClient) -> None:
    issued = _tokens(live, "conf", client_id="conf", client_secret=SECRET)
    assert _reads(live, issued["access_token"]) == 200


@pytest.mark.parametrize("method", ["basic", "post"])
def test_introspection_and_revocation_with_a_client_secret(live: LiveClient, method: str) -> None:
    issued = _tokens(live, "conf", client_id="conf", client_secret=SECRET)
    headers, form = ((basic("conf", SECRET), {}) if method == "basic"
                     else ({}, {"client_id": "conf", "client_secret": SECRET}))
    found = live.post("/auth/introspect", headers=headers,
                      data={"token": issued["access_token"], **form})
    assert found.status_code == 200, found.text
    assert found.json()["active"] is True and found.json()["client_id"] == "conf"
    revoked = live.post("/auth/revoke", headers=headers,
                        data={"token": issued["access_token"], **form})
    assert revoked.status_code == 200, revoked.text
    assert _reads(live, issued["access_token"]) == 401
    gone = live.post("/auth/introspect", headers=headers,
                     data={"token": issued["access_token"], **form})
    assert gone.json() == {"active": False}


@pytest.mark.parametrize("endpoint", ["/auth/introspect", "/auth/revoke"])
@pytest.mark.parametrize("credentials", [
    {},  # none at all
    {"headers": basic("conf", "not the secret")},
    {"data": {"client_id": "conf", "client_secret": "not the secret"}},
])
def test_a_401_says_how_to_authenticate(live: LiveClient, endpoint: str,
                                        credentials: dict[str, Any]) -> None:
    """RFC 7235 §3.1: a 401 carries WWW-Authenticate; RFC 6749 §5.2 names Basic."""
    answer = live.post(endpoint, headers=credentials.get("headers", {}),
                       data={"token": "not-a-token", **credentials.get("data", {})})
    assert answer.status_code == 401 and answer.json()["error"] == "invalid_client"
    assert answer.headers["www-authenticate"].startswith("Basic ")


def test_a_replayed_code_revokes_the_tokens_issued_from_it(live: LiveClient) -> None:
    """RFC 6749 §4.1.2: a code used twice is refused, and the tokens issued from it (and
    from refreshing them) are revoked."""
    verifier = secrets.token_urlsafe(48)
    code = code_of(sign_in(live, verifier, "pub", SCOPE, new_user(live, "Patient/helene")))
    exchange = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                "code_verifier": verifier, "client_id": "pub"}
    first = live.post("/auth/token", data=exchange).json()
    refreshed = live.post("/auth/token", data={"grant_type": "refresh_token", "client_id": "pub",
                                               "refresh_token": first["refresh_token"]}).json()
    assert _reads(live, first["access_token"]) == _reads(live, refreshed["access_token"]) == 200
    again = live.post("/auth/token", data=exchange)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert _reads(live, first["access_token"]) == _reads(live, refreshed["access_token"]) == 401
    refused = live.post("/auth/token", data={"grant_type": "refresh_token", "client_id": "pub",
                                             "refresh_token": refreshed["refresh_token"]})
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    # Another app's tokens are untouched.
    assert _reads(live, _tokens(live, "pub2", client_id="pub2")["access_token"]) == 200


def test_a_refresh_may_narrow_the_scope(live: LiveClient) -> None:
    """SMART "Refresh access token": the scopes asked for at refresh may be a subset of those
    granted, judged by what they reach; never more."""
    issued = _tokens(live, "pub", client_id="pub")
    refresh = {"grant_type": "refresh_token", "client_id": "pub"}
    narrowed = live.post("/auth/token", data={**refresh, "refresh_token": issued["refresh_token"],
                                              "scope": "patient/Observation.rs offline_access"})
    assert narrowed.status_code == 200, narrowed.text
    assert narrowed.json()["scope"] == "offline_access patient/Observation.rs"
    assert _reads(live, narrowed.json()["access_token"]) == 403
    for wider in ("patient/*.cruds", "patient/Observation.rs user/*.rs", "patient/*.rs"):
        refused = live.post("/auth/token", data={
            **refresh, "refresh_token": narrowed.json()["refresh_token"], "scope": wider})
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_scope", wider


def test_unsupported_grant_type_says_why(live: LiveClient) -> None:
    answer = live.post("/auth/token", data={"grant_type": "password", "client_id": "pub"})
    assert answer.status_code == 400 and answer.json()["error"] == "unsupported_grant_type"
    assert "password" in answer.json()["error_description"]


def test_openid_and_smart_discovery_list_the_same_client_authentication(
        live: LiveClient) -> None:
    smart = live.get("/fhir/.well-known/smart-configuration").json()
    openid = live.get("/auth/.well-known/openid-configuration").json()
    for name in ("token_endpoint_auth_methods_supported",
                 "token_endpoint_auth_signing_alg_values_supported"):
        assert openid.get(name) == smart[name], name
    assert "private_key_jwt" in openid["token_endpoint_auth_methods_supported"]


def test_token_url_is_the_advertised_one(live: LiveClient) -> None:
    config = live.get("/fhir/.well-known/smart-configuration").json()
    assert config["token_endpoint"] == token_url(live)


def _backend_token(live: LiveClient, client_id: str, registered: str, requested: str) -> str:
    backend = es384(client_id)
    registry(live).add_backend_client(client_id, registered, jwks=backend.jwks())
    answer = live.post("/auth/token", data=backend.form(requested, audience=token_url(live)))
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def test_introspection_with_a_bearer_token_granted_the_introspect_scope(live: LiveClient) -> None:
    """SMART: the introspection endpoint is access-controlled; a resource server may call it
    with a bearer token of a client allowed to introspect. fhirUser is absolute there, as in
    the id_token."""
    issued = _tokens(live, "pub", client_id="pub")
    introspector = _backend_token(live, "resource-server", "introspect system/Patient.rs",
                                  "introspect")
    found = live.post("/auth/introspect", data={"token": issued["access_token"]},
                      headers={"Authorization": f"Bearer {introspector}"})
    assert found.status_code == 200, found.text
    body = found.json()
    assert body["active"] is True and body["patient"] == "helene"
    keys = live.app.state.tokens.keys.verification_keys()
    identity = jwt.decode(issued["id_token"], keys).claims
    assert body["fhirUser"] == identity["fhirUser"] == f"{audience(live)}/Patient/helene"


def test_a_client_introspects_its_own_tokens_only_without_the_introspect_scope(
        live: LiveClient) -> None:
    """Client authentication alone shows a client its own tokens; another client's token,
    naming its user and patient, only to a client registered for `introspect` (RFC 7662
    §2.2: `active` false for a token the caller may not introspect)."""
    others = _tokens(live, "pub", client_id="pub")["access_token"]
    own = _tokens(live, "conf", client_id="conf", client_secret=SECRET)["access_token"]
    seen = [live.post("/auth/introspect", headers=basic("conf", SECRET), data={"token": token})
            for token in (own, others)]
    assert seen[0].json()["active"] is True and seen[0].json()["client_id"] == "conf"
    assert seen[1].status_code == 200 and seen[1].json() == {"active": False}
    for registered, shown in (("system/Patient.rs", False), ("introspect system/Patient.rs", True)):
        server = es384(f"server-{secrets.token_hex(4)}")
        registry(live).add_backend_client(server.client_id, registered, jwks=server.jwks())
        assertion = server.form("", audience=token_url(live))
        answer = live.post("/auth/introspect", data={
            "token": others, "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion["client_assertion"]})
        assert answer.status_code == 200 and answer.json()["active"] is shown, registered
        if shown:
            assert answer.json()["patient"] == "helene"


def test_introspection_refuses_bearers_without_the_scope_and_public_apps(live: LiveClient) -> None:
    issued = _tokens(live, "pub", client_id="pub")
    plain = _backend_token(live, "no-introspect", "system/Patient.rs introspect", "system/Patient.rs")
    refused = live.post("/auth/introspect", data={"token": issued["access_token"]},
                        headers={"Authorization": f"Bearer {plain}"})
    assert refused.status_code == 403 and refused.json()["error"] == "insufficient_scope"
    assert "insufficient_scope" in refused.headers["www-authenticate"]
    # The scope is granted only to clients registered for it.
    not_registered = es384("not-registered")
    registry(live).add_backend_client("not-registered", "system/Patient.rs",
                                      jwks=not_registered.jwks())
    asked = live.post("/auth/token", data=not_registered.form(
        "introspect system/Patient.rs", audience=token_url(live)))
    assert asked.json()["scope"] == "system/Patient.rs"
    forged = live.post("/auth/introspect", data={"token": issued["access_token"]},
                       headers={"Authorization": "Bearer not-a-token"})
    assert forged.status_code == 401 and forged.json()["error"] == "invalid_token"
    public = live.post("/auth/introspect", data={"token": issued["access_token"],
                                                 "client_id": "pub"})
    assert public.status_code == 401


def test_an_asymmetric_app_authenticates_with_a_client_assertion(live: LiveClient) -> None:
    """client-confidential-asymmetric: an app registered with its JWKS signs a client
    assertion (private_key_jwt) for the code exchange and the refresh; nothing else does."""
    keys = es384("asym")
    registry(live).add_app("asym", SCOPE, [REDIRECT], jwks=keys.jwks())
    verifier = secrets.token_urlsafe(48)
    code = code_of(sign_in(live, verifier, "asym", SCOPE, new_user(live, "Patient/helene")))
    exchange = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                "code_verifier": verifier}
    bare = live.post("/auth/token", data={**exchange, "client_id": "asym"})
    assert bare.status_code == 401 and bare.json()["error"] == "invalid_client"
    assertion = {"client_assertion_type": ASSERTION_TYPE,
                 "client_assertion": keys.assertion(audience=token_url(live))}
    code = code_of(sign_in(live, verifier, "asym", SCOPE, new_user(live, "Patient/helene")))
    issued = live.post("/auth/token", data={**exchange, "code": code, **assertion})
    assert issued.status_code == 200, issued.text
    assert _reads(live, issued.json()["access_token"]) == 200
    refreshed = live.post("/auth/token", data={
        "grant_type": "refresh_token", "refresh_token": issued.json()["refresh_token"],
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": keys.assertion(audience=token_url(live))})
    assert refreshed.status_code == 200, refreshed.text
    config = live.get("/fhir/.well-known/smart-configuration").json()
    assert "client-confidential-asymmetric" in config["capabilities"]
