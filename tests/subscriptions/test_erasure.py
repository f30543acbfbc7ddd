"""`Patient/$erase` reaches the subscriptions' events, on both stores: the events, pending and
numbered, whose resource is the patient or in their compartment are removed with the
erasure, counted in its AuditEvent, and `$events` no longer returns them
(docs/subscriptions.md "Erasure"; docs/backup-and-erasure.md)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi.testclient import TestClient

from fhir_server.auth.users import Users
from fhir_server.subscriptions import forget_events
from tests.builders import observation
from tests.http.helpers import send
from tests.subscriptions.conftest import dispatch
from tests.subscriptions.receiver import Receiver
from tests.subscriptions.test_delivery import subscribe, subscription, update_patient

ADMIN = "Practitioner/admin"


def _admin(client: TestClient) -> dict[str, str]:
    Users(client.app.state.oauth.registry).add(  # type: ignore[attr-defined]
        "admin", "a long enough password", ADMIN, admin=True)
    issued = client.app.state.tokens.issue(  # type: ignore[attr-defined]
        subject="admin", client_id="portal", scope="user/*.cruds", fhir_user=ADMIN)
    return {"Authorization": f"Bearer {issued['access_token']}"}


def _erase(client: TestClient, admin: dict[str, str], patient: str) -> None:
    response = send(client, "POST", f"/fhir/Patient/{patient}/$erase", {
        "resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "asked"}]}, **admin)
    assert response.status_code == 200, response.text


def _focuses(bundle: dict[str, Any]) -> list[str]:
    return [part["valueReference"]["reference"].rsplit("/fhir/", 1)[1]
            for p in bundle["entry"][0]["resource"]["parameter"] if p["name"] == "notification-event"
            for part in p["part"] if part["name"] == "focus"]


def _kept(client: TestClient) -> list[str]:
    """The events kept, pending and numbered, as of one read: two reads (one per prefix) would
    count twice an event the background loop numbers between them."""
    store = client.app.state.dispatcher.store  # type: ignore[attr-defined]
    return [key for key, _ in client.portal.call(store.outbox, "subs/")  # type: ignore[union-attr]
            if key.startswith(("subs/p/", "subs/e/"))]


def test_erasure_removes_the_patients_events_pending_and_numbered(client: TestClient, hook: Receiver) -> None:
    admin = _admin(client)
    for id in ("a", "b"):
        update_patient(client, id, "Before")
    topic = subscribe(client, subscription(hook.url))
    body = subscription(hook.url, topic="Observation?status=final")
    del body["channel"]["_payload"]
    classic = subscribe(client, body)
    dispatch(client)  # handshakes
    update_patient(client, "a", "One")
    update_patient(client, "b", "One")
    assert send(client, "PUT", "/fhir/Observation/a-obs", {**observation("Patient/a"), "id": "a-obs"}
                ).status_code == 201
    dispatch(client, 2)  # numbered and delivered
    hook.answers = [500]
    update_patient(client, "a", "Two")
    dispatch(client)  # numbered, its delivery failed: retried in a second at most
    update_patient(client, "a", "Three")  # pending (unless the background loop numbers it)
    update_patient(client, "b", "Two")
    before = _kept(client)
    assert _focuses(client.get(f"/fhir/Subscription/{topic}/$events").json()).count("Patient/a") >= 2
    erased_at = len(hook.received)
    _erase(client, admin, "a")
    # a's three Patient events and its Observation's one; b's stay.
    assert len(_kept(client)) == len(before) - 4
    replay = _focuses(client.get(f"/fhir/Subscription/{topic}/$events").json())
    assert "Patient/a" not in replay and "Patient/b" in replay
    assert _focuses(client.get(f"/fhir/Subscription/{classic}/$events?content=id-only").json()) == []
    audit = client.get("/fhir/AuditEvent?entity-name=Patient/a&_count=100").json()
    [erasure] = [e["resource"] for e in audit["entry"] if e["resource"]["action"] == "D"]
    details = {d["type"]: d["valueString"] for d in erasure["entity"][0]["detail"]}
    assert details["subscription events"] == "4"
    # Idempotent: nothing more to remove; delivery goes on over the gap the erasure left.
    _erase(client, admin, "a")
    assert len(_kept(client)) == len(before) - 4
    time.sleep(1.1)
    dispatch(client, 2)
    notified = hook.of_kind("event-notification")
    late = [f for r in notified if hook.received.index(r) >= erased_at for f in _focuses(r.json())]
    assert "Patient/a" not in late  # nothing erased is sent
    # b's two updates, each sent once: after the erasure, or before it if the background loop's
    # retry got through first (a race this test cannot close).
    assert [f for r in notified for f in _focuses(r.json())].count("Patient/b") == 2
    assert client.get(f"/fhir/Subscription/{topic}").json()["status"] == "active"


def test_numbering_does_not_bring_back_an_event_an_erasure_removed_meanwhile(
        client: TestClient, hook: Receiver) -> None:
    """The dispatcher reads the pending events, an erasure removes one, then the dispatcher
    commits their numbered copies: that commit must fail (and be tried again from a new
    read), not write the erased patient's event back, and the subscription stays active."""
    update_patient(client, "a", "Before")
    topic = subscribe(client, subscription(hook.url))
    dispatch(client)  # handshake
    store = client.app.state.dispatcher.store  # type: ignore[attr-defined]
    read = store.outbox
    erased: list[int] = []

    async def racing(prefix: str) -> list[tuple[str, bytes]]:
        found = await read(prefix)
        if prefix.startswith("subs/p/") and found and not erased:
            erased.append(0)  # once (forget_events reads the outbox too)
            erased[0] = len(await forget_events(store, "a"))  # between the read and the commit
        return list(found)

    store.outbox = racing
    try:
        update_patient(client, "a", "One")
        dispatch(client, 2)
    finally:
        del store.outbox
    assert erased == [1]
    assert _kept(client) == []
    assert client.get(f"/fhir/Subscription/{topic}").json()["status"] == "active"


def test_an_event_numbered_between_the_erasures_reads_is_removed_and_counted_once(
        client: TestClient, hook: Receiver) -> None:
    """The erasure lists pending events, then numbered ones: an event the dispatcher numbers
    between the two reads is listed twice. Both its keys go, and it counts as one event."""
    update_patient(client, "a", "Before")
    topic = subscribe(client, subscription(hook.url))
    dispatch(client)  # handshake
    update_patient(client, "a", "One")  # pending
    store = client.app.state.dispatcher.store  # type: ignore[attr-defined]
    read = store.outbox
    dispatcher = client.app.state.dispatcher  # type: ignore[attr-defined]

    async def racing(prefix: str) -> list[tuple[str, bytes]]:
        found = await read(prefix)
        if prefix == "subs/p/":
            assert found  # the pending event, listed before the dispatcher numbers it
            await dispatcher.round()
            await asyncio.gather(*dispatcher.serving.values())
        return list(found)

    store.outbox = racing
    try:
        removed = client.portal.call(forget_events, store, "a")  # type: ignore[union-attr]
    finally:
        del store.outbox
    assert len(removed) == 1
    assert _kept(client) == []
    assert client.get(f"/fhir/Subscription/{topic}").json()["status"] == "active"
