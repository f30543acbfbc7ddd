"""AuditEvents for every request to the FHIR API, whatever its outcome (denials included),
written once the response is ready and before it is sent (audit/events.py says what they
hold). `metadata` and discovery are public documents and are not audited."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from starlette.responses import Response

from .. import clock
from ..audit.events import interaction_of, request_events
from ..audit.recorder import AuditRecorder
from ..audit.trail import Trail

_PUBLIC = ("/metadata", "/.well-known/")


def install_audit(app: FastAPI, base_path: str, recorder: AuditRecorder) -> None:
    """Audit the requests under `base_path`."""

    @app.middleware("http")
    async def audit(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        path = request.url.path
        relative = path[len(base_path):]
        if not path.startswith(base_path) or relative.startswith(_PUBLIC):
            return await call_next(request)
        trail = request.state.trail = Trail()
        response = await call_next(request)
        query = request.url.query or None
        await recorder.record_all(request_events(
            interaction=interaction_of(request.method, relative), status=response.status_code,
            recorded=clock.instant(), principal=getattr(request.state, "principal", None),
            address=request.client.host if request.client else None, trail=trail,
            query=query if request.method == "GET" else None))
        return response
