"""A practitioner's agreement for a record they do not reach is a proposal: stored `proposed`,
granting nothing, until the patient (or their representative) confirms it in the portal or
with the one-time code they received (docs/referrals.md, "Opening a patient record").
FHIR R4 consent.html (Consent.status), operations.html; tests/trials/conftest.py builds the
world, on SQLite and on the MongoDB double."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest

from fhir_server.access import codes
from tests.builders import consent, observation, patient
from tests.http.helpers import send
from tests.trials.conftest import DR, Platform

_serial = itertools.count()


def _practitioner(platform: Platform) -> tuple[str, dict[str, str]]:
    """A practitioner no patient has named yet, and their bearer headers."""
    who = f"Practitioner/dr-new-{next(_serial)}"
    tokens = platform.client.app.state.tokens  # type: ignore[attr-defined]
    issued = tokens.issue(subject=who, client_id="portal", scope="user/*.cruds", fhir_user=who)
    return who, {"Authorization": f"Bearer {issued['access_token']}"}


def _ehr_patient(platform: Platform) -> str:
    """A record an EHR pushed (nobody named in a consent)."""
    id = f"pushed-{next(_serial)}"
    body = {**patient(given="Pushed"), "id": id}
    assert send(platform.client, "PUT", f"/fhir/Patient/{id}", body, **platform.headers("ehr")).status_code == 201
    obs = {**observation(f"Patient/{id}"), "id": f"{id}-obs"}
    assert send(platform.client, "PUT", f"/fhir/Observation/{id}-obs", obs, **platform.headers("ehr")).status_code == 201
    return id


def _other_physicians_patient(platform: Platform) -> str:
    """A record another physician (DR) created with the patient's agreement."""
    entries: list[dict[str, Any]] = [
        {"fullUrl": "urn:uuid:6a0a4bd8-0000-4000-8000-0000000000aa", "resource": patient(given="Theirs"),
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": consent("x", actor=DR) | {"patient": {"reference": "urn:uuid:6a0a4bd8-0000-4000-8000-0000000000aa"}},
         "request": {"method": "POST", "url": "Consent"}}]
    created = send(platform.client, "POST", "/fhir", {"resourceType": "Bundle", "type": "transaction",
                                                      "entry": entries}, **platform.headers("physician"))
    assert created.status_code == 200, created.text
    return str(created.json()["entry"][0]["response"]["location"].split("/")[1])


def _propose(platform: Platform, who: str, headers: dict[str, str], patient_id: str) -> Any:
    return send(platform.client, "POST", "/fhir/Consent", consent(patient_id, actor=who), **headers)


def _reaches(platform: Platform, headers: dict[str, str], patient_id: str) -> bool:
    read = platform.client.get(f"/fhir/Patient/{patient_id}", headers=headers).status_code
    found = platform.client.get(f"/fhir/Observation?subject=Patient/{patient_id}", headers=headers).json()
    assert (read == 200) == bool(found.get("entry")), (read, found)
    return read == 200


def _confirm(platform: Platform, consent_id: str, code: str | None, headers: dict[str, str]) -> Any:
    parameters = [{"name": "code" if code is not None else "other", "valueString": code or "x"}]
    return send(platform.client, "POST", f"/fhir/Consent/{consent_id}/$confirm",
                {"resourceType": "Parameters", "parameter": parameters}, **headers)


def _code(platform: Platform, patient_id: str, consent_id: str) -> str:
    """The code the patient received: a Communication to them about the Consent."""
    found = platform.client.get(f"/fhir/Communication?recipient=Patient/{patient_id}&about=Consent/{consent_id}",
                                headers=platform.headers("patient", patient_id)).json()
    [entry] = found["entry"]
    text = entry["resource"]["payload"][0]["contentString"]
    match = re.search(r"\b(\d{%d})\b" % codes.DIGITS, text)
    assert match, text
    return match.group(1)


RECORDS = {"pushed by an EHR": _ehr_patient, "created by another physician": _other_physicians_patient}


