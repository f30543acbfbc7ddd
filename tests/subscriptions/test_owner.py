"""A Subscription without a recorded owner (created by PUT) gets no handshake: it is set to
`error`, as none of its notifications could pass the access check."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.http.helpers import send
from tests.subscriptions.conftest import dispatch
from tests.subscriptions.receiver import Receiver
from tests.subscriptions.test_delivery import status_of, subscription


def test_a_subscription_created_by_put_gets_no_handshake(client: TestClient, hook: Receiver) -> None:
    response = send(client, "PUT", "/fhir/Subscription/s1", {**subscription(hook.url), "id": "s1"})
    assert response.status_code == 201, response.text
    dispatch(client)
    assert not hook.received
    assert status_of(client, "s1") == "error"
    assert "owner" in client.get("/fhir/Subscription/s1").json()["error"]
