"""Review of `Patient/$erase` and the subscriptions' events, on both stores: an erasure cut
short after the store's erasure (a crash) has no second chance (the Patient is gone, a new
`$erase` answers 404), so the patient's events must already be gone by then."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from fhir_server.services import erase
from tests.http.helpers import send
from tests.subscriptions.conftest import dispatch
from tests.subscriptions.receiver import Receiver
from tests.subscriptions.test_delivery import subscribe, subscription, update_patient
from tests.subscriptions.test_erasure import _admin, _focuses, _kept


class Crash(Exception):
    """The process dies right after the store's erasure."""


def test_an_erasure_cut_short_after_the_store_leaves_no_event_of_the_patient(
        client: TestClient, hook: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    admin = _admin(client)
    for id in ("a", "b"):
        update_patient(client, id, "Before")
    topic = subscribe(client, subscription(hook.url))
    dispatch(client)
    update_patient(client, "a", "One")
    update_patient(client, "b", "One")
    dispatch(client, 2)  # numbered and delivered
    update_patient(client, "a", "Two")  # pending
    before = len(_kept(client))

    async def crash(*_: object) -> None:
        raise Crash

    monkeypatch.setattr(erase.export, "forget", crash)
    cut = send(client, "POST", "/fhir/Patient/a/$erase", {
        "resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "asked"}]}, **admin)
    assert cut.status_code == 500
    assert client.get("/fhir/Patient/a").status_code in (404, 410)
    assert len(_kept(client)) == before - 2
    replay = _focuses(client.get(f"/fhir/Subscription/{topic}/$events").json())
    assert "Patient/a" not in replay and "Patient/b" in replay
