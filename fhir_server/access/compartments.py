"""Which patients a resource belongs to: the one answer the reach checks, the audit trail and
the investigator lookups share (compartmentdefinition-patient)."""

from __future__ import annotations

from collections.abc import Iterable

from ..search import IndexEntry, ReferenceEntry, Registry


def patients_of(registry: Registry, resource_type: str, entries: Iterable[IndexEntry],
                id: str | None = None) -> set[str]:
    """Ids of the patients whose compartment holds a resource, from its index `entries`:
    a Patient itself (its `id`), and each patient its compartment parameters reference on
    this server (`Patient/<id>`; absolute URLs name no patient of ours)."""
    codes = registry.patient_compartment(resource_type)
    found = {id} if resource_type == "Patient" and id else set()
    found.update(entry.id for entry in entries
                 if type(entry) is ReferenceEntry and entry.param in codes
                 and entry.type == "Patient" and entry.url is None and entry.id)
    return found
