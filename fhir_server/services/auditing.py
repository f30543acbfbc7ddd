"""The audit of one request, begun by the HTTP layer and kept by the service layer: the
services note on its trail what they read and write (guard.note), its store keeps the
record of each write in the write's own unit of work, and its events are recorded before
the response leaves (audit/recorder.py; who sees what: audit/events.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import clock
from ..access import Principal
from ..audit.events import interaction_of, request_events
from ..audit.recorder import AuditRecorder, RequestRecord
from ..audit.trail import Trail


def begin(recorder: AuditRecorder, *, method: str, path: str, query: str | None,
          address: str | None, principal: Callable[[], Principal | None]) -> RequestRecord:
    """The audit record of a request to `path` (relative to the FHIR base) by the caller
    `principal()` names once known (None before authentication, or without a token)."""
    interaction = interaction_of(method, path)

    def events_of(trail: Trail, status: int) -> list[dict[str, Any]]:
        return request_events(interaction=interaction, status=status, recorded=clock.instant(),
                              principal=principal(), address=address, trail=trail, query=query)

    return recorder.begin(events_of)
