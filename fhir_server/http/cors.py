"""CORS for browser apps (SMART App Launch 2.2, "CORS"): discovery and key documents answer
any origin; the token endpoint and the API answer the origins an operator lists and the
origins of every registered app's redirect URIs (an app served from there is the one that
will call us), looked up at each request so that an app registered meanwhile is served.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from urllib.parse import urlsplit

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
_HEADERS = ["Authorization", "Content-Type", "Accept", "If-Match", "If-None-Exist",
            "If-None-Match", "If-Modified-Since", "Prefer"]
_EXPOSED = ["Location", "ETag", "Last-Modified", "Content-Location", "WWW-Authenticate"]


class _AppOrigins(CORSMiddleware):
    """The operator's origins, and those `app_origins` returns at the time of the request."""

    def __init__(self, app: ASGIApp, configured: Collection[str],
                 app_origins: Callable[[], Collection[str]]) -> None:
        super().__init__(app, allow_origins=list(configured), allow_credentials=False,
                         allow_methods=_METHODS, allow_headers=_HEADERS,
                         expose_headers=_EXPOSED)
        self._app_origins = app_origins

    def is_allowed_origin(self, origin: str) -> bool:
        return super().is_allowed_origin(origin) or origin in self._app_origins()


class Cors:
    """`Access-Control-Allow-Origin: *` on `public` paths, app origins elsewhere."""

    def __init__(self, app: ASGIApp, public: Collection[str], configured: Collection[str],
                 app_origins: Callable[[], Collection[str]]) -> None:
        self.public_paths = frozenset(public)
        self.public = CORSMiddleware(app, allow_origins=["*"], allow_methods=["GET"],
                                     allow_headers=["Accept", "Authorization"])
        self.private = _AppOrigins(app, configured, app_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        public = scope["type"] == "http" and scope["path"] in self.public_paths
        await (self.public if public else self.private)(scope, receive, send)


def origins_of(uris: Collection[str]) -> set[str]:
    """The origins of `uris` as browsers send them in `Origin` (RFC 6454: lower-case scheme
    and host, the port only when not the scheme's default)."""
    origins = set()
    for uri in uris:
        parts = urlsplit(uri)
        if not parts.scheme or not parts.hostname:
            continue
        default = {"http": 80, "https": 443}.get(parts.scheme.lower())
        port = "" if parts.port in (None, default) else f":{parts.port}"
        origins.add(f"{parts.scheme.lower()}://{parts.hostname}{port}")
    return origins
