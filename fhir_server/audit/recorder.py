"""Writing AuditEvents: stored like any resource (so a patient's own can be searched), then
chained (audit/chain.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from ..model.ids import new_id
from ..search import extract
from ..store.base import Store, Write
from .chain import Chain


class AuditRecorder:
    """Stores each AuditEvent and appends its link, in that order."""

    def __init__(self, store: Store, chain: Chain) -> None:
        self.store = store
        self.chain = chain

    async def record(self, event: dict[str, Any]) -> str:
        """Store `event` under a new id and chain it; returns the id."""
        id = new_id()
        resource = {**event, "id": id}
        await self.store.commit([Write("AuditEvent", id, resource, extract(resource), "POST",
                                       create_only=True)])
        await asyncio.to_thread(self.chain.append, id, resource)
        return id
