"""An app with authentication on, backend clients with their keys, and signed assertions."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from joserfc.jws import JWSRegistry
from joserfc.registry import HeaderParameter

from fhir_server.app import create_app
from fhir_server.settings import Settings

TOKEN_URL = "http://localhost/auth/token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class Backend:
    """A backend-services client: its id, private key and signing algorithm."""

    def __init__(self, client_id: str, key: ECKey | RSAKey, alg: str) -> None:
        self.client_id = client_id
        self.key = key
        self.alg = alg

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.key.as_dict(private=False)]}

    def assertion(self, *, lifetime: int = 240, audience: str = TOKEN_URL, jti: str | None = None,
                  alg: str | None = None, key: ECKey | RSAKey | None = None,
                  header: dict[str, Any] | None = None) -> str:
        now = int(time.time())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": audience,
                  "exp": now + lifetime, "iat": now, "jti": jti or secrets.token_hex(8)}
        signing = key or self.key
        protected = {"alg": alg or self.alg, "kid": signing.kid, "typ": "JWT", **(header or {})}
        # Any header parameter, even one the signer does not know (critical ones too).
        extra = {name: HeaderParameter(name, lambda value: None) for name in header or {}}
        registry = JWSRegistry(extra, algorithms=[alg or self.alg], strict_check_header=False)
        return jwt.encode(protected, claims, signing, algorithms=[alg or self.alg],
                          registry=registry)

    def form(self, scope: str, **options: Any) -> dict[str, str]:
        return {"grant_type": "client_credentials", "scope": scope,
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self.assertion(**options)}


def es384(client_id: str) -> Backend:
    return Backend(client_id, ECKey.generate_key("P-384", private=True, auto_kid=True), "ES384")


def rs384(client_id: str) -> Backend:
    return Backend(client_id, RSAKey.generate_key(2048, private=True, auto_kid=True), "RS384")


@pytest.fixture
def auth_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, base_url="http://localhost/fhir",
                    cors_origins=["https://portal.example.org"])


@pytest.fixture
def app_client(auth_settings: Settings) -> Iterator[TestClient]:
    """The app, no Authorization header set."""
    with TestClient(create_app(auth_settings)) as client:
        yield client


def register(client: TestClient, backend: Backend, scope: str) -> Backend:
    client.app.state.oauth.registry.add_backend_client(  # type: ignore[attr-defined]
        backend.client_id, scope, jwks=backend.jwks())
    return backend
