"""Review of sealed messages (issue 16): a sealed payload omitting a current key is refused,
but a message whose payload, sender and recipients stay as stored is not sealed again: after a
recipient enrols a new key, its status still changes (nobody but the recipients could re-seal
it, and the old key still opens it); a new payload, or a new recipient, is checked in full."""

from __future__ import annotations

from joserfc.jwk import ECKey

from fhir_server.crypto.seal import seal
from tests.crypto.test_sealed_writes import MARKER, World, _attachment, _message, world  # noqa: F401
from tests.http.helpers import issue, send
from tests.trials.conftest import platform  # noqa: F401 (fixture)


def test_a_status_change_survives_a_recipients_new_key(world: World) -> None:  # noqa: F811
    assert world.enrol("patient", "patient", "minor").status_code == 200
    physician = world.platform.headers("physician", "minor")
    both = _attachment(seal(MARKER, [world.public("dr"), world.public("patient")]))
    body = {**_message(both, "Patient/minor"), "subject": {"reference": "Patient/minor"},
            "status": "in-progress"}
    created = send(world.client, "POST", "/fhir/Communication", body, **physician)
    assert created.status_code == 201, created.text
    world.keys["patient-new"] = ECKey.generate_key("P-256", {"kid": "patient-new", "use": "enc"})
    assert world.enrol("patient", "patient-new", "minor").status_code == 200
    stored = {k: v for k, v in created.json().items() if k != "meta"}
    done = send(world.client, "PUT", f"/fhir/Communication/{stored['id']}",
                {**stored, "status": "completed"}, **physician)
    assert done.status_code == 200, done.text
    # A new payload sealed to the old key: refused, naming the current one.
    again = _attachment(seal(MARKER + " bis", [world.public("dr"), world.public("patient")]))
    changed = send(world.client, "PUT", f"/fhir/Communication/{stored['id']}",
                   {**stored, "payload": [{"contentAttachment": again}]}, **physician)
    assert changed.status_code == 400
    assert "'patient-new' of recipient Patient/minor" in issue(changed)["diagnostics"]
    # A message sealed to the current keys, given one more recipient whose key it omits:
    # refused, naming them.
    current = _attachment(seal(MARKER, [world.public("dr"), world.public("patient-new")]))
    second = send(world.client, "POST", "/fhir/Communication",
                  {**body, "payload": [{"contentAttachment": current}]}, **physician)
    assert second.status_code == 201, second.text
    kept = {k: v for k, v in second.json().items() if k != "meta"}
    wider = {**kept, "recipient": [*kept["recipient"], {"reference": "Practitioner/dr-team"}]}
    refused = send(world.client, "PUT", f"/fhir/Communication/{kept['id']}", wider, **physician)
    assert refused.status_code == 400, refused.text
    assert "Practitioner/dr-team" in issue(refused)["diagnostics"]


def test_a_sealed_documents_status_changes_after_a_recipients_new_key(world: World) -> None:  # noqa: F811
    """The same for a DocumentReference a message points to: marked superseded, its sealed
    content unchanged, after the patient enrolled a new key."""
    assert world.enrol("patient", "patient", "minor").status_code == 200
    physician = world.platform.headers("physician", "minor")
    jwe = seal(MARKER, [world.public("dr"), world.public("patient")])
    document = {"resourceType": "DocumentReference", "status": "current",
                "subject": {"reference": "Patient/minor"},
                "content": [{"attachment": _attachment(jwe)}]}
    created = send(world.client, "POST", "/fhir/DocumentReference", document, **physician)
    assert created.status_code == 201, created.text
    id = created.json()["id"]
    message = {**_message({}, "Patient/minor"), "subject": {"reference": "Patient/minor"},
               "payload": [{"contentReference": {"reference": f"DocumentReference/{id}"}}]}
    assert send(world.client, "POST", "/fhir/Communication", message, **physician).status_code == 201
    world.keys["patient-newer"] = ECKey.generate_key("P-256", {"kid": "patient-newer", "use": "enc"})
    assert world.enrol("patient", "patient-newer", "minor").status_code == 200
    stored = {k: v for k, v in created.json().items() if k != "meta"}
    superseded = send(world.client, "PUT", f"/fhir/DocumentReference/{id}",
                      {**stored, "status": "superseded"}, **physician)
    assert superseded.status_code == 200, superseded.text
    resealed = _attachment(seal(MARKER + " bis", [world.public("dr"), world.public("patient")]))
    changed = send(world.client, "PUT", f"/fhir/DocumentReference/{id}",
                   {**stored, "content": [{"attachment": resealed}]}, **physician)
    assert changed.status_code == 400
    assert "'patient-newer' of recipient Patient/minor" in issue(changed)["diagnostics"]
