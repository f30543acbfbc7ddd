"""Channel headers the server can send, and a subscription that fails on its own: headers are
checked at creation, and one subscription failing for whatever reason neither stops the round nor the other subscriptions."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.http.helpers import send
from tests.subscriptions.conftest import dispatch
from tests.subscriptions.receiver import Receiver
from tests.subscriptions.test_delivery import status_of, subscribe, subscription, update_patient


@pytest.mark.parametrize("headers", [
    ["X-A: caf\u00e9"], ["X-A: a\x00b"], ["X A: b"], ["X-A: a\x0bb"], ["X-A: a\u4e2d"],
    ["Host: metadata.google.internal"], ["content-length: 1"], ["Transfer-Encoding: chunked"],
    ["Connection: close"], ["X-Hub-Signature-256: sha256=00"], ["X-Big: " + "a" * 1100],
    [f"X-{i}: v" for i in range(11)], ["no colon"],
])
def test_headers_the_server_will_not_send_are_refused(client: TestClient, hook: Receiver,
                                                      headers: list[str]) -> None:
    response = send(client, "POST", "/fhir/Subscription", subscription(hook.url, header=headers))
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["expression"] == ["Subscription.channel.header"]
    assert client.get("/fhir/Subscription").json().get("total", 0) == 0


def test_good_headers_are_sent(client: TestClient, hook: Receiver) -> None:
    subscribe(client, subscription(hook.url, header=["Authorization: Bearer abc.def", "X-Tenant: 7"]))
    dispatch(client)
    [handshake] = hook.received
    assert handshake.headers["Authorization"] == "Bearer abc.def" and handshake.headers["X-Tenant"] == "7"


def test_one_failing_subscription_stops_neither_the_round_nor_the_others(
        client: TestClient, hook: Receiver) -> None:
    update_patient(client, "p1", "A")
    bad, good = (subscribe(client, subscription(hook.url)) for _ in range(2))
    dispatch(client)
    original = client.app.state.dispatcher.serve  # type: ignore[attr-defined]

    async def failing(found):  # type: ignore[no-untyped-def]
        if found.id == bad:
            raise RuntimeError("boom")
        await original(found)

    client.app.state.dispatcher.serve = failing  # type: ignore[attr-defined]
    update_patient(client, "p1", "B")
    hook.received.clear()
    dispatch(client, 2)  # raises nothing
    assert [r for r in hook.received if r.kind == "event-notification"]
    assert status_of(client, bad) == "error" and status_of(client, good) == "active"
