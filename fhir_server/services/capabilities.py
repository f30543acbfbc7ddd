"""The CapabilityStatement (FHIR R4 capabilitystatement.html, http.html#capabilities).

Generated from what this server implements; a feature is listed here only once it works and is
tested. `INTERACTIONS` is the single list the routes are written against.
"""

from __future__ import annotations

from typing import Any

from .. import __version__
from .. import clock
from ..model import profiles
from ..model.platform_codes import definitions
from ..model.summary import mark_subsetted
from ..model.types import RESOURCE_TYPES
from ..search import Registry
from ..subscriptions import subscription_capabilities

INTERACTIONS = ("read", "vread", "update", "patch", "delete", "history-instance",
                "history-type", "create", "search-type")
SYSTEM_INTERACTIONS = ("history-system", "search-system")
# `$validate` on every type and instance (services/validate.py)
VALIDATE_DEFINITION = "http://hl7.org/fhir/OperationDefinition/Resource-validate"
# Bulk Data Access IG 2.0.0 (services/export.py): the system, Patient and Group operations.
BULK_DATA = "http://hl7.org/fhir/uv/bulkdata"
BULK_EXPORTS = {"Patient": "patient-export", "Group": "group-export"}
# The audit trail is written by the server alone (access/policy.py): read and searched only.
READ_ONLY_TYPES = {"AuditEvent": ("read", "vread", "history-instance", "history-type",
                                  "search-type")}
# Defined in the R4 registry but not implemented: never advertised (`_content`, where a
# SearchParameter of ours gives it an expression, is: search/content.py).
UNSUPPORTED_PARAMS = frozenset({"_text", "_content", "_query", "_list", "_filter", "_containedType",
                                "_contained"})


def _search_params(registry: Registry, resource_type: str) -> list[dict[str, Any]]:
    params = registry.for_type(resource_type)
    return [
        {"name": code, "definition": p.url, "type": p.type,
         # `_content` is implemented for some types only (search/content.py): say how.
         **({"documentation": p.description} if code == "_content" else {})}
        for code, p in sorted(params.items())
        if (code not in UNSUPPORTED_PARAMS or p.expression) and (p.expression or code in ("_id", "_lastUpdated"))
    ]


def _includes(registry: Registry, resource_type: str) -> list[str]:
    params = registry.for_type(resource_type)
    return ["*"] + [f"{resource_type}:{code}" for code, p in sorted(params.items())
                    if p.type == "reference" and p.expression]


def _revincludes(registry: Registry, resource_type: str) -> list[str]:
    found = []
    for source in sorted(RESOURCE_TYPES):
        for code, p in sorted(registry.for_type(source).items()):
            if p.type == "reference" and p.expression and (not p.targets or resource_type in p.targets):
                found.append(f"{source}:{code}")
    return found


def _operations() -> dict[str, list[dict[str, str]]]:
    """The operations we define (profiles/OperationDefinition-*.json), by resource type."""
    by_type: dict[str, list[dict[str, str]]] = {}
    for d in definitions():
        if d["resourceType"] == "OperationDefinition":
            for type_name in d["resource"]:
                by_type.setdefault(type_name, []).append({"name": d["code"], "definition": d["url"]})
    for type_name, code in BULK_EXPORTS.items():
        by_type.setdefault(type_name, []).append(
            {"name": "export", "definition": f"{BULK_DATA}/OperationDefinition/{code}"})
    return by_type


