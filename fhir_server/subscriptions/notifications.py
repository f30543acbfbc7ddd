"""Notification Bundles of the Backport IG 1.1.0 on R4 (StructureDefinition
backport-subscription-notification-r4): a `history` Bundle whose first entry is the
SubscriptionStatus as R4 `Parameters` (backport-subscription-status-r4), then, for `id-only`
and `full-resource` payloads, one entry per event's resource (its URL, and the resource
itself for `full-resource`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from .. import clock
from ..model.ids import new_id
from ..store.base import Version
from .criteria import BACKPORT, Content
from .records import Event

NOTIFICATION_PROFILE = f"{BACKPORT}/backport-subscription-notification-r4"
STATUS_PROFILE = f"{BACKPORT}/backport-subscription-status-r4"
# What each interaction answered, as the entries of a history Bundle tell it.
_STATUS = {"create": "201", "update": "200", "delete": "204"}


def status_parameters(base: str, subscription: str, topic: str | None, status: str, kind: str,
                      events_since: int, events: Sequence[Event], content: Content) -> dict[str, Any]:
    """The SubscriptionStatus of a notification as R4 Parameters; `topic` and each event's
    focus are left out of `empty` payloads, as the IG asks."""
    parameters: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"{base}/Subscription/{subscription}"}}]
    if topic is not None and content != "empty":
        parameters.append({"name": "topic", "valueCanonical": topic})
    parameters += [{"name": "status", "valueCode": status}, {"name": "type", "valueCode": kind},
                   {"name": "events-since-subscription-start", "valueString": str(events_since)}]
    for event in events:
        parts: list[dict[str, Any]] = [{"name": "event-number", "valueString": str(event.number)},
                                       {"name": "timestamp", "valueInstant": event.at}]
        if content != "empty":
            parts.append({"name": "focus", "valueReference": {"reference": f"{base}/{event.reference}"}})
        parameters.append({"name": "notification-event", "part": parts})
    return {"resourceType": "Parameters", "id": new_id(), "meta": {"profile": [STATUS_PROFILE]},
            "parameter": parameters}


def _entry(base: str, event: Event, version: Version | None, content: Content) -> dict[str, Any]:
    entry: dict[str, Any] = {"fullUrl": f"{base}/{event.reference}"}
    if content == "full-resource" and version is not None and version.body is not None:
        entry["resource"] = orjson.loads(version.body)
    entry["request"] = {"method": event.method,
                        "url": event.resource_type if event.method == "POST" else event.reference}
    entry["response"] = {"status": _STATUS[event.interaction], "etag": f'W/"{event.version}"'}
    return entry


def notification(base: str, subscription: str, topic: str | None, status: str, kind: str,
                 events_since: int, events: Sequence[tuple[Event, Version | None]],
                 content: Content) -> dict[str, Any]:
    """A notification (handshake, heartbeat, event-notification, query-event) Bundle."""
    parameters = status_parameters(base, subscription, topic, status, kind, events_since,
                                   [event for event, _ in events], content)
    entries = [{"fullUrl": f"urn:uuid:{parameters['id']}", "resource": parameters,
                "request": {"method": "GET", "url": f"{base}/Subscription/{subscription}/$status"},
                "response": {"status": "200"}}]
    if content != "empty":
        entries += [_entry(base, event, version, content) for event, version in events]
    return {"resourceType": "Bundle", "id": new_id(), "meta": {"profile": [NOTIFICATION_PROFILE]},
            "type": "history", "timestamp": clock.instant(), "entry": entries}
