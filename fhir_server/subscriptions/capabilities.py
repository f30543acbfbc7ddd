"""What the CapabilityStatement says of Subscriptions (Backport IG 1.1.0, conformance.html):
the topics offered."""

from __future__ import annotations

from typing import Any

from .topics import topics

TOPIC_CANONICAL = ("http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
                   "capabilitystatement-subscriptiontopic-canonical")


def subscription_capabilities(entry: dict[str, Any]) -> None:
    """Complete the CapabilityStatement's `rest.resource` entry of Subscription."""
    entry["extension"] = [{"url": TOPIC_CANONICAL, "valueCanonical": url} for url in sorted(topics())]