@pytest.mark.parametrize("record", RECORDS)
def test_an_attestation_for_an_existing_record_is_a_proposal_granting_nothing(platform: Platform, record: str) -> None:
    patient_id = RECORDS[record](platform)
    who, headers = _practitioner(platform)
    assert not _reaches(platform, headers, patient_id)
    answer = _propose(platform, who, headers, patient_id)
    assert answer.status_code == 201, answer.text
    assert answer.json()["status"] == "proposed"
    assert not _reaches(platform, headers, patient_id)
    assert platform.refer(patient_id, headers=headers).status_code == 404
    # The same answer for a patient that does not exist: no oracle.
    missing = _propose(platform, who, headers, f"no-such-{next(_serial)}")
    assert missing.status_code == 201 and missing.json()["status"] == "proposed"
    assert set(missing.json()) == set(answer.json())
    assert set(missing.headers) == set(answer.headers)


def test_a_physician_cannot_activate_their_own_proposal(platform: Platform) -> None:
    patient_id = _ehr_patient(platform)
    who, headers = _practitioner(platform)
    proposed = _propose(platform, who, headers, patient_id).json()
    active = {k: v for k, v in proposed.items() if k != "meta"} | {"status": "active"}
    assert send(platform.client, "PUT", f"/fhir/Consent/{proposed['id']}", active, **headers).status_code == 403
    patch = [{"op": "replace", "path": "/status", "value": "active"}]
    assert send(platform.client, "PATCH", f"/fhir/Consent/{proposed['id']}", patch,
                content_type="application/json-patch+json", **headers).status_code == 403
    assert _confirm(platform, proposed["id"], None, headers).status_code == 400
    assert _confirm(platform, proposed["id"], "0" * codes.DIGITS, headers).status_code == 403
    # Another proposal does not help, nor does a batch or a transaction: each is a proposal.
    assert _propose(platform, who, headers, patient_id).json()["status"] == "proposed"
    for kind in ("batch", "transaction"):
        bundle = {"resourceType": "Bundle", "type": kind, "entry": [
            {"resource": consent(patient_id, actor=who), "request": {"method": "POST", "url": "Consent"}}]}
        answer = send(platform.client, "POST", "/fhir", bundle, **headers)
        assert answer.status_code == 200, answer.text
        location = answer.json()["entry"][0]["response"]["location"].split("/_history")[0]
        assert platform.client.get(f"/fhir/{location}", headers=platform.headers("ehr")).json()["status"] == "proposed"
    assert not _reaches(platform, headers, patient_id)
    stored = platform.client.get(f"/fhir/Consent/{proposed['id']}", headers=platform.headers("ehr")).json()
    assert stored["status"] == "entered-in-error"  # superseded by the later proposals, never active


def test_the_code_the_patient_received_confirms_the_proposal(platform: Platform) -> None:
    patient_id = _ehr_patient(platform)
    who, headers = _practitioner(platform)
    proposed = _propose(platform, who, headers, patient_id).json()
    code = _code(platform, patient_id, proposed["id"])
    # Another practitioner cannot use it, nor tell the Consent exists.
    _, intruder = _practitioner(platform)
    assert _confirm(platform, proposed["id"], code, intruder).status_code == 404
    assert _confirm(platform, "no-such-consent", code, headers).status_code == 404
    confirmed = _confirm(platform, proposed["id"], code, headers)
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "active"
    assert _reaches(platform, headers, patient_id)
    # The code is spent.
    assert _confirm(platform, proposed["id"], code, headers).status_code == 409


@pytest.mark.parametrize("by", ["patient", "representative"])
def test_the_patient_or_their_representative_confirms_in_the_portal(platform: Platform, by: str) -> None:
    patient_id = "minor" if by == "representative" else _ehr_patient(platform)
    who, headers = _practitioner(platform)
    proposed = _propose(platform, who, headers, patient_id).json()
    assert not _reaches(platform, headers, patient_id)
    portal = platform.headers(by, patient_id)
    mine = platform.client.get(f"/fhir/Consent/{proposed['id']}", headers=portal).json()
    accepted = {k: v for k, v in mine.items() if k != "meta"} | {"status": "active"}
    assert send(platform.client, "PUT", f"/fhir/Consent/{proposed['id']}", accepted, **portal).status_code == 200
    assert _reaches(platform, headers, patient_id)


