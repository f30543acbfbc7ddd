"""Each notification passes the access layer when sent, with the rights of the subscription's
owner as they are then (docs/subscriptions.md, "Access"), and is audited; bodies are signed
when the server has a signing key."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fhir_server.settings import Settings
from tests.builders import consent, patient
from tests.http.helpers import send
from tests.subscriptions.conftest import dispatch
from tests.subscriptions.receiver import Receiver
from tests.subscriptions.test_delivery import subscribe, subscription

DOCTOR = "Practitioner/dr"


def _doctor(client: TestClient, doctor: str = DOCTOR) -> dict[str, str]:
    tokens = client.app.state.tokens  # type: ignore[attr-defined]
    issued = tokens.issue(subject=doctor, client_id="portal", scope="user/*.cruds", fhir_user=doctor)
    return {"Authorization": f"Bearer {issued['access_token']}"}


def test_a_withdrawn_consent_stops_notifications_to_the_physician(client: TestClient,
                                                                  hook: Receiver) -> None:
    for id in ("p1", "p2"):
        assert send(client, "PUT", f"/fhir/Patient/{id}", {**patient(), "id": id}).status_code == 201
        assert send(client, "PUT", f"/fhir/Consent/c-{id}",
                    {**consent(id, actor=DOCTOR), "id": f"c-{id}"}).status_code == 201
    response = send(client, "POST", "/fhir/Subscription", subscription(hook.url), **_doctor(client))
    assert response.status_code == 201, response.text
    dispatch(client)
    assert len(hook.of_kind("handshake")) == 1
    mine = client.get(f"/fhir/Subscription/{response.json()['id']}", headers=_doctor(client))
    assert mine.json()["status"] == "active"
    other = _doctor(client, "Practitioner/other")  # a user reaches their own Subscriptions only
    assert client.get(f"/fhir/Subscription/{response.json()['id']}", headers=other).status_code == 404
    assert client.get(f"/fhir/Subscription/{response.json()['id']}/$status", headers=other).status_code == 404
    withdrawn = {**consent("p2", actor=DOCTOR, status="inactive"), "id": "c-p2"}
    assert send(client, "PUT", "/fhir/Consent/c-p2", withdrawn).status_code == 200
    for id in ("p1", "p2"):
        assert send(client, "PUT", f"/fhir/Patient/{id}", {**patient("Changed"), "id": id}).status_code == 200
    dispatch(client, 2)
    entries = [e["fullUrl"] for n in hook.of_kind("event-notification") for e in n.json()["entry"][1:]]
    assert entries == ["http://testserver/fhir/Patient/p1"]
    # The withheld event is not replayed to the physician either.
    sub = response.json()["id"]
    replay = client.get(f"/fhir/Subscription/{sub}/$events", headers=_doctor(client)).json()
    assert [e["fullUrl"] for e in replay["entry"][1:]] == ["http://testserver/fhir/Patient/p1"]
    # Each notification sent is audited, naming the subscription and the patient it told of.
    audit = client.get("/fhir/AuditEvent?entity=Patient/p1&_count=100").json()
    sent = [e["resource"] for e in audit.get("entry", [])
            if e["resource"]["type"]["code"] == "110106"]
    assert sent and any(ent.get("what", {}).get("reference") == f"Subscription/{sub}"
                        for ent in sent[0]["entity"])


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    key = tmp_path / "hook-secret"
    key.write_bytes(b"s3cret-shared-with-the-receiver\n")
    return settings.model_copy(update={"subscription_signing_key": key})


def test_notifications_are_signed_with_the_servers_key(client: TestClient, hook: Receiver) -> None:
    subscribe(client, subscription(hook.url))
    dispatch(client)
    [handshake] = hook.received
    expected = hmac.new(b"s3cret-shared-with-the-receiver", handshake.body, hashlib.sha256).hexdigest()
    assert handshake.headers["X-Hub-Signature-256"] == f"sha256={expected}"