def capability_statement(registry: Registry, base_url: str, *, conditional_delete_multiple: bool,
                         oauth_uris: dict[str, str] | None = None) -> dict[str, Any]:
    """The server's CapabilityStatement (kind `instance`).

    `oauth_uris` (SMART: token, introspect, revoke, ... endpoint URLs) puts a `security`
    element with the SMART `oauth-uris` extension in, which some clients read instead of the
    discovery document.
    """
    operations = _operations()
    supported = profiles.by_type()  # the profiles `$validate` and `meta.profile` check
    resources = [
        {
            "type": resource_type,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{resource_type}",
            "interaction": [{"code": code}
                            for code in READ_ONLY_TYPES.get(resource_type, INTERACTIONS)],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": resource_type not in READ_ONLY_TYPES,
            "conditionalCreate": resource_type not in READ_ONLY_TYPES,
            "conditionalRead": "not-supported",
            "conditionalUpdate": resource_type not in READ_ONLY_TYPES,
            "conditionalDelete": ("not-supported" if resource_type in READ_ONLY_TYPES
                                  else "multiple" if conditional_delete_multiple else "single"),
            "searchInclude": _includes(registry, resource_type),
            "searchRevInclude": _revincludes(registry, resource_type),
            "searchParam": _search_params(registry, resource_type),
            **({"supportedProfile": supported[resource_type]} if resource_type in supported else {}),
            **({"operation": operations[resource_type]} if resource_type in operations else {}),
        }
        for resource_type in sorted(RESOURCE_TYPES)
    ]
    subscription_capabilities(next(r for r in resources if r["type"] == "Subscription"))
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": clock.instant(),
        "publisher": "fhir-server",
        "kind": "instance",
        "instantiates": [f"{BULK_DATA}/CapabilityStatement/bulk-data"],
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
                "operation": [{"name": "validate", "definition": VALIDATE_DEFINITION},
                              {"name": "export", "definition": f"{BULK_DATA}/OperationDefinition/export"}],
                "compartment": ["http://hl7.org/fhir/CompartmentDefinition/patient"],
                **({"security": _security(oauth_uris)} if oauth_uris else {}),
            }
        ],
    }


def _security(oauth_uris: dict[str, str]) -> dict[str, Any]:
    """rest.security for SMART on FHIR (SMART App Launch: capability statement)."""
    return {
        "extension": [{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": [{"url": name, "valueUri": uri} for name, uri in oauth_uris.items()],
        }],
        "service": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
            "code": "SMART-on-FHIR"}], "text": "OAuth2 using SMART-on-FHIR profile"}],
        "description": "SMART App Launch (standalone, PKCE S256) and SMART Backend Services "
                       "(client_credentials with private_key_jwt).",
    }


# The elements of R4's CapabilityStatement marked isSummary (capabilitystatement.html; kept
# equal to the official definition by tests/services/test_capabilities.py). An element listed
# with children keeps only those; one listed without keeps its whole content.
SUMMARY_ELEMENTS = frozenset({
    "id", "meta", "implicitRules", "url", "version", "name", "title", "status", "experimental",
    "date", "publisher", "contact", "useContext", "jurisdiction", "kind", "instantiates",
    "imports", "software", "software.name", "software.version", "software.releaseDate",
    "implementation", "implementation.description", "implementation.url",
    "implementation.custodian", "fhirVersion", "format", "patchFormat", "implementationGuide",
    "rest", "rest.mode", "rest.security", "rest.security.cors", "rest.security.service",
    "rest.resource", "rest.resource.type", "rest.resource.profile",
    "rest.resource.supportedProfile", "rest.resource.operation", "rest.resource.operation.name",
    "rest.resource.operation.definition", "rest.operation", "messaging",
    "messaging.supportedMessage", "messaging.supportedMessage.mode",
    "messaging.supportedMessage.definition", "document", "document.mode", "document.profile",
})


def summary_view(statement: dict[str, Any]) -> dict[str, Any]:
    """The statement as `_summary=true` gives it: its summary elements, marked SUBSETTED."""
    return mark_subsetted({"resourceType": statement["resourceType"], **_summary(statement, "")})


def _summary(node: dict[str, Any], path: str) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key, value in node.items():
        name = f"{path}{key.removeprefix('_')}"
        if name not in SUMMARY_ELEMENTS and key != "modifierExtension":
            continue
        if not any(e.startswith(f"{name}.") for e in SUMMARY_ELEMENTS):
            kept[key] = value
        elif isinstance(value, list):
            kept[key] = [_summary(item, f"{name}.") for item in value]
        else:
            kept[key] = _summary(value, f"{name}.")
    return kept
