"""Builders for batch and transaction Bundles sent to `POST [base]` (FHIR R4 http.html#transaction)."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import orjson
from fastapi.testclient import TestClient
from httpx2 import Response

from tests.http.helpers import FHIR_JSON, send


def placeholder() -> str:
    """A fresh `urn:uuid:` fullUrl."""
    return f"urn:uuid:{uuid.uuid4()}"


def entry(method: str, url: str, resource: dict[str, Any] | None = None, *,
          full_url: str | None = None, **request: str) -> dict[str, Any]:
    """One request entry; `request` adds ifMatch, ifNoneExist, ifNoneMatch."""
    out: dict[str, Any] = {}
    if full_url is not None:
        out["fullUrl"] = full_url
    if resource is not None:
        out["resource"] = resource
    out["request"] = {"method": method, "url": url, **request}
    return out


def json_patch(operations: list[dict[str, Any]]) -> dict[str, Any]:
    """A PATCH entry's body: the JSON Patch as a Binary (http.html#patch)."""
    return {"resourceType": "Binary", "contentType": "application/json-patch+json",
            "data": base64.b64encode(orjson.dumps(operations)).decode()}


def post_bundle(client: TestClient, bundle_type: str, entries: list[dict[str, Any]], *,
                path: str = "/fhir", content_type: str = FHIR_JSON) -> Response:
    """POST a batch or transaction Bundle to the base URL."""
    bundle = {"resourceType": "Bundle", "type": bundle_type, "entry": entries}
    return send(client, "POST", path, bundle, content_type=content_type)


def responses(response: Response) -> list[dict[str, Any]]:
    """The `entry.response` of each entry of a response Bundle."""
    return [e["response"] for e in response.json()["entry"]]


def located_id(entry_response: dict[str, Any]) -> str:
    """The id in an entry's `response.location` (Type/id/_history/n)."""
    return str(entry_response["location"].split("/")[1])
