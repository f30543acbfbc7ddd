"""Bundle builders (FHIR R4 bundle.html, http.html#history).

Stored resources are embedded as `orjson.Fragment`s: their bytes go into the Bundle as
stored, without being parsed again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from .. import clock
from .ids import new_id


def etag(version: int) -> str:
    """The weak ETag of a version (http.html#versioning)."""
    return f'W/"{version}"'


def bundle(
    bundle_type: str,
    entries: Iterable[Mapping[str, Any]],
    *,
    links: Mapping[str, str] | None = None,
    total: int | None = None,
    last_updated: str | None = None,
) -> dict[str, Any]:
    """A Bundle of `bundle_type` with optional paging links and total; `meta.lastUpdated` is
    `last_updated` (the instant its content is complete to), else now."""
    out: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": new_id(),
        "meta": {"lastUpdated": last_updated or clock.instant()},
        "type": bundle_type,
    }
    if total is not None:
        out["total"] = total
    if links:
        out["link"] = [{"relation": rel, "url": url} for rel, url in links.items()]
    out["entry"] = list(entries)
    if not out["entry"]:
        del out["entry"]
    return out


def history_entry(
    base_url: str,
    resource_type: str,
    id: str,
    version: int,
    last_updated: str,
    method: str,
    body: bytes | None,
) -> dict[str, Any]:
    """One history entry: the version (absent for a deletion), its request and response."""
    full_url = f"{base_url}/{resource_type}/{id}"
    entry: dict[str, Any] = {"fullUrl": full_url}
    if body is not None:
        entry["resource"] = orjson.Fragment(body)
    url = resource_type if method == "POST" else f"{resource_type}/{id}"
    entry["request"] = {"method": method, "url": url}
    status = {"POST": "201 Created", "DELETE": "204 No Content"}.get(method, "200 OK")
    entry["response"] = {
        "status": status,
        "etag": etag(version),
        "lastModified": last_updated,
    }
    return entry

