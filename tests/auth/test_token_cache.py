"""A verified token is remembered until it expires (auth/token_cache.py), and what must end it
still does at once: revocation, expiry, the withdrawal of the key that signed it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from fhir_server.auth import keys as signing_keys
from fhir_server.auth import tokens as token_module
from fhir_server.auth.token_cache import TokenCache
from fhir_server.auth.tokens import TokenService
from tests.auth.conftest import es384, register


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _issue(client: TestClient, scope: str = "system/*.rs") -> str:
    tokens: TokenService = client.app.state.tokens  # type: ignore[attr-defined]
    return str(tokens.issue(subject="x", client_id="x", scope=scope)["access_token"])


def test_a_token_is_verified_once(app_client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[str] = []
    decode = token_module.jwt.decode

    def counting(token: str, *args: object, **kwargs: object) -> object:
        decoded.append(token)
        return decode(token, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(token_module.jwt, "decode", counting)
    token = _issue(app_client)
    for _ in range(3):
        assert app_client.get("/fhir/Patient", headers=_bearer(token)).status_code == 200
    assert decoded == [token]
    other = _issue(app_client)
    assert app_client.get("/fhir/Patient", headers=_bearer(other)).status_code == 200
    assert decoded == [token, other]


def test_a_cached_token_revoked_stops_working_at_once(app_client: TestClient) -> None:
    backend = register(app_client, es384("c-revoke"), "system/*.rs")
    issued = app_client.post("/auth/token", data=backend.form("system/*.rs")).json()
    access = issued["access_token"]
    assert app_client.get("/fhir/Patient", headers=_bearer(access)).status_code == 200
    assert app_client.post("/auth/revoke", data={
        "token": access, "client_assertion_type": backend.form("")["client_assertion_type"],
        "client_assertion": backend.assertion()}).status_code == 200
    refused = app_client.get("/fhir/Patient", headers=_bearer(access))
    assert refused.status_code == 401
    assert "revoked" in refused.headers["www-authenticate"]


def test_a_withdrawn_key_takes_its_cached_tokens_with_it(
        app_client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator deletes the key file (a key leaked): a new key signs, and the tokens the
    old one signed are refused, however often they were accepted before."""
    monkeypatch.setattr(signing_keys, "_RELOAD_SECONDS", 0.0)
    tokens: TokenService = app_client.app.state.tokens  # type: ignore[attr-defined]
    token = _issue(app_client)
    assert app_client.get("/fhir/Patient", headers=_bearer(token)).status_code == 200
    tokens.keys.path.unlink()
    assert app_client.get("/fhir/Patient", headers=_bearer(token)).status_code == 401
    assert app_client.get("/fhir/Patient", headers=_bearer(_issue(app_client))).status_code == 200


def test_a_rotation_keeps_cached_tokens(app_client: TestClient) -> None:
    tokens: TokenService = app_client.app.state.tokens  # type: ignore[attr-defined]
    token = _issue(app_client)
    assert app_client.get("/fhir/Patient", headers=_bearer(token)).status_code == 200
    tokens.keys.rotate()
    assert app_client.get("/fhir/Patient", headers=_bearer(token)).status_code == 200


def test_an_entry_ends_when_its_token_does() -> None:
    now = [1000.0]
    cache: TokenCache[str] = TokenCache(now=lambda: now[0])
    keys = object()
    cache.put("token-a", keys, "claims", until=1010.0)
    assert cache.get("token-a", keys) == "claims"
    now[0] = 1010.0
    assert cache.get("token-a", keys) is None
    now[0] = 1000.0
    assert cache.get("token-a", keys) is None  # gone, not merely hidden


def test_other_keys_empty_the_cache() -> None:
    cache: TokenCache[str] = TokenCache(now=lambda: 0.0)
    old, new = object(), object()
    cache.put("token-a", old, "claims", until=10.0)
    assert cache.get("token-a", new) is None
    assert cache.get("token-a", old) is None


def test_the_cache_is_bounded_and_holds_no_token() -> None:
    cache: TokenCache[int] = TokenCache(size=3, now=lambda: 0.0)
    keys = object()
    for n in range(4):
        cache.put(f"token-{n}", keys, n, until=10.0)
        cache.get("token-0", keys)  # the most recently used stays
    assert [cache.get(f"token-{n}", keys) for n in range(4)] == [0, None, 2, 3]
    assert all(isinstance(key, bytes) and b"token" not in key for key in cache._entries)
