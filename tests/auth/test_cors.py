"""CORS over real HTTP (SMART App Launch 2.2, "CORS"): discovery, metadata, the JWKS and the
OpenID configuration answer any origin; the token endpoint and the API answer the origins of
registered apps' redirect URIs and those the operator lists, and no other."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.auth.live import LiveClient, live_server, registry
from tests.conftest import token as system_token

APP_ORIGIN = "https://app.example.org"
CONFIGURED = "https://portal.example.org"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveClient]:
    with live_server(tmp_path_factory.mktemp("cors"), cors_origins=[CONFIGURED]) as client:
        registry(client).add_app("spa", "openid patient/*.rs", [f"{APP_ORIGIN}:443/callback"])
        yield client


@pytest.mark.parametrize("path", ["/fhir/.well-known/smart-configuration", "/fhir/metadata",
                                  "/auth/jwks", "/auth/.well-known/openid-configuration"])
def test_discovery_documents_answer_any_origin(live: LiveClient, path: str) -> None:
    answer = live.get(path, headers={"Origin": "https://anyone.example.net"})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == "*"
    preflight = live.options(path, headers={"Origin": "https://anyone.example.net",
                                            "Access-Control-Request-Method": "GET"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize("origin", [APP_ORIGIN, CONFIGURED])
def test_app_origins_reach_the_token_endpoint_and_the_api(live: LiveClient, origin: str) -> None:
    preflight = live.options("/auth/token", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization, Content-Type"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == origin
    headers = {"Origin": origin, "Authorization": f"Bearer {system_token(live, 'system/*.rs')}"}
    answer = live.get("/fhir/Patient", headers=headers)
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == origin


def test_an_app_registered_later_is_served_at_once(live: LiveClient) -> None:
    registry(live).add_app("later", "openid", ["http://localhost:8765/cb"])
    answer = live.options("/auth/token", headers={"Origin": "http://localhost:8765",
                                                  "Access-Control-Request-Method": "POST"})
    assert answer.headers.get("access-control-allow-origin") == "http://localhost:8765"


def test_other_origins_get_no_cors_headers(live: LiveClient) -> None:
    evil = "https://evil.example.com"
    preflight = live.options("/auth/token", headers={"Origin": evil,
                                                     "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers
    answer = live.get("/fhir/Patient", headers={"Origin": evil})
    assert "access-control-allow-origin" not in answer.headers
