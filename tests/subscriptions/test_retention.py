"""Delivered events are kept FHIR_SERVER_SUBSCRIPTION_EVENTS_KEEP_DAYS after their write, then
purged (both stores); undelivered ones are never purged; `$events` over a purged range answers
what is left and says, in the SubscriptionStatus's `error`, that older events are gone
(Backport IG 1.1.0 OperationDefinition backport-subscription-events; docs/subscriptions.md
"Retention")."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient

from fhir_server import clock
from fhir_server.subscriptions import purge_events, retain_events
from tests.conftest import token
from tests.subscriptions.conftest import dispatch
from tests.subscriptions.receiver import Receiver
from tests.subscriptions.test_delivery import subscribe, subscription, update_patient

DAY = 86400


def _numbers(bundle: dict[str, Any]) -> list[int]:
    return [int(part["valueString"]) for p in bundle["entry"][0]["resource"]["parameter"]
            if p["name"] == "notification-event" for part in p["part"] if part["name"] == "event-number"]


def _errors(bundle: dict[str, Any]) -> list[str]:
    return [p["valueCodeableConcept"]["text"] for p in bundle["entry"][0]["resource"]["parameter"]
            if p["name"] == "error"]


def _purge(client: TestClient, days: int = 30) -> int:
    store = client.app.state.dispatcher.store  # type: ignore[attr-defined]
    return int(client.portal.call(purge_events, store, days))  # type: ignore[union-attr]


def test_delivered_events_are_purged_after_their_days_undelivered_ones_kept(
        client: TestClient, hook: Receiver) -> None:
    update_patient(client, "p1", "Before")
    with clock.frozen(datetime.now(UTC)) as frozen:
        client.headers["Authorization"] = f"Bearer {token(client, 'system/*.cruds')}"
        id = subscribe(client, subscription(hook.url))
        dispatch(client)
        for n in range(3):
            update_patient(client, "p1", f"Name{n}")
        dispatch(client)  # 1..3 delivered
        hook.answers = [500]
        update_patient(client, "p1", "Failing")
        dispatch(client)  # 4 numbered, not delivered
        written = frozen.at
        frozen.advance(29 * DAY)
        assert _purge(client) == 0  # not old enough
        frozen.advance(2 * DAY)
        assert _purge(client) == 3
        assert _purge(client) == 0  # nothing more: idempotent
        frozen.at = written  # the tokens of the test were issued then
        replay = client.get(f"/fhir/Subscription/{id}/$events?eventsSinceNumber=1").json()
        assert _numbers(replay) == [4]  # the undelivered one stays, however old
        [error] = _errors(replay)
        assert "1 to 3" in error
        assert _errors(client.get(f"/fhir/Subscription/{id}/$events?eventsSinceNumber=4").json()) == []
        # The undelivered event is still sent once the receiver answers.
        frozen.advance(3600)
        dispatch(client)
        frozen.at = written
        assert 4 in [n for r in hook.of_kind("event-notification") for n in r.numbers]


def test_the_server_purges_on_its_own(client: TestClient, hook: Receiver) -> None:
    update_patient(client, "p1", "Before")
    with clock.frozen(datetime.now(UTC)) as frozen:
        client.headers["Authorization"] = f"Bearer {token(client, 'system/*.cruds')}"
        id = subscribe(client, subscription(hook.url))
        dispatch(client)
        update_patient(client, "p1", "One")
        dispatch(client)
        written = frozen.at
        frozen.advance(31 * DAY)
        store = client.app.state.dispatcher.store  # type: ignore[attr-defined]

        async def a_while() -> None:
            task = asyncio.get_running_loop().create_task(retain_events(store, 30, period=0.01))
            await asyncio.sleep(0.2)
            task.cancel()

        client.portal.call(a_while)  # type: ignore[union-attr]
        frozen.at = written
        assert not client.portal.call(store.outbox, f"subs/e/{id}/")  # type: ignore[union-attr]
        assert _numbers(client.get(f"/fhir/Subscription/{id}/$events").json()) == []
