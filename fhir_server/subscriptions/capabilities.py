"""What the CapabilityStatement says of Subscriptions (Backport IG 1.1.0, conformance.html):
the topics offered, the backport profile and the `$status` and `$events` operations. No
websocket channel is offered, so none is advertised."""

from __future__ import annotations

from typing import Any

from .criteria import PROFILE
from .topics import topics

TOPIC_CANONICAL = ("http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
                   "capabilitystatement-subscriptiontopic-canonical")
OPERATIONS = "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition"


def subscription_capabilities(entry: dict[str, Any]) -> None:
    """Complete the CapabilityStatement's `rest.resource` entry of Subscription."""
    entry["extension"] = [{"url": TOPIC_CANONICAL, "valueCanonical": url} for url in sorted(topics())]
    entry["supportedProfile"] = [*entry.get("supportedProfile", []), PROFILE]
    entry["operation"] = [*entry.get("operation", []),
                          {"name": "status", "definition": f"{OPERATIONS}/backport-subscription-status"},
                          {"name": "events", "definition": f"{OPERATIONS}/backport-subscription-events"}]
