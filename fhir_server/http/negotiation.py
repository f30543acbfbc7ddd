"""Content negotiation (FHIR R4 http.html#mime-type, #general-parameters): JSON only.

Requests may send `application/fhir+json` or `application/json` (and
`application/json-patch+json` for PATCH); `_format` overrides Accept; `_pretty=true` indents.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..model import jsonbody
from ..model.errors import Kind, fail

FHIR_JSON = "application/fhir+json"
JSON_PATCH = "application/json-patch+json"
FORM = "application/x-www-form-urlencoded"
NDJSON_TYPES = frozenset({"application/fhir+ndjson", "application/ndjson"})
_JSON_TYPES = {FHIR_JSON, "application/json", "application/json+fhir", "text/json"}
_FORMAT_ALIASES = {"json", "application/json", "application/fhir+json", "application/json+fhir",
                   "text/json"}
_ACCEPTABLE = {*_JSON_TYPES, "*/*", "application/*"}


def media_type(header: str | None) -> str:
    """The bare media type of a Content-Type or Accept item, lower-cased."""
    return (header or "").split(";", 1)[0].strip().lower()


def check_acceptable(request: Request) -> None:
    """NOT_ACCEPTABLE if the client can take no JSON answer (checked before any work)."""
    fmt = request.query_params.get("_format")
    if fmt is not None:
        if fmt.replace(" ", "+").lower() not in _FORMAT_ALIASES:
            raise fail(Kind.NOT_ACCEPTABLE, "not-supported",
                       f"_format '{fmt}' is not supported; this server speaks JSON only.",
                       expression="_format")
        return
    accept = request.headers.get("accept")
    if not accept:
        return
    offered = {media_type(item) for item in accept.split(",")}
    if not offered & _ACCEPTABLE:
        raise fail(Kind.NOT_ACCEPTABLE, "not-supported",
                   f"Cannot answer in {accept}; this server produces {FHIR_JSON}.")


async def read_body(request: Request, limit: int, *, patch: bool = False, form: bool = False,
                    ndjson: bool = False) -> bytes:
    """The request body after checking its media type and size."""
    header = request.headers.get("content-type")
    kind = media_type(header)
    allowed = {JSON_PATCH} if patch else {FORM} if form else NDJSON_TYPES if ndjson else _JSON_TYPES
    if kind not in allowed:
        wanted = JSON_PATCH if patch else FORM if form else "application/fhir+ndjson" if ndjson else FHIR_JSON
        raise fail(Kind.UNSUPPORTED_MEDIA_TYPE, "not-supported",
                   f"Content-Type '{kind or 'none'}' is not supported here; send {wanted}.")
    charset = _charset(header or "")
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        # json.html: FHIR JSON is UTF-8; decoding it as UTF-8 anyway would store other text.
        raise fail(Kind.UNSUPPORTED_MEDIA_TYPE, "not-supported",
                   f"charset '{charset[:40]}' is not supported; send UTF-8.")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _charset(header: str) -> str | None:
    """The charset parameter of a Content-Type header, unquoted, if any."""
    for parameter in header.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"')
    return None


def _too_large(limit: int) -> Exception:
    return fail(Kind.TOO_LARGE, "too-costly", f"The body exceeds the limit of {limit} bytes.")


def _pretty(request: Request) -> bool:
    return request.query_params.get("_pretty", "").lower() == "true"


def fhir_response(
    request: Request,
    content: Any,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Render a resource (dict) or already-serialised JSON bytes as FHIR JSON."""
    if isinstance(content, bytes):
        body = jsonbody.dump(jsonbody.load_exact(content), pretty=True) if _pretty(request) else content
    else:
        body = jsonbody.dump(content, pretty=_pretty(request))
    response = Response(body, status_code=status, media_type=f"{FHIR_JSON}; charset=utf-8")
    if headers:
        response.headers.update(headers)
    return response


def empty_response(status: int, headers: Mapping[str, str] | None = None) -> Response:
    """A response without a body (Prefer: return=minimal, 204)."""
    return Response(b"", status_code=status, headers=dict(headers or {}))


