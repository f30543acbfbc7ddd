"""Review of the credentials kept apart (docs/subscriptions.md "Credentials"), on both
stores: a header value never echoed by a refusal, and a mask that keeps a stored value only
for the endpoint that value was given for (else whoever may update a Subscription, the
operator included, would have its receiver's credentials sent to an endpoint of their own)."""

from __future__ import annotations

from dataclasses import fields

import pytest
from fastapi.testclient import TestClient

from fhir_server.subscriptions import MASK, SECRET
from fhir_server.subscriptions.credentials import Credentials, unmask
from fhir_server.subscriptions.criteria import Plan
from tests.http.helpers import send
from tests.subscriptions.conftest import dispatch
from tests.subscriptions.receiver import Receiver
from tests.subscriptions.test_delivery import subscribe, subscription, update_patient

RAW = "Bearer raw-receiver-token-4f1e"
OWN_SECRET = "0123456789abcdef0123456789abcdef-own"


@pytest.mark.parametrize("header", ["Bearer raw-receiver-token-no-name", "raw-receiver-token-one-word"])
def test_a_header_without_a_name_is_refused_without_echoing_it(
        client: TestClient, hook: Receiver, header: str) -> None:
    response = send(client, "POST", "/fhir/Subscription", subscription(hook.url, header=[header]))
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Subscription.channel.header"]
    assert "raw-receiver-token" not in response.text
    assert client.get("/fhir/Subscription").json().get("total", 0) == 0


def test_a_mask_keeps_a_value_only_for_the_endpoint_it_was_given_for(
        client: TestClient, hook: Receiver) -> None:
    update_patient(client, "p1", "Before")
    body = subscription(hook.url, header=[f"Authorization: {RAW}"])
    body["channel"]["extension"] = [{"url": SECRET, "valueString": OWN_SECRET}]
    id = subscribe(client, body)
    dispatch(client)
    stored = client.get(f"/fhir/Subscription/{id}").json()
    version = stored["meta"]["versionId"]
    elsewhere = hook.url + "?elsewhere"
    stored["channel"]["endpoint"] = elsewhere
    refused = send(client, "PUT", f"/fhir/Subscription/{id}", stored)
    assert refused.status_code == 400, refused.text
    assert refused.json()["issue"][0]["expression"] == ["Subscription.channel.header"]
    patch = [{"op": "replace", "path": "/channel/endpoint", "value": elsewhere}]
    patched = send(client, "PATCH", f"/fhir/Subscription/{id}", patch,
                   content_type="application/json-patch+json")
    assert patched.status_code == 400, patched.text
    assert client.get(f"/fhir/Subscription/{id}").json()["meta"]["versionId"] == version
    # The secret alone is bound the same way.
    stored["channel"]["header"] = ["Authorization: Bearer for-elsewhere"]
    refused = send(client, "PUT", f"/fhir/Subscription/{id}", stored)
    assert refused.status_code == 400
    assert refused.json()["issue"][0]["expression"] == ["Subscription.channel.extension"]
    # With the values sent again, the endpoint changes; they go there, the old ones nowhere.
    stored["channel"]["extension"] = [{"url": SECRET, "valueString": OWN_SECRET + "-2"}]
    assert send(client, "PUT", f"/fhir/Subscription/{id}", stored).status_code == 200
    update_patient(client, "p1", "After")
    dispatch(client, 2)
    moved = [r for r in hook.received if r.path == "/hook?elsewhere"]
    assert moved and all(r.headers["Authorization"] == "Bearer for-elsewhere" for r in moved)


def test_credentials_are_never_joined_to_another_endpoint() -> None:
    """The dispatcher reads the resources and the credentials apart: an update between the
    two reads must not send one endpoint's credentials to another."""
    resource = subscription("https://new.example.org/hook", header=[f"Authorization: {MASK}"])
    old = Credentials((("Authorization", RAW),), OWN_SECRET, endpoint="https://old.example.org/hook")
    assert RAW not in str(unmask(resource, old)) and OWN_SECRET not in str(unmask(resource, old))
    same = Credentials((("Authorization", RAW),), None, endpoint="https://new.example.org/hook")
    assert unmask(resource, same)["channel"]["header"] == [f"Authorization: {RAW}"]


def test_the_values_stay_out_of_reprs() -> None:
    """A repr ends up in tracebacks, debuggers and log lines: never the values."""
    kept = Credentials((("Authorization", RAW),), OWN_SECRET, endpoint="https://example.org/hook")
    assert RAW not in repr(kept) and OWN_SECRET not in repr(kept)
    assert {f.name for f in fields(Plan) if not f.repr} >= {"headers", "secret"}
