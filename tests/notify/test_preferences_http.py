"""`GET`/`PUT /notifications/preferences` (http/notifications.py): a signed-in person reads
and changes their own preferences, audited; anyone else is refused; bad input is a 400
OperationOutcome and changes nothing. On both stores."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import token

URL = "/notifications/preferences"
EVENTS = "https://oncotrials.example.org/fhir/CodeSystem/notification-event"


# Changing preferences takes the right to update one's own resource.
WRITE = "user/*.rs user/Practitioner.u"


def _as(client: TestClient, fhir_user: str | None = "Practitioner/p1",
        scope: str = WRITE) -> dict[str, str]:
    claims = {"fhir_user": fhir_user} if fhir_user else {}
    return {"Authorization": f"Bearer {token(client, scope, **claims)}"}


def test_a_person_reads_and_changes_their_preferences(client: TestClient) -> None:
    assert client.get(URL, headers=_as(client)).json() == {
        "channel": "email", "language": None, "optedOut": False}
    changed = client.put(URL, json={"channel": "sms", "language": "en", "optedOut": True},
                         headers=_as(client))
    assert changed.status_code == 200, changed.text
    assert client.get(URL, headers=_as(client)).json() == {
        "channel": "sms", "language": "en", "optedOut": True}
    assert client.get(URL, headers=_as(client, "Patient/p2")).json()["optedOut"] is False
    events = client.get(f"/fhir/AuditEvent?type={EVENTS}|preferences").json()["entry"]
    assert [e["resource"]["entity"][0]["what"] for e in events] == [{"reference": "Practitioner/p1"}]


def test_only_a_person_has_preferences(client: TestClient) -> None:
    for headers in (_as(client, None), _as(client, "Organization/o1"), {}):
        answer = client.put(URL, json={"optedOut": True}, headers=headers)
        assert answer.status_code in (401, 403), answer.text
        assert answer.json()["resourceType"] == "OperationOutcome"


def test_bad_preferences_are_refused_and_change_nothing(client: TestClient) -> None:
    client.put(URL, json={"language": "fr"}, headers=_as(client))
    bad: list[tuple[Any, str]] = [({"channel": "pigeon"}, "channel"), ({"language": "de"}, "language"),
                                  ({"optedOut": "yes"}, "optedOut"), ({"email": "x@y"}, ""),
                                  (["optedOut"], "")]
    for body, where in bad:
        answer = client.put(URL, json=body, headers=_as(client))
        assert answer.status_code == 400, body
        issue = answer.json()["issue"][0]
        assert issue.get("expression", [""]) == [where] if where else "expression" not in issue
    not_json = client.put(URL, content=b"{", headers={**_as(client), "Content-Type": "application/json"})
    assert not_json.status_code == 400
    assert client.put(URL, content=b"x", headers={**_as(client), "Content-Type": "text/plain"}).status_code == 415
    assert client.get(URL, headers=_as(client)).json() == {
        "channel": "email", "language": "fr", "optedOut": False}


def test_changing_preferences_takes_the_right_to_update_ones_own_resource(
        client: TestClient) -> None:
    """A token that may only read (or update something else) cannot opt its user out of
    reminders: 403, nothing changed; `<level>/<own type>.u` may."""
    for scope in ("user/*.rs", "patient/Observation.cruds", "openid fhirUser",
                  "user/Patient.u", "user/Practitioner.u?identifier=x|y"):
        answer = client.put(URL, json={"optedOut": True}, headers=_as(client, scope=scope))
        assert answer.status_code == 403, (scope, answer.text)
        assert answer.json()["resourceType"] == "OperationOutcome"
    assert client.get(URL, headers=_as(client, scope="user/*.rs")).json()["optedOut"] is False
    for person, scope in (("Practitioner/p1", "user/Practitioner.u"),
                          ("Patient/p2", "patient/Patient.u")):
        answer = client.put(URL, json={"optedOut": True}, headers=_as(client, person, scope))
        assert answer.status_code == 200, (scope, answer.text)
