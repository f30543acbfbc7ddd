"""What one request did, as the services report it, for its AuditEvents."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..search import IndexEntry, Registry, extract, patients_of
from ..store.base import Version


@dataclass(slots=True)
class Trail:
    """The resources a request read or wrote (`Type/id`, in order), each with the patients
    whose compartment it lies in (none: it is no patient's data)."""

    owners: dict[str, frozenset[str]] = field(default_factory=dict)
    # Patients the request asked something of from outside the caller's reach (a
    # practitioner's proposed Consent, each try of its code): recorded for them all the same.
    asked: set[str] = field(default_factory=set)
    # The parameters of a search sent as a form (POST `_search`), recorded as a GET's query
    # string is (services/search.py): the audit layer only sees the URL.
    query: str | None = None

    @property
    def patients(self) -> set[str]:
        """Every patient whose data the request read or wrote."""
        return {patient for owners in self.owners.values() for patient in owners}

    def touched(self, registry: Registry, version: Version | None,
                resource: dict[str, Any] | None = None,
                entries: Sequence[IndexEntry] | None = None) -> None:
        """Note a resource read, returned or written (a deletion: its key only); `entries`:
        its index entries, when the caller extracted them already."""
        if version is None:
            return
        key = f"{version.resource_type}/{version.id}"
        if key in self.owners:
            return
        type_ = version.resource_type
        if entries is None:
            entries = ()
            if type_ != "Patient" and registry.patient_compartment(type_):
                if resource is None and version.body is not None:
                    resource = orjson.loads(version.body)
                entries = extract(resource) if resource is not None else ()
        self.owners[key] = owners_of(registry, type_, version.id, entries)


def owners_of(registry: Registry, resource_type: str, id: str,
              entries: Iterable[IndexEntry]) -> frozenset[str]:
    """The patients whose compartment a resource with index `entries` lies in (a Patient's
    links not followed, as access does not)."""
    return frozenset(patients_of(registry, resource_type, entries, id, links=False))
