"""What one request did, as the services report it, for its AuditEvent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from ..search import ReferenceEntry, Registry, extract
from ..store.base import Version


@dataclass(slots=True)
class Trail:
    """The resources a request read or wrote, and the patients they belong to."""

    resources: list[str] = field(default_factory=list)  # Type/id, in order, no repeats
    patients: set[str] = field(default_factory=set)

    def touched(self, registry: Registry, version: Version | None,
                resource: dict[str, Any] | None = None) -> None:
        """Note a resource read, returned or written (a deletion: its key only)."""
        if version is None:
            return
        key = f"{version.resource_type}/{version.id}"
        if key not in self.resources:
            self.resources.append(key)
        if version.resource_type == "Patient":
            self.patients.add(version.id)
            return
        codes = registry.patient_compartment(version.resource_type)
        if not codes or (resource is None and version.body is None):
            return
        body = resource if resource is not None else orjson.loads(version.body or b"{}")
        for entry in extract(body):
            if (type(entry) is ReferenceEntry and entry.param in codes
                    and entry.type == "Patient" and entry.url is None and entry.id):
                self.patients.add(entry.id)
