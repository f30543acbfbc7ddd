"""A Subscription's channel header values and signing secret, on both stores: sent to its
receiver only, masked on every read path (read, vread, search, history, `_include`, `$status`,
`$events`, notifications, AuditEvents), kept by an update that sends the mask back
(docs/subscriptions.md "Credentials"; Backport IG 1.1.0 channels: `channel.header`)."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.settings import Settings
from fhir_server.subscriptions import MASK, SECRET
from tests.builders import consent
from tests.http.helpers import send
from tests.subscriptions.conftest import dispatch
from tests.subscriptions.receiver import Receiver
from tests.subscriptions.test_delivery import subscribe, subscription, update_patient

RAW = "Bearer raw-receiver-token-4f1e"
SECRET_VALUE = "0123456789abcdef0123456789abcdef-own"
OTHER_SECRET = "fedcba9876543210fedcba9876543210-new"
SERVER_KEY = b"s3cret-shared-with-every-receiver"


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    key = tmp_path / "hook-secret"
    key.write_bytes(SERVER_KEY + b"\n")
    return settings.model_copy(update={"subscription_signing_key": key})


def _with_secret(body: dict[str, Any], secret: str) -> dict[str, Any]:
    body["channel"]["extension"] = [{"url": SECRET, "valueString": secret}]
    return body


def _signed(received: Any, key: bytes) -> bool:
    expected = hmac.new(key, received.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(received.headers["X-Hub-Signature-256"], f"sha256={expected}")


def _doctor(client: TestClient) -> dict[str, str]:
    issued = client.app.state.tokens.issue(  # type: ignore[attr-defined]
        subject="Practitioner/doc", client_id="portal", scope="user/*.cruds", fhir_user="Practitioner/doc")
    return {"Authorization": f"Bearer {issued['access_token']}"}


def test_header_values_are_masked_on_every_read_path_and_sent_for_real(
        client: TestClient, hook: Receiver, settings: Settings, store_kind: str) -> None:
    assert send(client, "PUT", "/fhir/Practitioner/doc", {"resourceType": "Practitioner", "id": "doc"}
                ).status_code == 201
    update_patient(client, "p1", "A")
    assert send(client, "PUT", "/fhir/Consent/c-p1",  # the owner reaches p1's events
                {**consent("p1", actor="Practitioner/doc"), "id": "c-p1"}).status_code == 201
    body = subscription(hook.url, header=[f"Authorization: {RAW}", "X-Tenant: 7"])
    created = send(client, "POST", "/fhir/Subscription", body, **_doctor(client))
    assert created.status_code == 201, created.text
    id = created.json()["id"]
    assert created.json()["channel"]["header"] == [f"Authorization: {MASK}", f"X-Tenant: {MASK}"]
    dispatch(client)
    update_patient(client, "p1", "B")
    dispatch(client, 2)
    # The receiver gets the real values, handshake and events alike.
    assert {r.kind for r in hook.received} == {"handshake", "event-notification"}
    assert all(r.headers["Authorization"] == RAW and r.headers["X-Tenant"] == "7" for r in hook.received)
    # Its owner and the system client read masks only, wherever they look.
    doctor = _doctor(client)
    answers = [
        client.get(f"/fhir/Subscription/{id}", headers=doctor),
        client.get(f"/fhir/Subscription/{id}"),
        client.get(f"/fhir/Subscription/{id}/_history/1"),
        client.get(f"/fhir/Subscription/{id}/_history"),
        client.get("/fhir/Subscription/_history"),
        client.get("/fhir/_history"),
        client.get(f"/fhir/Subscription?_id={id}"),
        client.get("/fhir/Practitioner?_id=doc&_revinclude=Subscription:owner"),
        client.get(f"/fhir/Subscription/{id}/$status"),
        client.get(f"/fhir/Subscription/{id}/$events"),
        client.get(f"/fhir/Subscription/{id}/$events?content=full-resource", headers=doctor),
        client.get("/fhir/AuditEvent?_count=500"),
    ]
    for answer in answers:
        assert answer.status_code == 200, (answer.request.url, answer.text)
        assert "raw-receiver-token" not in answer.text, answer.request.url
    assert f"Authorization: {MASK}" in answers[0].text and f"Authorization: {MASK}" in answers[7].text
    assert not any("raw-receiver-token" in r.body.decode() for r in hook.received)
    if store_kind == "sqlite":
        # Sealed at rest like every stored byte.
        for path in settings.data_dir.rglob("*"):
            if path.is_file():
                assert b"raw-receiver-token" not in path.read_bytes(), path


def test_an_update_sending_the_mask_back_keeps_the_value_and_a_new_value_replaces_it(
        client: TestClient, hook: Receiver) -> None:
    update_patient(client, "p1", "Before")
    id = subscribe(client, subscription(hook.url, header=[f"Authorization: {RAW}", "X-Tenant: 7"]))
    dispatch(client)  # handshake: active
    stored = client.get(f"/fhir/Subscription/{id}").json()
    stored["channel"]["header"] = [f"Authorization: {MASK}", "X-Tenant: 8"]
    assert send(client, "PUT", f"/fhir/Subscription/{id}", stored).status_code == 200
    update_patient(client, "p1", "A")
    dispatch(client, 2)
    [sent] = hook.of_kind("event-notification")
    assert sent.headers["Authorization"] == RAW and sent.headers["X-Tenant"] == "8"
    # The server's own status changes (set_status) keep them too; a new value replaces.
    stored = client.get(f"/fhir/Subscription/{id}").json()
    stored["channel"]["header"] = ["Authorization: Bearer next", f"X-Tenant: {MASK}"]
    assert send(client, "PUT", f"/fhir/Subscription/{id}", stored).status_code == 200
    update_patient(client, "p1", "B")
    dispatch(client, 2)
    last = hook.of_kind("event-notification")[-1]
    assert last.headers["Authorization"] == "Bearer next" and last.headers["X-Tenant"] == "8"


def test_a_mask_with_nothing_stored_is_refused_and_nothing_stored(client: TestClient, hook: Receiver) -> None:
    response = send(client, "POST", "/fhir/Subscription",
                    subscription(hook.url, header=[f"Authorization: {MASK}"]))
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["expression"] == ["Subscription.channel.header"]
    assert client.get("/fhir/Subscription").json().get("total", 0) == 0
    id = subscribe(client, subscription(hook.url, header=["X-Tenant: 7"]))
    stored = client.get(f"/fhir/Subscription/{id}").json()
    stored["channel"]["header"] = [f"X-Tenant: {MASK}", f"Authorization: {MASK}"]
    refused = send(client, "PUT", f"/fhir/Subscription/{id}", stored)
    assert refused.status_code == 400 and "Authorization" in refused.text
    assert client.get(f"/fhir/Subscription/{id}").json()["meta"]["versionId"] == "1"


def test_a_header_name_given_twice_is_refused(client: TestClient, hook: Receiver) -> None:
    response = send(client, "POST", "/fhir/Subscription",
                    subscription(hook.url, header=["X-A: 1", "x-a: 2"]))
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Subscription.channel.header"]


def test_a_malformed_header_is_refused_without_echoing_its_value(client: TestClient, hook: Receiver) -> None:
    response = send(client, "POST", "/fhir/Subscription",
                    subscription(hook.url, header=["Authorization: Bearer s\u00e9cret-value"]))
    assert response.status_code == 400 and "cret-value" not in response.text


# Per-subscription signing secret (item: one global key let every receiver forge the others').

@pytest.mark.parametrize("secret", ["short", "x" * 31, "a" * 257, "caf\u00e9" * 10, "with spaces " * 4])
def test_a_signing_secret_out_of_bounds_is_refused_and_nothing_stored(
        client: TestClient, hook: Receiver, secret: Any) -> None:
    body = subscription(hook.url)
    body["channel"]["extension"] = [{"url": SECRET, "valueString": secret}]
    response = send(client, "POST", "/fhir/Subscription", body)
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["issue"][0]["expression"] == ["Subscription.channel.extension"]
    assert SECRET in outcome["issue"][0]["diagnostics"] and "32" in outcome["issue"][0]["diagnostics"]
    assert client.get("/fhir/Subscription").json().get("total", 0) == 0


def test_each_subscription_is_signed_with_its_own_secret_else_the_servers_key(
        client: TestClient, hook: Receiver) -> None:
    update_patient(client, "p1", "Before")
    own = subscribe(client, _with_secret(subscription(hook.url + "?own"), SECRET_VALUE))
    subscribe(client, subscription(hook.url + "?plain"))
    dispatch(client)
    by_path = {r.path: r for r in hook.of_kind("handshake")}
    assert _signed(by_path["/hook?own"], SECRET_VALUE.encode())
    assert not _signed(by_path["/hook?own"], SERVER_KEY)
    assert _signed(by_path["/hook?plain"], SERVER_KEY)
    read = client.get(f"/fhir/Subscription/{own}")
    assert read.json()["channel"]["extension"] == [{"url": SECRET, "valueString": MASK}]
    assert SECRET_VALUE not in read.text
    # Sending the mask back keeps the secret; a new secret replaces it.
    stored = read.json()
    assert send(client, "PUT", f"/fhir/Subscription/{own}", stored).status_code == 200
    update_patient(client, "p1", "A")
    dispatch(client, 2)
    [kept] = [r for r in hook.of_kind("event-notification") if r.path == "/hook?own"]
    assert _signed(kept, SECRET_VALUE.encode())
    assert send(client, "PUT", f"/fhir/Subscription/{own}",
                _with_secret(client.get(f"/fhir/Subscription/{own}").json(), OTHER_SECRET)).status_code == 200
    update_patient(client, "p1", "B")
    dispatch(client, 2)
    last = [r for r in hook.of_kind("event-notification") if r.path == "/hook?own"][-1]
    assert _signed(last, OTHER_SECRET.encode())
    for url in (f"/fhir/Subscription/{own}/_history", "/fhir/AuditEvent?_count=500"):
        answer = client.get(url)
        assert SECRET_VALUE not in answer.text and OTHER_SECRET not in answer.text


def test_a_masked_secret_with_none_stored_is_refused(client: TestClient, hook: Receiver) -> None:
    response = send(client, "POST", "/fhir/Subscription", _with_secret(subscription(hook.url), MASK))
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Subscription.channel.extension"]
    assert client.get("/fhir/Subscription").json().get("total", 0) == 0


def test_deleting_a_subscription_removes_its_credentials(client: TestClient, hook: Receiver) -> None:
    id = subscribe(client, _with_secret(subscription(hook.url, header=[f"Authorization: {RAW}"]),
                                        SECRET_VALUE))
    store = client.app.state.dispatcher.store  # type: ignore[attr-defined]
    assert client.portal.call(store.outbox, f"subs/k/{id}")  # type: ignore[union-attr]
    assert send(client, "DELETE", f"/fhir/Subscription/{id}").status_code in (200, 204)
    assert not client.portal.call(store.outbox, f"subs/k/{id}")  # type: ignore[union-attr]
