"""Type-level `Subscription/$status` (Subscriptions R5 Backport IG 1.1.0, OperationDefinition
backport-subscription-status): the status of every Subscription the caller may read, narrowed
by repeating `id` and `status` parameters (each joined by OR), on both stores."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.http.helpers import send
from tests.subscriptions.conftest import dispatch
from tests.subscriptions.receiver import Receiver
from tests.subscriptions.test_delivery import subscribe, subscription


def _statuses(bundle: dict[str, Any]) -> dict[str, str]:
    """Subscription id -> status, from a $status searchset Bundle."""
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    found = {}
    for entry in bundle["entry"]:
        parameters = {p["name"]: p for p in entry["resource"]["parameter"]}
        assert entry["resource"]["resourceType"] == "Parameters" and entry["search"]["mode"] == "match"
        assert parameters["type"]["valueCode"] == "query-status"
        assert "events-since-subscription-start" in parameters
        found[parameters["subscription"]["valueReference"]["reference"].rsplit("/", 1)[1]] = (
            parameters["status"]["valueCode"])
    assert bundle["total"] == len(found)
    return found


def _three(client: TestClient, hook: Receiver) -> tuple[str, str, str]:
    first, second = subscribe(client, subscription(hook.url)), subscribe(client, subscription(hook.url))
    dispatch(client)  # handshakes: requested -> active
    off = subscribe(client, {**subscription(hook.url), "status": "off"})
    return first, second, off


def test_status_of_all_then_by_id_and_by_status(client: TestClient, hook: Receiver) -> None:
    first, second, off = _three(client, hook)
    everything = client.get("/fhir/Subscription/$status")
    assert everything.status_code == 200, everything.text
    assert _statuses(everything.json()) == {first: "active", second: "active", off: "off"}
    by_id = client.get(f"/fhir/Subscription/$status?id={first}&id={off}").json()
    assert _statuses(by_id) == {first: "active", off: "off"}
    by_status = client.get("/fhir/Subscription/$status?status=off&status=error").json()
    assert _statuses(by_status) == {off: "off"}
    both = client.get(f"/fhir/Subscription/$status?id={first}&status=off").json()
    assert _statuses(both) == {}
    posted = send(client, "POST", "/fhir/Subscription/$status", {"resourceType": "Parameters", "parameter": [
        {"name": "id", "valueId": second}, {"name": "id", "valueId": off},
        {"name": "status", "valueCode": "active"}]})
    assert posted.status_code == 200, posted.text
    assert _statuses(posted.json()) == {second: "active"}


def test_only_the_callers_own_subscriptions(client: TestClient, hook: Receiver) -> None:
    subscribe(client, subscription(hook.url))  # the administrator's

    def doctor(who: str) -> dict[str, str]:
        tokens = client.app.state.tokens  # type: ignore[attr-defined]
        issued = tokens.issue(subject=who, client_id="portal", scope="user/*.cruds", fhir_user=who)
        return {"Authorization": f"Bearer {issued['access_token']}"}

    mine = send(client, "POST", "/fhir/Subscription", subscription(hook.url), **doctor("Practitioner/dr"))
    assert mine.status_code == 201, mine.text
    seen = client.get("/fhir/Subscription/$status", headers=doctor("Practitioner/dr")).json()
    assert _statuses(seen) == {mine.json()["id"]: "requested"}
    other = client.get(f"/fhir/Subscription/$status?id={mine.json()['id']}",
                       headers=doctor("Practitioner/other")).json()
    assert _statuses(other) == {}


def test_bad_parameters_are_refused(client: TestClient, hook: Receiver) -> None:
    subscribe(client, subscription(hook.url))
    stored = client.get("/fhir/Subscription").json()["entry"]
    for query, where in (("status=paused", "status"), ("id=a%20b", "id"), ("topic=x", "topic"),
                         ("status=", "status")):
        response = client.get(f"/fhir/Subscription/$status?{query}")
        assert response.status_code == 400, (query, response.text)
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["expression"] == [where]
    posted = send(client, "POST", "/fhir/Subscription/$status", {"resourceType": "Parameters", "parameter": [
        {"name": "status", "valueCode": "retired"}]})
    assert posted.status_code == 400 and posted.json()["issue"][0]["expression"] == ["status"]
    not_parameters = send(client, "POST", "/fhir/Subscription/$status", {"resourceType": "Patient"})
    assert not_parameters.status_code == 400
    assert client.get("/fhir/Subscription").json()["entry"] == stored
