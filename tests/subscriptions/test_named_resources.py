"""A filter naming one resource (`_id`, a reference) names one its creator reaches: otherwise
the event counter of `$status` would tell them when it changes."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.builders import consent, patient
from tests.http.helpers import send
from tests.subscriptions.receiver import Receiver
from tests.subscriptions.test_delivery import subscription


def test_a_filter_naming_an_unreachable_patient_is_refused(client: TestClient, hook: Receiver) -> None:
    for id in ("p1", "p2"):
        assert send(client, "PUT", f"/fhir/Patient/{id}", {**patient(), "id": id}).status_code == 201
    send(client, "PUT", "/fhir/Consent/c-p1", {**consent("p1", actor="Practitioner/dr"), "id": "c-p1"})
    tokens = client.app.state.tokens  # type: ignore[attr-defined]
    dr = {"Authorization": "Bearer " + tokens.issue(subject="dr", client_id="portal", scope="user/*.cruds",
                                                     fhir_user="Practitioner/dr")["access_token"]}
    for body in (subscription(hook.url, filters=("Patient?_id=p2",)),
                 subscription(hook.url, topic="consent-changed", filters=("Consent?patient=Patient/p2",)),
                 {**subscription(hook.url), "criteria": "Observation?subject=Patient/p2",
                  "channel": {"type": "rest-hook", "endpoint": hook.url}}):
        response = send(client, "POST", "/fhir/Subscription", body, **dr)
        assert response.status_code == 400, response.text
        assert "Patient/p2" in response.json()["issue"][0]["diagnostics"]
    assert send(client, "POST", "/fhir/Subscription",
                subscription(hook.url, filters=("Patient?_id=p1",)), **dr).status_code == 201
