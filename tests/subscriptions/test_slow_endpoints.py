"""A slow endpoint holds back its own subscription only: each subscription is served in its
own task, and a round waits for them a bounded time."""

from __future__ import annotations

import asyncio
import dataclasses
import time

from fastapi.testclient import TestClient

from tests.subscriptions.conftest import dispatch
from tests.subscriptions.receiver import Receiver, receiver
from tests.subscriptions.test_delivery import subscribe, subscription, update_patient


def test_a_slow_endpoint_does_not_hold_the_round(client: TestClient, hook: Receiver) -> None:
    dispatcher = client.app.state.dispatcher  # type: ignore[attr-defined]
    dispatcher.timing = dataclasses.replace(dispatcher.timing, wait=0.3)
    update_patient(client, "p1", "A")
    with receiver() as slow:
        subscribe(client, subscription(slow.url))
        subscribe(client, subscription(hook.url))
        dispatch(client)  # both handshakes answered at once
        slow.delay = 3.0
        update_patient(client, "p1", "B")
        started = time.monotonic()
        client.portal.call(dispatcher.round)  # type: ignore[union-attr]
        took = time.monotonic() - started
        assert took < 2.5, f"the round waited {took:.1f} s for the slow endpoint"
        assert len(hook.of_kind("event-notification")) == 1
        assert not slow.of_kind("event-notification")
        update_patient(client, "p1", "C")
        client.portal.call(dispatcher.round)  # type: ignore[union-attr]
        assert len(hook.of_kind("event-notification")) == 2  # served again meanwhile
        client.portal.call(lambda: asyncio.gather(*dispatcher.serving.values()))  # type: ignore[union-attr]
        assert len(slow.of_kind("event-notification")) == 1
