"""A Subscription whose owner's account is suspended or closed sends nothing (docs/subscriptions.md,
"Access and audit"): it is set to `error` saying why, its events are kept, and once the
account is reinstated and the Subscription set back to `requested` they are sent from where
delivery stopped (Subscriptions Backport IG 1.1.0, errors.html)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from fhir_server.auth.accounts import Accounts
from fhir_server.auth.users import Users
from tests.builders import consent, patient
from tests.http.helpers import send
from tests.subscriptions.conftest import dispatch
from tests.subscriptions.receiver import Receiver
from tests.subscriptions.test_delivery import status_of, subscription, update_patient

DOCTOR = "Practitioner/dr"


def _subscribed_doctor(client: TestClient, hook: Receiver) -> tuple[Users, str]:
    """The account `dr` (DOCTOR, who may see p1) with an active Subscription of its own."""
    users: Users = client.app.state.tokens.users  # type: ignore[attr-defined]
    users.add("dr", "a long enough passphrase", DOCTOR)
    assert send(client, "PUT", "/fhir/Patient/p1", {**patient(), "id": "p1"}).status_code == 201
    assert send(client, "PUT", "/fhir/Consent/c1", {**consent("p1", actor=DOCTOR), "id": "c1"}).status_code == 201
    issued = client.app.state.tokens.issue(  # type: ignore[attr-defined]
        subject="dr", client_id="portal", scope="user/*.cruds", fhir_user=DOCTOR)
    response = send(client, "POST", "/fhir/Subscription", subscription(hook.url),
                    Authorization=f"Bearer {issued['access_token']}")
    assert response.status_code == 201, response.text
    dispatch(client)
    assert status_of(client, response.json()["id"]) == "active"
    return users, str(response.json()["id"])


def _events(hook: Receiver) -> list[int]:
    return [n for received in hook.of_kind("event-notification") for n in received.numbers]


@pytest.mark.parametrize("stop, why", [
    (lambda users: users.set_suspended("dr", True), "suspended"),
    (lambda users: Accounts(users).close("dr"), "closed"),
])
def test_an_owner_whose_account_is_stopped_is_sent_nothing_until_reinstated(
        client: TestClient, hook: Receiver, stop: object, why: str) -> None:
    users, id = _subscribed_doctor(client, hook)
    update_patient(client, "p1", "Before")
    dispatch(client)
    assert _events(hook) == [1]
    stop(users)  # type: ignore[operator]
    update_patient(client, "p1", "While")
    dispatch(client)
    assert _events(hook) == [1]
    stored = client.get(f"/fhir/Subscription/{id}").json()
    assert stored["status"] == "error"
    assert why in stored["error"]
    status = client.get(f"/fhir/Subscription/{id}/$status").json()["entry"][0]["resource"]
    assert {"name": "events-since-subscription-start", "valueString": "2"} in status["parameter"]
    # Set back to requested while the account is still stopped: no handshake, error again.
    assert send(client, "PUT", f"/fhir/Subscription/{id}", {**stored, "status": "requested"}).status_code == 200
    dispatch(client)
    assert len(hook.of_kind("handshake")) == 1
    assert status_of(client, id) == "error"
    if why == "closed":
        return  # a closed account is not reopened: it is erased in its time
    users.set_suspended("dr", False)
    again = client.get(f"/fhir/Subscription/{id}").json()
    assert send(client, "PUT", f"/fhir/Subscription/{id}", {**again, "status": "requested"}).status_code == 200
    dispatch(client, 2)
    assert status_of(client, id) == "active"
    assert _events(hook) == [1, 2]
