"""The trial-matching topic: a physician hears of a new or changed trial that the re-match job
finds matching one of their consented patients; a patient without a research consent in force
(opted out) is never matched (docs/subscriptions.md, trials/rematch.py, trials/alerts.py)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from fhir_server.clock import Frozen
from tests.builders import consent
from tests.http.helpers import send
from tests.subscriptions.conftest import dispatch
from tests.subscriptions.receiver import Receiver
from tests.subscriptions.test_delivery import subscription
from tests.trials.eligibility_builders import group
from tests.trials.match_world import CRITERIA, DR, RECENT, build, site, study
from tests.trials.rematch_helpers import look, moving  # noqa: F401 - a fixture


def _put(client: TestClient, resource: dict[str, object]) -> None:
    response = send(client, "PUT", f"/fhir/{resource['resourceType']}/{resource['id']}", resource)
    assert response.status_code in (200, 201), response.text


def _trial(client: TestClient, id: str, criteria: str) -> None:
    _put(client, group(f"{id}-criteria", *CRITERIA[criteria]))
    _put(client, study(id, "phase-2", [site("paris", "recruiting", RECENT)]))


def test_a_physician_hears_of_new_trials_matching_their_consenting_patients(
        client: TestClient, hook: Receiver, moving: Frozen) -> None:
    build(client)
    _put(client, {**consent("alice", scope="research"), "id": "alice-research"})
    look(client, moving)  # the catalogue as built is no news: the job's look before anyone subscribes
    tokens = client.app.state.tokens  # type: ignore[attr-defined]
    doctor = {"Authorization": "Bearer " + tokens.issue(
        subject="dr", client_id="portal", scope="user/*.cruds", fhir_user=DR)["access_token"]}
    missing = send(client, "POST", "/fhir/Subscription", subscription(hook.url, topic="trial-matching"),
                   **doctor)
    assert missing.status_code == 400  # the physician filter is required
    body = subscription(hook.url, topic="trial-matching", filters=(f"ResearchStudy?practitioner={DR}",))
    assert send(client, "POST", "/fhir/Subscription", body, **doctor).status_code == 201
    dispatch(client)
    assert len(hook.of_kind("handshake")) == 1
    _trial(client, "breast-2", "breast")  # Alice (breast cancer) matches
    _trial(client, "lung-2", "lung")  # nobody matches
    look(client, moving)
    dispatch(client, 2)
    focus = [e["fullUrl"] for n in hook.of_kind("event-notification") for e in n.json()["entry"][1:]]
    assert focus == ["http://testserver/fhir/ResearchStudy/breast-2"]
    # Alice opts out of trial matching: her research consent no longer in force.
    _put(client, {**consent("alice", scope="research", status="inactive"), "id": "alice-research"})
    _trial(client, "breast-3", "breast")
    look(client, moving)
    dispatch(client, 2)
    focus = [e["fullUrl"] for n in hook.of_kind("event-notification") for e in n.json()["entry"][1:]]
    assert focus == ["http://testserver/fhir/ResearchStudy/breast-2"]


def test_a_physician_subscribes_to_trials_for_their_own_patients_only(
        client: TestClient, hook: Receiver) -> None:
    tokens = client.app.state.tokens  # type: ignore[attr-defined]
    for user in (DR, "Patient/alice"):
        caller = {"Authorization": "Bearer " + tokens.issue(
            subject="u", client_id="portal", scope="user/*.cruds", fhir_user=user)["access_token"]}
        body = subscription(hook.url, topic="trial-matching",
                            filters=("ResearchStudy?practitioner=Practitioner/someone-else",))
        response = send(client, "POST", "/fhir/Subscription", body, **caller)
        assert response.status_code == 400, response.text
        assert "practitioner" in response.json()["issue"][0]["diagnostics"]
    assert client.get("/fhir/Subscription").json().get("total", 0) == 0


def test_a_changed_trial_is_news_too_whether_written_or_loaded(client: TestClient, hook: Receiver,
                                                               moving: Frozen) -> None:
    build(client)  # "breast" and "her2" already match Alice before anyone subscribes
    _put(client, {**consent("alice", scope="research"), "id": "alice-research"})
    look(client, moving)
    tokens = client.app.state.tokens  # type: ignore[attr-defined]
    doctor = {"Authorization": "Bearer " + tokens.issue(
        subject="dr", client_id="portal", scope="user/*.cruds", fhir_user=DR)["access_token"]}
    body = subscription(hook.url, topic="trial-matching", filters=(f"ResearchStudy?practitioner={DR}",))
    assert send(client, "POST", "/fhir/Subscription", body, **doctor).status_code == 201
    dispatch(client)
    breast = client.get("/fhir/ResearchStudy/breast").json()
    _put(client, {**breast, "title": "Breast cancer, amended protocol"})  # a client's update
    her2 = client.get("/fhir/ResearchStudy/her2").json()
    loaded = send(client, "POST", "/fhir/ResearchStudy/$load", {"resourceType": "Bundle", "type": "collection",
                  "entry": [{"resource": {**her2, "title": "HER2, amended"}}]})  # a catalogue load
    assert loaded.status_code == 200, loaded.text
    look(client, moving)
    dispatch(client, 2)
    _put(client, {**breast, "status": "closed-to-accrual"})  # changed, but no longer open: no news
    look(client, moving)
    dispatch(client, 2)
    focus = [e["fullUrl"] for n in hook.of_kind("event-notification") for e in n.json()["entry"][1:]]
    assert focus == ["http://testserver/fhir/ResearchStudy/breast", "http://testserver/fhir/ResearchStudy/her2"]
