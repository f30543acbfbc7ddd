"""Review of sealed messages (issue 16): a sealed payload omitting a current key is refused,
but a message whose payload, sender and recipients stay as stored is not sealed again: after a
recipient enrols a new key, its status still changes (nobody but the recipients could re-seal
it, and the old key still opens it); a new payload, or a new recipient, is checked in full."""

from __future__ import annotations

from typing import Any

from joserfc.jwk import ECKey

from fhir_server.crypto.seal import seal
from tests.crypto.test_sealed_writes import MARKER, World, _attachment, _message, world  # noqa: F401
from tests.http.helpers import issue, send
from tests.trials.conftest import platform  # noqa: F401 (fixture)


PHYSICIAN = ("physician", "minor")


def _post(world: World, body: dict[str, Any]) -> dict[str, Any]:  # noqa: F811
    """`body` created by the physician, as stored (without meta)."""
    created = send(world.client, "POST", f"/fhir/{body['resourceType']}", body,
                   **world.platform.headers(*PHYSICIAN))
    assert created.status_code == 201, created.text
    return {k: v for k, v in created.json().items() if k != "meta"}


def _new_patient_key(world: World, kid: str) -> None:  # noqa: F811
    world.keys[kid] = ECKey.generate_key("P-256", {"kid": kid, "use": "enc"})
    assert world.enrol("patient", kid, "minor").status_code == 200


def _put(world: World, body: dict[str, Any]) -> Any:  # noqa: F811
    return send(world.client, "PUT", f"/fhir/{body['resourceType']}/{body['id']}", body,
                **world.platform.headers(*PHYSICIAN))


def _sealed_to(world: World, *kids: str, text: str = MARKER) -> dict[str, Any]:  # noqa: F811
    return _attachment(seal(text, [world.public(kid) for kid in kids]))


def _status_kept_content_checked(world: World, stored: dict[str, Any], status: str,  # noqa: F811
                                 content: dict[str, Any], kid: str) -> None:
    """After the patient's new key `kid`: `stored` takes `status`, its sealed content as it
    was; given `content` sealed to the old key instead, it is refused, naming `kid`."""
    done = _put(world, {**stored, "status": status})
    assert done.status_code == 200, done.text
    changed = _put(world, {**stored, **content})
    assert changed.status_code == 400
    assert f"'{kid}' of recipient Patient/minor" in issue(changed)["diagnostics"]


def test_a_status_change_survives_a_recipients_new_key(world: World) -> None:  # noqa: F811
    assert world.enrol("patient", "patient", "minor").status_code == 200
    body = {**_message(_sealed_to(world, "dr", "patient"), "Patient/minor"),
            "subject": {"reference": "Patient/minor"}, "status": "in-progress"}
    stored = _post(world, body)
    _new_patient_key(world, "patient-new")
    again = _sealed_to(world, "dr", "patient", text=MARKER + " bis")
    _status_kept_content_checked(world, stored, "completed", {"payload": [{"contentAttachment": again}]},
                                 "patient-new")
    # A message sealed to the current keys, given one more recipient whose key it omits:
    # refused, naming them.
    kept = _post(world, {**body, "payload": [{"contentAttachment": _sealed_to(world, "dr", "patient-new")}]})
    refused = _put(world, {**kept, "recipient": [*kept["recipient"], {"reference": "Practitioner/dr-team"}]})
    assert refused.status_code == 400, refused.text
    assert "Practitioner/dr-team" in issue(refused)["diagnostics"]


def test_a_sealed_documents_status_changes_after_a_recipients_new_key(world: World) -> None:  # noqa: F811
    """The same for a DocumentReference a message points to: marked superseded, its sealed
    content unchanged, after the patient enrolled a new key."""
    assert world.enrol("patient", "patient", "minor").status_code == 200
    stored = _post(world, {"resourceType": "DocumentReference", "status": "current",
                           "subject": {"reference": "Patient/minor"},
                           "content": [{"attachment": _sealed_to(world, "dr", "patient")}]})
    _post(world, {**_message({}, "Patient/minor"), "subject": {"reference": "Patient/minor"},
                  "payload": [{"contentReference": {"reference": f"DocumentReference/{stored['id']}"}}]})
    _new_patient_key(world, "patient-newer")
    resealed = _sealed_to(world, "dr", "patient", text=MARKER + " bis")
    _status_kept_content_checked(world, stored, "superseded", {"content": [{"attachment": resealed}]},
                                 "patient-newer")
