"""AuditEvents for every request to the FHIR API, whatever its outcome (denials and failures
included), recorded once the response is ready and before its first byte is sent
(services/auditing.py). `metadata` and discovery are public documents and are not audited.

A plain ASGI middleware: it holds back the response's start message until the request's
events are durable, and leaves the body to stream through untouched."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..services import auditing
from ..services.auditing import AuditRecorder

_PUBLIC = ("/metadata", "/.well-known/")


def install_audit(app: FastAPI, base_path: str, recorder: AuditRecorder) -> None:
    """Audit the requests under `base_path`."""
    app.add_middleware(AuditMiddleware, base_path=base_path, recorder=recorder)


class AuditMiddleware:
    """Audit the HTTP requests under `base_path`."""

    def __init__(self, app: ASGIApp, base_path: str, recorder: AuditRecorder) -> None:
        self.app = app
        self.base_path = base_path
        self.recorder = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        relative = path[len(self.base_path):]
        if (scope["type"] != "http" or not path.startswith(self.base_path)
                or relative.startswith(_PUBLIC)):
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})  # what `request.state` holds
        method: str = scope["method"]
        client = scope.get("client")
        # From the scope, not `request.url` (which rebuilds and re-parses the whole URL).
        record = auditing.begin(
            self.recorder, method=method, path=relative,
            query=(scope.get("query_string", b"").decode("latin-1") or None) if method == "GET" else None,
            address=client[0] if client else None,
            principal=lambda: state.get("principal"))
        state["trail"] = record.trail
        state["store"] = record.store
        recorded = False

        async def send_recorded(message: Message) -> None:
            nonlocal recorded
            if message["type"] == "http.response.start":
                recorded = True
                await record.finish(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_recorded)
        except Exception:
            if not recorded:  # the server error the outer layer answers
                await record.finish(500)
            raise
        finally:
            # The state reaches the record (its store) and the record the state (the
            # principal its events name): a reference cycle, which only the garbage collector
            # would free, with the request's scope and all it holds. Cut here, the request's
            # objects go when their last reference does.
            del state["store"]
