"""Access tokens of a trusted external OpenID provider (a Keycloak realm, Pro Santé Connect):
checked against its published keys, refetched when it rotates them."""

from __future__ import annotations

import base64
import concurrent.futures
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey

from fhir_server.app import create_app
from fhir_server.settings import Settings
from tests.auth.live import audience, live_server
from tests.e2e.conftest import _free_port

ISSUER = "https://idp.example.org/realms/chu"
AUDIENCE = "http://testserver/fhir"


class Provider:
    """A provider's signing keys, published at a local JWKS URL."""

    def __init__(self) -> None:
        self.keys = [ECKey.generate_key("P-256", private=True, auto_kid=True)]
        self.fetches = 0

    def rotate(self) -> None:
        self.keys.append(ECKey.generate_key("P-256", private=True, auto_kid=True))

    def jwks(self) -> bytes:
        self.fetches += 1
        return orjson.dumps({"keys": [k.as_dict(private=False) for k in self.keys]})

    def token(self, *, issuer: str = ISSUER, audience: str = AUDIENCE, scope: str = "system/Patient.rs",
              lifetime: int = 300, **extra: Any) -> str:
        key = self.keys[-1]
        now = int(time.time())
        claims = {"iss": issuer, "aud": audience, "sub": "service-account", "azp": "chu-ehr",
                  "exp": now + lifetime, "iat": now, "scope": scope, **extra}
        return jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key)


@pytest.fixture
def provider() -> Iterator[tuple[Provider, str]]:
    idp = Provider()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            body = idp.jwks()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    port = _free_port()
    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield idp, f"http://127.0.0.1:{port}/jwks"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def client(provider: tuple[Provider, str], tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path, base_url=AUDIENCE,
                        trusted_issuers=[{"issuer": ISSUER, "jwks_uri": provider[1]}])
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _get(client: TestClient, path: str, token: str) -> int:
    return client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code


def test_provider_tokens_are_accepted_with_their_scopes(client: TestClient,
                                                        provider: tuple[Provider, str]) -> None:
    idp, _ = provider
    assert _get(client, "/fhir/Patient", idp.token()) == 200
    assert _get(client, "/fhir/Observation", idp.token()) == 403
    assert _get(client, "/fhir/Observation", idp.token(scope=None, scp=["system/Observation.rs"])) == 200


def test_provider_key_rotation_is_followed(client: TestClient, provider: tuple[Provider, str]) -> None:
    idp, _ = provider
    assert _get(client, "/fhir/Patient", idp.token()) == 200
    idp.rotate()
    # A token signed with a key the cached set lacks: fetched again at once.
    assert _get(client, "/fhir/Patient", idp.token()) == 200
    assert idp.fetches == 2


def test_simultaneous_first_requests_share_one_fetch(client: TestClient,
                                                     provider: tuple[Provider, str]) -> None:
    idp, _ = provider
    publish = idp.jwks

    def slow_jwks() -> bytes:
        time.sleep(0.5)  # every request arrives while the first fetch is under way
        return publish()

    idp.jwks = slow_jwks  # type: ignore[method-assign]
    token = idp.token()
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(lambda _: _get(client, "/fhir/Patient", token), range(6)))
    assert codes == [200] * 6
    assert idp.fetches == 1


@pytest.mark.parametrize(("change", "why"), [
    ({"audience": "https://other.example.org/fhir"}, "another audience"),
    ({"lifetime": -120}, "expired"),
    ({"issuer": "https://idp.example.org/realms/other"}, "an issuer not trusted"),
])
def test_provider_tokens_are_checked(client: TestClient, provider: tuple[Provider, str],
                                     change: dict[str, Any], why: str) -> None:
    idp, _ = provider
    assert _get(client, "/fhir/Patient", idp.token(**change)) == 401, why


def test_symmetric_and_unsigned_tokens_are_refused(client: TestClient) -> None:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": now + 300, "scope": "system/*.rs"}
    shared = OctKey.generate_key(256)
    forged = jwt.encode({"alg": "HS256"}, claims, shared)
    assert _get(client, "/fhir/Patient", forged) == 401
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")

    unsigned = f"{part({'alg': 'none'})}.{part(claims)}."
    assert _get(client, "/fhir/Patient", unsigned) == 401


def test_a_provider_token_cannot_introspect(provider: tuple[Provider, str], tmp_path: Path) -> None:
    """Only this server grants the introspect scope: a provider's token naming it is refused
    (over real HTTP: the token endpoints want https or a loopback address)."""
    idp, url = provider
    with live_server(tmp_path, trusted_issuers=[{"issuer": ISSUER, "jwks_uri": url}]) as live:
        token = idp.token(audience=audience(live), scope="introspect")
        answer = live.post("/auth/introspect", data={"token": token},
                           headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 401 and answer.json()["error"] == "invalid_token"
