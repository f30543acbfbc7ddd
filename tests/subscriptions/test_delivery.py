"""Subscriptions over HTTP, on both stores, to a loopback receiver (Subscriptions R5 Backport
IG 1.1.0: workflow.html handshake and heartbeat, notifications.html, payloads.html,
errors.html; OperationDefinitions $status and $events; R4 subscription.html rest-hook)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server import clock
from tests.builders import consent, patient
from tests.http.helpers import send
from tests.subscriptions.conftest import dispatch
from tests.subscriptions.receiver import Receiver

TOPICS = "https://oncotrials.example.org/fhir/SubscriptionTopic"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"


def subscription(endpoint: str, topic: str = "patient-updated", content: str = "id-only",
                 filters: tuple[str, ...] = (), **channel: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Subscription", "status": "requested", "reason": "test",
        "meta": {"profile": [f"{BACKPORT}/backport-subscription"]},
        "criteria": topic if "?" in topic else f"{TOPICS}/{topic}",
        "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json",
                    "_payload": {"extension": [{"url": f"{BACKPORT}/backport-payload-content",
                                                "valueCode": content}]}, **channel}}
    if filters:
        body["_criteria"] = {"extension": [{"url": f"{BACKPORT}/backport-filter-criteria",
                                            "valueString": f} for f in filters]}
    return body


def subscribe(client: TestClient, body: dict[str, Any]) -> str:
    response = send(client, "POST", "/fhir/Subscription", body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def status_of(client: TestClient, id: str) -> str:
    return str(client.get(f"/fhir/Subscription/{id}").json()["status"])


def update_patient(client: TestClient, id: str, family: str) -> None:
    response = send(client, "PUT", f"/fhir/Patient/{id}", {**patient(family), "id": id})
    assert response.status_code in (200, 201), response.text


@pytest.mark.parametrize("change, where", [
    ({"criteria": f"{TOPICS}/no-such-topic"}, "Subscription.criteria"),
    ({"criteria": "Patient?no-such-param=1"}, "Subscription.criteria"),
    ({"_criteria": {"extension": [{"url": f"{BACKPORT}/backport-filter-criteria",
                                   "valueString": "Patient?name=x"}]}}, "Subscription.criteria.extension"),
    ({"channel": {"type": "websocket"}}, "Subscription.channel.type"),
    ({"channel": {"type": "rest-hook", "endpoint": "https://x.example/h", "payload": "text/plain"}},
     "Subscription.channel.payload"),
    ({"channel": {"type": "rest-hook", "endpoint": "https://x.example/h", "payload": "application/fhir+json",
                  "_payload": {"extension": [{"url": f"{BACKPORT}/backport-payload-content",
                                              "valueCode": "everything"}]}}},
     "Subscription.channel.payload.extension"),
    ({"channel": {"type": "rest-hook", "endpoint": "http://receiver.example/hook"}},
     "Subscription.channel.endpoint"),
    ({"status": "active"}, "Subscription.status"),
])
def test_a_subscription_the_server_cannot_serve_is_refused_and_nothing_stored(
        client: TestClient, hook: Receiver, change: dict[str, Any], where: str) -> None:
    response = send(client, "POST", "/fhir/Subscription", {**subscription(hook.url), **change})
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == [where]
    assert client.get("/fhir/Subscription").json().get("total", 0) == 0
    # A PUT goes through the same checks.
    put = {**subscription(hook.url), **change, "id": "s1"}
    if change.get("status") != "active":
        assert send(client, "PUT", "/fhir/Subscription/s1", put).status_code == 400
    assert client.get("/fhir/Subscription/s1").status_code == 404
    dispatch(client)
    assert hook.received == []


def test_handshake_then_events_in_order_with_id_only_payloads(client: TestClient, hook: Receiver) -> None:
    update_patient(client, "p1", "Before")
    id = subscribe(client, subscription(hook.url, filters=("Patient?_id=p1",)))
    assert status_of(client, id) == "requested"
    dispatch(client)
    [handshake] = hook.of_kind("handshake")
    assert handshake.json()["type"] == "history"
    assert status_of(client, id) == "active"
    found = client.get(f"/fhir/Subscription?status=active&criteria={TOPICS}/patient-updated").json()
    assert [e["resource"]["id"] for e in found["entry"]] == [id]
    update_patient(client, "p1", "One")
    update_patient(client, "p2", "Other")  # filtered out
    update_patient(client, "p1", "Two")
    dispatch(client, 2)
    notified = hook.of_kind("event-notification")  # one or two: the background loop may send too
    assert [n for each in notified for n in each.numbers] == [1, 2]
    bundle = notified[-1].json()
    assert bundle["type"] == "history"
    parameters = bundle["entry"][0]["resource"]
    assert parameters["resourceType"] == "Parameters"
    assert {"name": "events-since-subscription-start", "valueString": "2"} in parameters["parameter"]
    entries = [e for each in notified for e in each.json()["entry"][1:]]
    assert [e["fullUrl"] for e in entries] == ["http://testserver/fhir/Patient/p1"] * 2
    assert all("resource" not in e for e in entries)  # id-only
    assert notified[0].headers["Content-Type"] == "application/fhir+json"


def test_full_resource_and_empty_payloads(client: TestClient, hook: Receiver) -> None:
    update_patient(client, "p1", "Before")
    subscribe(client, subscription(hook.url, content="full-resource"))
    subscribe(client, subscription(hook.url, content="empty"))
    dispatch(client)
    update_patient(client, "p1", "Martin")
    dispatch(client)
    bundles = [r.json() for r in hook.of_kind("event-notification")]
    assert len(bundles) == 2
    full = next(b for b in bundles if len(b["entry"]) == 2)
    assert full["entry"][1]["resource"]["name"][0]["family"] == "Martin"
    assert full["entry"][1]["resource"]["meta"]["versionId"] == "2"
    empty = next(b for b in bundles if len(b["entry"]) == 1)
    names = [p["name"] for p in empty["entry"][0]["resource"]["parameter"]]
    assert "topic" not in names
    event = next(p for p in empty["entry"][0]["resource"]["parameter"] if p["name"] == "notification-event")
    assert "focus" not in [part["name"] for part in event["part"]]


def test_a_failed_handshake_sets_error(client: TestClient, hook: Receiver) -> None:
    hook.answers = [500]
    id = subscribe(client, subscription(hook.url))
    dispatch(client)
    resource = client.get(f"/fhir/Subscription/{id}").json()
    assert resource["status"] == "error" and "HTTP 500" in resource["error"]


def test_a_redirect_is_not_followed_and_counts_as_a_failure(client: TestClient, hook: Receiver) -> None:
    hook.answers = [302]
    id = subscribe(client, subscription(hook.url))
    dispatch(client)
    assert status_of(client, id) == "error"
    assert [r.path for r in hook.received] == ["/hook"]


def test_down_for_hours_then_every_event_in_order(client: TestClient, hook: Receiver) -> None:
    update_patient(client, "p1", "Before")
    id = subscribe(client, subscription(hook.url))
    dispatch(client)
    with clock.frozen(datetime.now(UTC)) as frozen:
        client.headers["Authorization"] = f"Bearer {_token(client)}"
        hook.down = True
        for n in range(5):
            update_patient(client, "p1", f"Name{n}")
        for _ in range(24):  # six hours
            dispatch(client)
            frozen.advance(15 * 60)  # the backoff grows to its ceiling of an hour
        assert hook.of_kind("event-notification") == [] and 6 <= hook.dropped <= 24
        assert status_of_store(client, id) == "active"
        hook.down = False
        frozen.advance(3600)
        dispatch(client)
        notified = hook.of_kind("event-notification")
        assert [n for each in notified for n in each.numbers] == [1, 2, 3, 4, 5]


def test_past_the_retry_window_the_subscription_is_in_error_and_its_events_kept(
        client: TestClient, hook: Receiver) -> None:
    update_patient(client, "p1", "Before")
    id = subscribe(client, subscription(hook.url))
    dispatch(client)
    with clock.frozen(datetime.now(UTC)) as frozen:
        client.headers["Authorization"] = f"Bearer {_token(client)}"
        hook.answers = [503] * 100
        update_patient(client, "p1", "Lost")
        for _ in range(30):
            dispatch(client)
            frozen.advance(3600)
        assert status_of_store(client, id) == "error"
    client.headers["Authorization"] = f"Bearer {_token(client)}"  # on the real clock again
    replay = client.get(f"/fhir/Subscription/{id}/$events").json()
    parameters = replay["entry"][0]["resource"]["parameter"]
    assert {"name": "type", "valueCode": "query-event"} in parameters
    assert [e["fullUrl"] for e in replay["entry"][1:]] == ["http://testserver/fhir/Patient/p1"]


def test_status_and_events_replay(client: TestClient, hook: Receiver) -> None:
    update_patient(client, "p1", "Before")
    id = subscribe(client, subscription(hook.url))
    dispatch(client)
    for n in range(3):
        update_patient(client, "p1", f"N{n}")
    dispatch(client)
    status = client.get(f"/fhir/Subscription/{id}/$status")
    assert status.status_code == 200
    [entry] = status.json()["entry"]
    assert {"name": "type", "valueCode": "query-status"} in entry["resource"]["parameter"]
    assert {"name": "events-since-subscription-start", "valueString": "3"} in entry["resource"]["parameter"]
    replay = client.get(f"/fhir/Subscription/{id}/$events?eventsSinceNumber=2&eventsUntilNumber=3"
                        "&content=full-resource").json()
    events = [p for p in replay["entry"][0]["resource"]["parameter"] if p["name"] == "notification-event"]
    assert [e["part"][0]["valueString"] for e in events] == ["2", "3"]
    assert [e["resource"]["meta"]["versionId"] for e in replay["entry"][1:]] == ["3", "4"]
    bad = client.get(f"/fhir/Subscription/{id}/$events?eventsSinceNumber=two")
    assert bad.status_code == 400 and bad.json()["issue"][0]["expression"] == ["eventsSinceNumber"]
    assert client.get("/fhir/Subscription/nope/$status").status_code == 404


def test_heartbeats_when_nothing_happens(client: TestClient, hook: Receiver) -> None:
    with clock.frozen(datetime.now(UTC)) as frozen:
        client.headers["Authorization"] = f"Bearer {_token(client)}"
        subscribe(client, subscription(hook.url, extension=[
            {"url": f"{BACKPORT}/backport-heartbeat-period", "valueUnsignedInt": 60}]))
        dispatch(client)
        dispatch(client)
        beats = len(hook.of_kind("heartbeat"))
        frozen.advance(30)
        dispatch(client)
        assert len(hook.of_kind("heartbeat")) == beats
        frozen.advance(31)
        dispatch(client)
        assert len(hook.of_kind("heartbeat")) == beats + 1


def test_classic_rest_hook_puts_the_resource(client: TestClient, hook: Receiver) -> None:
    body = subscription(hook.url, topic="Patient?family=Classic")
    del body["channel"]["_payload"]
    id = subscribe(client, body)
    dispatch(client)
    assert status_of(client, id) == "active" and hook.received == []
    update_patient(client, "p9", "Classic")
    update_patient(client, "p8", "Other")
    dispatch(client)
    [put] = hook.received
    assert (put.method, put.path) == ("PUT", "/hook/Patient/p9")
    assert put.json()["name"][0]["family"] == "Classic"


def test_topic_filters_and_delete_triggers(client: TestClient, hook: Receiver) -> None:
    update_patient(client, "p1", "One")
    update_patient(client, "p2", "Two")
    subscribe(client, subscription(hook.url, topic="consent-changed",
                                   filters=("Consent?patient=Patient/p1",)))
    dispatch(client)
    for id, subject in (("c1", "p1"), ("c2", "p2")):
        assert send(client, "PUT", f"/fhir/Consent/{id}", {**consent(subject), "id": id}).status_code == 201
    assert client.delete("/fhir/Consent/c1").status_code in (200, 204)
    assert client.delete("/fhir/Consent/c2").status_code in (200, 204)
    dispatch(client)
    entries = [e for n in hook.of_kind("event-notification") for e in n.json()["entry"][1:]]
    assert [(e["fullUrl"].rsplit("/", 2)[-1], e["request"]["method"]) for e in entries] == [
        ("c1", "PUT"), ("c1", "DELETE")]


def status_of_store(client: TestClient, id: str) -> str:
    version = client.portal.call(client.app.state.context.store.read, "Subscription", id)  # type: ignore[union-attr,attr-defined]
    import orjson
    return str(orjson.loads(version.body)["status"])


def _token(client: TestClient) -> str:
    from tests.conftest import token
    return token(client, "system/*.cruds")


def test_the_subscribed_store_still_answers_readiness(client: TestClient) -> None:
    """The store that keeps events is the app's store: /readyz asks it (its check() once
    shadowed the readiness check)."""
    assert client.get("/readyz").status_code == 200
