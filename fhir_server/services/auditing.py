"""The audit of one request, begun by the HTTP layer and kept by the service layer: the
services note on its trail what they read and write (guard.note), its store keeps the
record of each write in the write's own unit of work, and its events are recorded before
the response leaves (audit/recorder.py; who sees what: audit/events.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from .. import clock
from ..access import Principal
from ..audit.events import interaction_of, request_events
from ..audit.recorder import AuditRecorder, RequestRecord
from ..audit.trail import Trail
from ..search import PROTECTED_CODES

# What stands in a recorded query for the value of a protected parameter.
REDACTED = "***"
_PROTECTED = frozenset(PROTECTED_CODES)
# Not blinded (dates stay range-searchable) but personal all the same, and free text that
# may name anyone.
_PERSONAL = frozenset({"birthdate", "death-date", "_content", "_text", "_filter"})


def begin(recorder: AuditRecorder, *, method: str, path: str, query: str | None,
          address: str | None, principal: Callable[[], Principal | None]) -> RequestRecord:
    """The audit record of a request to `path` (relative to the FHIR base) by the caller
    `principal()` names once known (None before authentication, or without a token)."""
    interaction = interaction_of(method, path)
    query = without_protected_values(query) if query else query

    def events_of(trail: Trail, status: int) -> list[dict[str, Any]]:
        asked = without_protected_values(trail.query) if trail.query else query
        return request_events(interaction=interaction, status=status, recorded=clock.instant(),
                              principal=principal(), address=address, trail=trail, query=asked)

    return recorder.begin(events_of)


def without_protected_values(query: str) -> str:
    """`query` with the value of each parameter that names a protected one (search/blind.py:
    names, identifiers, contact points, addresses; directly, with a modifier or at the end
    of a chain), birth and death dates or free text replaced by REDACTED. The auditors' event that keeps the query
    is sealed under the AuditEvent type's key, which no erasure destroys: a patient's name
    searched for must not outlive their own key there (docs/audit.md)."""
    parts = []
    for part in query.split("&"):
        name, equals, value = part.partition("=")
        words = set(unquote(name).replace(".", ":").split(":"))
        if equals and value and (words & _PROTECTED or words & _PERSONAL):
            part = f"{name}={REDACTED}"
        parts.append(part)
    return "&".join(parts)
