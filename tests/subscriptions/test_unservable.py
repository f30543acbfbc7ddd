"""A Subscription never breaks the writes it watches: criteria the server cannot test at write
time (chains, `_has`) are refused at creation, and one that gets stored anyway is set to
`error` while the writes go on."""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import parse_qsl

import pytest
from fastapi.testclient import TestClient

from fhir_server.search import parse_query
from tests.builders import consent, patient
from tests.http.helpers import send
from tests.subscriptions.conftest import dispatch
from tests.subscriptions.receiver import Receiver
from tests.subscriptions.test_delivery import status_of, subscribe, subscription

OBSERVATION = {"resourceType": "Observation", "status": "final", "subject": {"reference": "Patient/p1"},
               "code": {"coding": [{"system": "http://loinc.org", "code": "1234-5"}]}}


def _classic(endpoint: str, criteria: str) -> dict[str, object]:
    return {**subscription(endpoint), "criteria": criteria,
            "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json"}}


@pytest.mark.parametrize("criteria, name", [
    ("Observation?subject.name=Dupont", "subject.name"),
    ("Observation?subject:Patient.name=Dupont", "subject:Patient.name"),
    ("Patient?_has:Observation:subject:code=1234-5", "_has:Observation:subject:code"),
])
def test_classic_criteria_with_chain_or_has_are_refused(client: TestClient, hook: Receiver,
                                                        criteria: str, name: str) -> None:
    response = send(client, "POST", "/fhir/Subscription", _classic(hook.url, criteria))
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert name in issue["diagnostics"] and issue["expression"] == ["Subscription.criteria"]
    assert client.get("/fhir/Subscription").json().get("total", 0) == 0


def test_topic_filter_with_a_chain_is_refused(client: TestClient, hook: Receiver) -> None:
    body = subscription(hook.url, topic="consent-changed", filters=("Consent?patient:Patient.name=x",))
    response = send(client, "POST", "/fhir/Subscription", body)
    assert response.status_code == 400, response.text
    assert "patient:Patient.name" in response.json()["issue"][0]["diagnostics"]


def test_a_stored_subscription_that_cannot_be_matched_never_fails_a_write(
        client: TestClient, hook: Receiver) -> None:
    id = subscribe(client, subscription(hook.url))
    dispatch(client)
    watch = client.app.state.dispatcher.watch  # type: ignore[attr-defined]
    [served] = [p for p in watch.plans() if p.id == id]
    chained = parse_query("Patient", parse_qsl("_has:Observation:subject:code=1234-5"), watch.registry)[0]
    watch.put(replace(served, filters=(chained,)), id)  # as if stored before the check existed
    for n in range(2):
        response = send(client, "PUT", "/fhir/Patient/p1", {**patient(f"N{n}"), "id": "p1"})
        assert response.status_code in (200, 201), response.text
    assert send(client, "PUT", "/fhir/Consent/c1", {**consent("p1"), "id": "c1"}).status_code == 201
    assert id not in {p.id for p in watch.plans()}
    dispatch(client)
    assert status_of(client, id) == "error"
