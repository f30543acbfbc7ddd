"""Driving an export over HTTP as a Bulk Data client does: kick-off, poll, download."""

from __future__ import annotations

import time
from typing import Any

import orjson
from httpx2 import Client, Response
from fastapi.testclient import TestClient

from fhir_server.auth.keys import SigningKeys
from fhir_server.auth.registry import Registry as AuthRegistry
from fhir_server.auth.tokens import TokenService
from tests.e2e.conftest import Server

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


def kick_off(client: TestClient | Client, path: str, headers: dict[str, str] | None = None,
             body: dict[str, Any] | None = None) -> Response:
    all_headers = {**ASYNC, **(headers or {})}
    if body is None:
        return client.get(path, headers=all_headers)
    return client.post(path, headers={**all_headers, "Content-Type": "application/fhir+json"},
                       content=orjson.dumps(body))


def status_path(response: Response) -> str:
    assert response.status_code == 202, response.text
    return response.headers["Content-Location"].split("/fhir", 1)[1]


def wait(client: TestClient | Client, path: str, headers: dict[str, str] | None = None,
         timeout: float = 120.0) -> Response:
    """Poll the status URL until it answers something else than 202."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(f"/fhir{path}", headers=headers or {})
        if response.status_code != 202:
            return response
        assert len(response.headers["X-Progress"]) < 100 and response.headers["Retry-After"]
        time.sleep(0.05)  # faster than Retry-After asks: most jobs here end within a second
    raise AssertionError(f"{path} still running after {timeout} s")


def download(client: TestClient | Client, manifest: dict[str, Any],
             headers: dict[str, str] | None = None, key: str = "output") -> list[dict[str, Any]]:
    """Every resource of the manifest's files under `key`, each file checked against its entry."""
    found: list[dict[str, Any]] = []
    for item in manifest[key]:
        response = client.get("/fhir" + item["url"].split("/fhir", 1)[1],
                              headers={"Accept": "application/fhir+ndjson", **(headers or {})})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/fhir+ndjson")
        lines = [orjson.loads(line) for line in response.content.splitlines() if line]
        assert len(lines) == item["count"]
        assert {r["resourceType"] for r in lines} == {item["type"]}
        found += lines
    return found


def export(client: TestClient | Client, path: str, headers: dict[str, str] | None = None,
           body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Kick off, wait, and return the manifest."""
    status = status_path(kick_off(client, path, headers, body))
    response = wait(client, status, headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def token_of(server: Server, scope: str, client_id: str = "e2e", **claims: str) -> dict[str, str]:
    """The Authorization header of a token `server` accepts, for `client_id` with `claims`
    (patient, fhir_user, ...): the subject is the client."""
    tokens = TokenService(SigningKeys(server.data_dir / "signing-keys.json", 300),
                          AuthRegistry(server.data_dir / "auth.db"), issuer=f"{server.base}/auth",
                          audience=f"{server.base}/fhir", lifetime=300)
    issued = tokens.issue(subject=client_id, client_id=client_id, scope=scope, **claims)
    return {"Authorization": f"Bearer {issued['access_token']}"}
