"""A process keeps the events of its very first writes (docs/subscriptions.md, "Reliable
delivery"): it reads the subscriptions it serves before it serves a request, not at its
dispatcher's first round, which on a busy machine comes after the first writes are
acknowledged; while it cannot read them (its store away at start-up), it refuses writes
(503), and the first write once they can be read reads them."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from fhir_server.app import create_app
from fhir_server.model.errors import Kind, fail
from fhir_server.services.subscriptions import Desk
from fhir_server.settings import Settings
from fhir_server.subscriptions import Dispatcher
from fhir_server.subscriptions.records import event, pending_prefix
from tests.builders import patient
from tests.conftest import authorized
from tests.http.helpers import send
from tests.subscriptions.receiver import Receiver
from tests.subscriptions.test_delivery import subscribe, subscription, update_patient


async def _no_round(self: Dispatcher) -> None:
    """A dispatcher whose background rounds have not had their turn yet."""
    await asyncio.Event().wait()


def _pending(client: TestClient, subscription: str) -> list[tuple[str, int]]:
    store = client.app.state.dispatcher.store  # type: ignore[attr-defined]
    kept = client.portal.call(store.outbox, pending_prefix(subscription))  # type: ignore[union-attr]
    return [(found.reference, found.version) for found in (event(body) for _, body in kept)]


def test_a_write_served_right_after_start_up_keeps_its_event(
        settings: Settings, hook: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    with authorized(TestClient(create_app(settings))) as client:
        id = subscribe(client, subscription(hook.url))
        update_patient(client, "p1", "Before")  # created: the topic fires on updates only
    monkeypatch.setattr(Dispatcher, "run", _no_round)
    with authorized(TestClient(create_app(settings))) as client:  # the process restarted
        update_patient(client, "p1", "After")
        assert _pending(client, id) == [("Patient/p1", 2)]


def test_writes_are_refused_until_the_subscriptions_can_be_read(
        settings: Settings, hook: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    with authorized(TestClient(create_app(settings))) as client:
        id = subscribe(client, subscription(hook.url))
        update_patient(client, "p1", "Before")
    served = Desk.served
    away = True

    async def store_away(self: Desk) -> list[dict[str, object]]:
        if away:
            raise fail(Kind.BUSY, "transient", "The store is busy; retry later.")
        return await served(self)

    monkeypatch.setattr(Desk, "served", store_away)
    monkeypatch.setattr(Dispatcher, "run", _no_round)
    with authorized(TestClient(create_app(settings))) as client:  # started all the same
        refused = send(client, "PUT", "/fhir/Patient/p1", {**patient("During"), "id": "p1"})
        assert refused.status_code == 503, refused.text
        assert refused.json()["resourceType"] == "OperationOutcome"
        assert client.get("/fhir/Patient/p1").json()["meta"]["versionId"] == "1"  # untouched
        assert send(client, "PUT", "/fhir/Patient/p2", {**patient("New"), "id": "p2"}).status_code == 503
        assert client.get("/fhir/Patient/p2").status_code == 404
        away = False  # the store is back: the next write reads them, before any round
        update_patient(client, "p1", "After")
        assert _pending(client, id) == [("Patient/p1", 2)]