def test_a_code_expires(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    patient_id = _ehr_patient(platform)
    who, headers = _practitioner(platform)
    monkeypatch.setattr(codes, "LIFETIME", -1.0)
    proposed = _propose(platform, who, headers, patient_id).json()
    answer = _confirm(platform, proposed["id"], _code(platform, patient_id, proposed["id"]), headers)
    assert answer.status_code == 403 and "expired" in answer.text
    assert not _reaches(platform, headers, patient_id)


def test_a_code_allows_few_attempts(platform: Platform) -> None:
    patient_id = _ehr_patient(platform)
    who, headers = _practitioner(platform)
    proposed = _propose(platform, who, headers, patient_id).json()
    code = _code(platform, patient_id, proposed["id"])
    wrong = str((int(code) + 1) % 10**codes.DIGITS).zfill(codes.DIGITS)
    for _ in range(codes.MAX_ATTEMPTS):
        assert _confirm(platform, proposed["id"], wrong, headers).status_code == 403
    assert _confirm(platform, proposed["id"], code, headers).status_code == 403
    assert not _reaches(platform, headers, patient_id)


def test_every_attempt_is_in_the_patients_audit_trail(platform: Platform) -> None:
    patient_id = _ehr_patient(platform)
    who, headers = _practitioner(platform)
    proposed = _propose(platform, who, headers, patient_id).json()
    _confirm(platform, proposed["id"], "1" * codes.DIGITS, headers)
    _confirm(platform, proposed["id"], _code(platform, patient_id, proposed["id"]), headers)
    trail = platform.client.get(f"/fhir/AuditEvent?patient=Patient/{patient_id}&_count=100",
                                headers=platform.headers("patient", patient_id)).json()
    theirs = [e["resource"] for e in trail["entry"] if e["resource"]["agent"][0]["who"].get("reference") == who]
    outcomes = sorted(e["outcome"] for e in theirs)
    assert len(theirs) == 3 and outcomes == ["0", "0", "4"], outcomes
    assert all(f"Consent/{proposed['id']}" in {x["what"]["reference"] for x in e["entity"] if "what" in x}
               for e in theirs)


def test_the_operation_is_advertised(platform: Platform) -> None:
    statement = platform.client.get("/fhir/metadata").json()
    [consent_type] = [r for r in statement["rest"][0]["resource"] if r["type"] == "Consent"]
    assert {"name": "confirm", "definition": "https://oncotrials.example.org/fhir/OperationDefinition/Consent-confirm"} in consent_type["operation"]


def test_a_proposal_is_an_agreement_only(platform: Platform) -> None:
    patient_id = _ehr_patient(platform)
    who, headers = _practitioner(platform)
    for status in ("rejected", "inactive", "draft"):
        for target in (patient_id, "no-such-patient"):
            body = consent(target, actor=who, status=status)
            assert send(platform.client, "POST", "/fhir/Consent", body, **headers).status_code == 403, status
    assert _propose(platform, who, headers, patient_id).status_code == 201


def _written_for(platform: Platform, patient_id: str, consent_id: str) -> dict[str, Any]:
    """What a proposal left behind, seen by the EHR: the kinds of resources written and to
    whom, and whether a code waits for the Consent."""
    ehr = platform.headers("ehr")
    notices = platform.client.get(f"/fhir/Communication?about=Consent/{consent_id}", headers=ehr).json()
    shapes = sorted((e["resource"]["resourceType"], e["resource"]["recipient"][0]["reference"] == f"Patient/{patient_id}",
                     e["resource"]["category"][0]["coding"][0]["code"]) for e in notices.get("entry", []))
    book = platform.client.app.state.context.codes  # type: ignore[attr-defined]
    return {"notices": shapes, "code": book.check(f"Consent/{consent_id}", "not-a-code", "Practitioner/test") is codes.CodeCheck.WRONG}


def test_a_proposal_does_the_same_work_whether_the_patient_exists_or_not(platform: Platform) -> None:
    """No timing oracle: the same writes (a code and a notice) for an existing patient and for
    an id nobody holds."""
    existing = _ehr_patient(platform)
    missing = f"no-such-{next(_serial)}"
    who, headers = _practitioner(platform)
    left = [_written_for(platform, id, _propose(platform, who, headers, id).json()["id"]) for id in (existing, missing)]
    assert left[0] == left[1] == {"notices": [("Communication", True, "notification")], "code": True}, left


@pytest.mark.parametrize("extra", [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "research"},
                                   {"system": "http://example.org/scopes", "code": "anything"}])
