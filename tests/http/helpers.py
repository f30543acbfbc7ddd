"""Small helpers for HTTP tests."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.testclient import TestClient
from httpx2 import Response

FHIR_JSON = "application/fhir+json"


def send(
    client: TestClient,
    method: str,
    url: str,
    resource: Any = None,
    *,
    body: bytes | None = None,
    content_type: str = FHIR_JSON,
    **headers: str,
) -> Response:
    """Send `resource` (or raw `body`) as FHIR JSON; headers given as keyword args (If_Match=...)."""
    all_headers = {k.replace("_", "-"): v for k, v in headers.items()}
    if resource is not None or body is not None:
        all_headers["Content-Type"] = content_type
        body = body if body is not None else orjson.dumps(resource)
    return client.request(method, url, content=body, headers=all_headers)


def create(client: TestClient, resource: dict[str, Any], **headers: Any) -> Response:
    """POST a resource to its type endpoint."""
    return send(client, "POST", f"/fhir/{resource['resourceType']}", resource, **headers)


def issue(response: Response) -> dict[str, Any]:
    """The first issue of an OperationOutcome response."""
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome", outcome
    return outcome["issue"][0]  # type: ignore[no-any-return]


def stored(client: TestClient) -> list[tuple[str, str]]:
    """Every stored version, newest first, as (fullUrl, ETag): equal lists before and after a
    request mean it wrote nothing (on any store under test)."""
    response = client.get("/fhir/_history", params={"_count": "1000"})
    assert response.status_code == 200, response.text
    return [(e.get("fullUrl", ""), e["response"]["etag"]) for e in response.json().get("entry", [])]
