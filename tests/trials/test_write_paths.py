"""One write path: a create sent alone (REST), as a batch entry or as a transaction entry
meets the same rules and hooks (http.html#transaction: entries are processed as the
corresponding REST interactions). The decision table's writes and an investigator's answer
to a referral, through each path."""

from __future__ import annotations

from typing import Any

import pytest

from tests.builders import observation
from tests.http.helpers import send
from tests.trials.conftest import OUTCOMES, STATES, Platform
from tests.trials.test_decision_table import ACTORS, _expected

PATHS = ("rest", "batch", "transaction")
_OUTCOME = {"200": "ok", "201": "ok", "403": "forbidden", "404": "hidden"}


def _create(platform: Platform, path: str, resource: dict[str, Any], headers: dict[str, str]) -> tuple[str, Any]:
    """POST `resource` through `path`: (outcome, the created resource or None)."""
    if path == "rest":
        response = send(platform.client, "POST", f"/fhir/{resource['resourceType']}", resource, **headers)
        return _OUTCOME[str(response.status_code)], response.json() if response.status_code == 201 else None
    bundle = {"resourceType": "Bundle", "type": path, "entry": [
        {"fullUrl": "urn:uuid:0b5e5d61-5c67-4f3e-9d3f-000000000001", "resource": resource,
         "request": {"method": "POST", "url": resource["resourceType"]}}]}
    response = send(platform.client, "POST", "/fhir", bundle, **headers)
    if path == "transaction" and response.status_code != 200:
        return _OUTCOME[str(response.status_code)], None
    assert response.status_code == 200, response.text
    [entry] = response.json()["entry"]
    status = entry["response"]["status"].split()[0]
    return _OUTCOME[status], entry.get("resource")


@pytest.mark.parametrize("patient", [p for p in STATES])
@pytest.mark.parametrize("actor", ACTORS)
def test_writes_of_the_decision_table_on_every_path(platform: Platform, actor: str, patient: str) -> None:
    if actor == "patient" and patient == "stranger":
        return
    if actor == "break-glass":
        headers = {**platform.headers("admin"), "X-Break-Glass-Reason": "Patient unconscious in ER"}
    else:
        headers = platform.headers(actor, patient)
    outcomes = {path: _create(platform, path, observation(f"Patient/{patient}"), headers)[0]
                for path in PATHS}
    assert outcomes == {path: _expected(actor, "write", patient) for path in PATHS}


@pytest.mark.parametrize("path", PATHS)
def test_an_investigators_answer_is_the_same_on_every_path(platform: Platform, path: str) -> None:
    referred = platform.refer("shared")
    assert referred.status_code == 201, referred.text
    referral = referred.json()
    answer = {"resourceType": "Communication", "status": "completed",
              "inResponseTo": [{"reference": f"Communication/{referral['id']}"}],
              "reasonCode": [{"coding": [{"system": OUTCOMES, "code": "preselected"}]}],
              "payload": [{"contentString": "Screening visit on 12/12."}]}
    outcome, stored = _create(platform, path, answer, platform.headers("investigator"))
    assert outcome == "ok"
    assert stored is not None and stored["recipient"] == [referral["sender"]] and "sender" in stored
    physician = platform.headers("physician")
    moved = platform.client.get(f"/fhir/Communication/{referral['id']}", headers=physician).json()
    assert moved["statusReason"]["coding"][0]["code"] == "preselected"