def test_a_proposal_asks_for_the_physicians_access_only(platform: Platform, extra: dict[str, str]) -> None:
    """The notice describes the physician's access: a proposal asking for more is refused,
    for an existing patient and a missing one alike, and leaves nothing behind."""
    who, headers = _practitioner(platform)
    for target in (_ehr_patient(platform), f"no-such-{next(_serial)}"):
        body = consent(target, actor=who)
        body["scope"]["coding"].append(extra)
        answer = send(platform.client, "POST", "/fhir/Consent", body, **headers)
        assert answer.status_code == 422 and "Consent.scope" in answer.json()["issue"][0]["expression"], answer.text
        stored = platform.client.get(f"/fhir/Consent?patient=Patient/{target}", headers=platform.headers("ehr")).json()
        notices = platform.client.get(f"/fhir/Communication?recipient=Patient/{target}", headers=platform.headers("ehr")).json()
        assert not stored.get("entry") and not notices.get("entry")


def test_an_attempt_by_another_practitioner_is_in_the_patients_audit_trail(platform: Platform) -> None:
    """Answered 404 like an unknown Consent, yet recorded for the patient, and not shown to
    the intruder."""
    patient_id = _ehr_patient(platform)
    who, headers = _practitioner(platform)
    proposed = _propose(platform, who, headers, patient_id).json()
    intruder, intruder_headers = _practitioner(platform)
    tried = _confirm(platform, proposed["id"], "1" * codes.DIGITS, intruder_headers)
    unknown = _confirm(platform, f"no-such-{next(_serial)}", "1" * codes.DIGITS, intruder_headers)
    assert tried.status_code == unknown.status_code == 404
    assert tried.json()["issue"][0]["code"] == unknown.json()["issue"][0]["code"]
    trail = platform.client.get(f"/fhir/AuditEvent?patient=Patient/{patient_id}&_count=100",
                                headers=platform.headers("patient", patient_id)).json()
    theirs = [e["resource"] for e in trail["entry"] if e["resource"]["agent"][0]["who"].get("reference") == intruder]
    assert len(theirs) == 1 and theirs[0]["outcome"] == "4", theirs
    assert f"Consent/{proposed['id']}" in {x["what"]["reference"] for x in theirs[0]["entity"] if "what" in x}
    seen = platform.client.get(f"/fhir/AuditEvent?patient=Patient/{patient_id}", headers=intruder_headers)
    assert not seen.json().get("entry")


def test_a_new_proposal_supersedes_the_pending_one(platform: Platform) -> None:
    """One pending proposal per practitioner and patient: the earlier one is marked
    entered-in-error and its code spent; another practitioner's is untouched."""
    patient_id = _ehr_patient(platform)
    who, headers = _practitioner(platform)
    other, other_headers = _practitioner(platform)
    first = _propose(platform, who, headers, patient_id).json()["id"]
    first_code = _code(platform, patient_id, first)
    theirs = _propose(platform, other, other_headers, patient_id).json()["id"]
    second = _propose(platform, who, headers, patient_id).json()["id"]
    ehr = platform.headers("ehr")
    status = {id: platform.client.get(f"/fhir/Consent/{id}", headers=ehr).json()["status"] for id in (first, theirs, second)}
    assert status == {first: "entered-in-error", theirs: "proposed", second: "proposed"}
    answer = _confirm(platform, first, first_code, headers)
    assert answer.status_code == 409 and not _reaches(platform, headers, patient_id)
    assert _confirm(platform, second, _code(platform, patient_id, second), headers).status_code == 200
    assert _confirm(platform, theirs, _code(platform, patient_id, theirs), other_headers).status_code == 200


def test_wrong_codes_are_limited_per_practitioner_across_proposals(platform: Platform) -> None:
    """Proposing again buys no more guesses: past MAX_FAILURES wrong codes in the window, even
    the right code of another proposal is refused, with an OperationOutcome saying why."""
    who, headers = _practitioner(platform)
    per_code = codes.MAX_ATTEMPTS
    wrong = "x" * codes.DIGITS
    for _ in range(-(-codes.MAX_FAILURES // per_code)):
        proposed = _propose(platform, who, headers, _ehr_patient(platform)).json()["id"]
        for _ in range(per_code):
            assert _confirm(platform, proposed, wrong, headers).status_code == 403
    patient_id = _ehr_patient(platform)
    last = _propose(platform, who, headers, patient_id).json()["id"]
    refused = _confirm(platform, last, _code(platform, patient_id, last), headers)
    assert refused.status_code == 403 and refused.json()["issue"][0]["code"] == "throttled", refused.text
    assert not _reaches(platform, headers, patient_id)
    # The patient can still accept it in the portal.
    assert platform.client.get(f"/fhir/Consent/{last}", headers=platform.headers("ehr")).json()["status"] == "proposed"
