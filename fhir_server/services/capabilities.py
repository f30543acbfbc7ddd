"""The CapabilityStatement (FHIR R4 capabilitystatement.html, http.html#capabilities).

Generated from what this server implements; a feature is listed here only once it works and is
tested. `INTERACTIONS` is the single list the routes are written against.
"""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..model.bundle import now_instant
from ..model.types import RESOURCE_TYPES
from ..search import Registry

INTERACTIONS = ("read", "vread", "update", "patch", "delete", "history-instance",
                "history-type", "create")
SYSTEM_INTERACTIONS = ("history-system",)


def _search_params(registry: Registry, resource_type: str) -> list[dict[str, Any]]:
    params = registry.for_type(resource_type)
    return [
        {"name": code, "definition": p.url, "type": p.type}
        for code, p in sorted(params.items())
        if p.url
    ]


def capability_statement(registry: Registry, base_url: str, *, conditional_delete_multiple: bool) -> dict[str, Any]:
    """The server's CapabilityStatement (kind `instance`)."""
    resources = [
        {
            "type": resource_type,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{resource_type}",
            "interaction": [{"code": code} for code in INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "not-supported",
            "conditionalUpdate": True,
            "conditionalDelete": "multiple" if conditional_delete_multiple else "single",
            "searchParam": _search_params(registry, resource_type),
        }
        for resource_type in sorted(RESOURCE_TYPES)
    ]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": now_instant(),
        "publisher": "fhir-server",
        "kind": "instance",
        "software": {"name": "fhir-server", "version": __version__},
        "implementation": {"description": "FHIR R4 server", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [
            {
                "mode": "server",
                "resource": resources,
                "interaction": [{"code": code} for code in SYSTEM_INTERACTIONS],
            }
        ],
    }
