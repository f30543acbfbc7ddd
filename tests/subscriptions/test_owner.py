"""What a Subscription's owner and its records come to: without a recorded owner (created by
PUT) no handshake, `error`; deleted, its events and records go with it."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.http.helpers import send
from tests.subscriptions.conftest import dispatch
from tests.subscriptions.receiver import Receiver
from tests.subscriptions.test_delivery import status_of, subscribe, subscription, update_patient


def test_a_subscription_created_by_put_gets_no_handshake(client: TestClient, hook: Receiver) -> None:
    response = send(client, "PUT", "/fhir/Subscription/s1", {**subscription(hook.url), "id": "s1"})
    assert response.status_code == 201, response.text
    dispatch(client)
    assert not hook.received
    assert status_of(client, "s1") == "error"
    assert "owner" in client.get("/fhir/Subscription/s1").json()["error"]


def test_deleting_a_subscription_removes_its_events(client: TestClient, hook: Receiver) -> None:
    update_patient(client, "p1", "A")
    id = subscribe(client, subscription(hook.url))
    dispatch(client)
    update_patient(client, "p1", "B")
    dispatch(client)
    update_patient(client, "p1", "C")  # one numbered and sent, one pending
    store = client.app.state.dispatcher.store  # type: ignore[attr-defined]
    assert client.portal.call(store.outbox, f"subs/e/{id}/")  # type: ignore[union-attr]
    assert send(client, "DELETE", f"/fhir/Subscription/{id}").status_code in (200, 204)
    for kind in ("e", "p", "s", "o"):
        assert not client.portal.call(store.outbox, f"subs/{kind}/{id}")  # type: ignore[union-attr]
