"""Which patients a resource belongs to: the one answer the reach checks, the audit trail and
the investigator lookups share (compartmentdefinition-patient)."""

from __future__ import annotations

from collections.abc import Iterable

from .entries import IndexEntry, ReferenceEntry
from .registry import Registry


def patients_of(registry: Registry, resource_type: str, entries: Iterable[IndexEntry],
                id: str | None = None, *, links: bool = True) -> set[str]:
    """Ids of the patients whose compartment holds a resource, from its index `entries`:
    a Patient itself (its `id`), and each patient its compartment parameters reference on
    this server (`Patient/<id>`; absolute URLs name no patient of ours). `links=False` leaves
    out the patients a Patient's `link` names, as access does (docs/auth.md, "Patient.link");
    a write naming them is still a write into their compartment."""
    codes = registry.patient_compartment(resource_type)
    if not links and resource_type == "Patient":
        codes = tuple(code for code in codes if code != "link")
    found = {id} if resource_type == "Patient" and id else set()
    found.update(entry.id for entry in entries
                 if type(entry) is ReferenceEntry and entry.param in codes
                 and entry.type == "Patient" and entry.url is None and entry.id)
    return found
