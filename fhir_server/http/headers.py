"""FHIR request and response headers: If-Match, Prefer, ETag, Location, Last-Modified."""

from __future__ import annotations

import re

from starlette.requests import Request

from ..model.bundle import etag
from ..model.errors import Kind, fail
from ..model.http_dates import http_date
from ..model.numbers import whole_number
from ..store.base import Version

_ETAG = re.compile(r'\s*(?:W/)?"([0-9]+)"\s*')


def if_match(request: Request) -> int | None:
    """The version an If-Match header requires (`W/"3"`), or None; INVALID if malformed."""
    value = request.headers.get("if-match")
    if value is None:
        return None
    found = _ETAG.fullmatch(value)
    version = whole_number(found.group(1)) if found else None
    if version is None:
        raise fail(Kind.INVALID, "value", 'If-Match must be an ETag such as W/"3".',
                   details_code="MSG_VERSION_AWARE_URL")
    return version


def prefer(request: Request, name: str) -> str | None:
    """The value of one `Prefer` preference (e.g. return, handling), lower-cased."""
    for header in request.headers.getlist("prefer"):
        for part in header.split(","):
            key, _, value = part.strip().partition("=")
            if key.strip().lower() == name:
                return value.strip().strip('"').lower()
    return None


def version_headers(version: Version, location: str | None = None) -> dict[str, str]:
    """ETag, Last-Modified and (optionally) Location of a stored version."""
    headers = {"ETag": etag(version.version), "Last-Modified": http_date(version.last_updated)}
    if location is not None:
        headers["Location"] = location
    return headers
