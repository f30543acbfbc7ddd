"""What one request did, as the services report it, for its AuditEvents."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from ..search import ReferenceEntry, Registry, extract
from ..store.base import Version


@dataclass(slots=True)
class Trail:
    """The resources a request read or wrote (`Type/id`, in order), each with the patients
    whose compartment it lies in (none: it is no patient's data)."""

    owners: dict[str, frozenset[str]] = field(default_factory=dict)

    @property
    def patients(self) -> set[str]:
        """Every patient whose data the request read or wrote."""
        return {patient for owners in self.owners.values() for patient in owners}

    def touched(self, registry: Registry, version: Version | None,
                resource: dict[str, Any] | None = None) -> None:
        """Note a resource read, returned or written (a deletion: its key only)."""
        if version is None:
            return
        key = f"{version.resource_type}/{version.id}"
        if key in self.owners:
            return
        self.owners[key] = _owners(registry, version, resource)


def _owners(registry: Registry, version: Version,
            resource: dict[str, Any] | None) -> frozenset[str]:
    """The patients whose compartment a stored version lies in."""
    if version.resource_type == "Patient":
        return frozenset((version.id,))
    codes = registry.patient_compartment(version.resource_type)
    if not codes or (resource is None and version.body is None):
        return frozenset()
    body = resource if resource is not None else orjson.loads(version.body or b"{}")
    return frozenset(entry.id for entry in extract(body)
                     if type(entry) is ReferenceEntry and entry.param in codes
                     and entry.type == "Patient" and entry.url is None and entry.id)
