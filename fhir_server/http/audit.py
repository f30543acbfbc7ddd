"""AuditEvents for every request to the FHIR API, whatever its outcome (denials and failures
included), recorded once the response is ready and before its first byte is sent
(audit/events.py says what they hold; audit/recorder.py how a write keeps its record until
then). `metadata` and discovery are public documents and are not audited.

A plain ASGI middleware: it holds back the response's start message until the request's
events are durable, and leaves the body to stream through untouched."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import clock
from ..audit.events import interaction_of, request_events
from ..audit.recorder import AuditRecorder
from ..audit.trail import Trail

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
        request = Request(scope)
        query = request.url.query if request.method == "GET" else None

        def events_of(trail: Trail, status: int) -> list[dict[str, Any]]:
            return request_events(
                interaction=interaction_of(request.method, relative), status=status,
                recorded=clock.instant(), principal=getattr(request.state, "principal", None),
                address=request.client.host if request.client else None, trail=trail,
                query=query or None)

        record = self.recorder.begin(events_of)
        request.state.trail = record.trail
        request.state.store = record.store
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
