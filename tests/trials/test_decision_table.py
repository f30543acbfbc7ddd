"""The access rules of the platform as a decision table: actors x interactions x consent
states (tests/trials/conftest.py builds the world). Expected outcomes: `ok` (the data, or the
write done), `hidden` (404 or an empty search: the caller cannot tell whether it exists),
`forbidden` (403, nothing stored)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.builders import consent, observation
from tests.http.helpers import send
from tests.trials.conftest import STATES, STUDY, Platform

# Whom the referring physician reaches, and whose record may be shared with investigators.
REACHED = {"shared", "unshared", "objected", "minor", "leaving"}
SHAREABLE = {"shared", "minor", "leaving"}


def _read(platform: Platform, actor: str, patient: str, headers: dict[str, str]) -> str:
    response = platform.client.get(f"/fhir/Patient/{patient}", headers=headers)
    return {200: "ok", 404: "hidden", 403: "forbidden"}[response.status_code]


def _search(platform: Platform, actor: str, patient: str, headers: dict[str, str]) -> str:
    response = platform.client.get(f"/fhir/Observation?subject=Patient/{patient}", headers=headers)
    if response.status_code == 403:
        return "forbidden"
    assert response.status_code == 200, response.text
    return "ok" if response.json().get("total", len(response.json().get("entry", []))) else "hidden"


def _write(platform: Platform, actor: str, patient: str, headers: dict[str, str]) -> str:
    response = send(platform.client, "POST", "/fhir/Observation", observation(f"Patient/{patient}"),
                    **headers)
    return {201: "ok", 403: "forbidden", 404: "hidden"}[response.status_code]


def _refer(platform: Platform, actor: str, patient: str, headers: dict[str, str]) -> str:
    before = _stored(platform)
    response = platform.refer(patient, headers=headers)
    if response.status_code != 201:
        assert _stored(platform) == before, "a refused referral stored something"
    return {201: "ok", 403: "forbidden", 404: "hidden"}[response.status_code]


def _stored(platform: Platform) -> tuple[int, ...]:
    ehr = platform.headers("ehr")
    return tuple(platform.client.get(f"/fhir/{t}?_summary=count", headers=ehr).json()["total"]
                 for t in ("Communication", "Bundle", "ResearchSubject"))


INTERACTIONS = {"read": _read, "search": _search, "write": _write, "refer": _refer}


def _expected(actor: str, interaction: str, patient: str) -> str:
    if actor == "ehr":
        return "forbidden" if interaction == "refer" else "ok"
    if actor == "physician":
        if patient not in REACHED:
            return "forbidden" if interaction == "write" else "hidden"
        if interaction == "refer" and patient not in SHAREABLE:
            return "forbidden"
        return "ok"
    if actor == "patient":  # in their own record
        return "forbidden" if interaction == "refer" else "ok"
    if actor == "break-glass":
        return {"read": "ok", "search": "ok"}.get(interaction, "forbidden")
    # Investigators (user or site system) and administrators never reach a live record.
    if interaction == "write":
        return "forbidden"
    if interaction == "refer" and actor == "site":
        return "forbidden"
    return "hidden"


ACTORS = ("ehr", "physician", "patient", "investigator", "site", "admin", "break-glass")
CASES = [(actor, interaction, patient) for actor in ACTORS for interaction in INTERACTIONS
         for patient in STATES if not (actor == "patient" and patient == "stranger")]


@pytest.mark.parametrize(("actor", "interaction", "patient"), CASES)
def test_decision_table(platform: Platform, actor: str, interaction: str, patient: str) -> None:
    if actor == "break-glass":
        headers = {**platform.headers("admin"), "X-Break-Glass-Reason": "Patient unconscious in ER"}
    else:
        headers = platform.headers(actor, patient)
    outcome = INTERACTIONS[interaction](platform, actor, patient, headers)
    assert outcome == _expected(actor, interaction, patient)


def test_a_patient_reaches_nobody_else(platform: Platform) -> None:
    headers = platform.headers("patient", "shared")
    assert platform.client.get("/fhir/Patient/unshared", headers=headers).status_code == 404
    assert _write(platform, "patient", "unshared", headers) == "forbidden"


def test_a_representative_acts_for_the_patient_they_represent_only(platform: Platform) -> None:
    mother = platform.headers("representative", "minor")
    assert platform.client.get("/fhir/Patient/minor", headers=mother).status_code == 200
    assert _write(platform, "representative", "minor", mother) == "ok"
    # A token naming another patient reaches nothing: the representation is checked each time.
    other = platform.headers("representative", "shared")
    assert platform.client.get("/fhir/Patient/shared", headers=other).status_code == 403


def test_break_glass_needs_an_administrator_and_a_reason(platform: Platform) -> None:
    reason = {"X-Break-Glass-Reason": "Patient unconscious in ER"}
    physician = {**platform.headers("physician"), **reason}
    assert platform.client.get("/fhir/Patient/stranger", headers=physician).status_code == 403
    empty = {**platform.headers("admin"), "X-Break-Glass-Reason": "  "}
    assert platform.client.get("/fhir/Patient/stranger", headers=empty).status_code == 400
    admin = {**platform.headers("admin"), **reason}
    assert platform.client.get("/fhir/Patient/stranger", headers=admin).status_code == 200
    events = platform.client.get("/fhir/AuditEvent?entity=Patient/stranger&_sort=-date",
                                 headers=platform.headers("ehr")).json()["entry"]
    purpose = events[0]["resource"]["purposeOfEvent"][0]
    assert purpose["coding"][0]["code"] == "BTG" and purpose["text"] == reason["X-Break-Glass-Reason"]


def _referral(platform: Platform, patient: str = "shared") -> dict[str, Any]:
    response = platform.refer(patient)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def test_investigators_see_the_referral_its_frozen_record_and_thread_only(platform: Platform) -> None:
    referral = _referral(platform)
    bundle = referral["payload"][0]["contentReference"]["reference"]
    for actor in ("investigator", "site"):
        headers = platform.headers(actor)
        assert platform.client.get(f"/fhir/Communication/{referral['id']}", headers=headers).status_code == 200
        frozen = platform.client.get(f"/fhir/{bundle}", headers=headers)
        assert frozen.status_code == 200
        kinds = {e["resource"]["resourceType"] for e in frozen.json()["entry"]}
        assert {"Patient", "Observation", "Condition"} <= kinds and "Consent" not in kinds
        assert platform.client.get("/fhir/Patient/shared", headers=headers).status_code == 404
        assert platform.client.get("/fhir/Observation/shared-obs", headers=headers).status_code == 404
    # The physician's other messages about the patient stay out of the investigators' view.
    note = {"resourceType": "Communication", "status": "completed",
            "subject": {"reference": "Patient/shared"}, "recipient": [{"reference": "Patient/shared"}]}
    other = send(platform.client, "POST", "/fhir/Communication", note, **platform.headers("physician"))
    assert other.status_code == 201
    assert platform.client.get(f"/fhir/Communication/{other.json()['id']}",
                               headers=platform.headers("investigator")).status_code == 404


def test_a_site_system_fetches_its_new_referrals_with_their_frozen_records(platform: Platform) -> None:
    referral = _referral(platform)
    found = platform.client.get(
        "/fhir/Communication?recipient=CareTeam/onco-bordeaux&status=in-progress"
        "&_include=Communication:payload", headers=platform.headers("site")).json()
    matches = {e["resource"]["id"] for e in found["entry"] if e["search"]["mode"] == "match"}
    included = {e["resource"]["id"] for e in found["entry"] if e["search"]["mode"] == "include"}
    assert referral["id"] in matches
    assert referral["payload"][0]["contentReference"]["reference"].split("/")[1] in included
    # With _include=Communication:subject the live Patient stays out.
    found = platform.client.get(
        "/fhir/Communication?recipient=CareTeam/onco-bordeaux&_include=Communication:subject",
        headers=platform.headers("site")).json()
    assert not [e for e in found["entry"] if e["resource"]["resourceType"] == "Patient"]


def test_a_frozen_record_never_changes(platform: Platform) -> None:
    referral = _referral(platform)
    bundle = referral["payload"][0]["contentReference"]["reference"]
    ehr = platform.headers("ehr")
    frozen = platform.client.get(f"/fhir/{bundle}", headers=ehr).json()
    entries = frozen["entry"]
    shortened = {**frozen, "entry": entries[:1]}
    assert send(platform.client, "PUT", f"/fhir/{bundle}", shortened, **ehr).status_code == 403
    untagged = {k: v for k, v in shortened.items() if k != "meta"}
    assert send(platform.client, "PUT", f"/fhir/{bundle}", untagged, **ehr).status_code == 404
    patch = [{"op": "remove", "path": "/entry/0"}]
    assert send(platform.client, "PATCH", f"/fhir/{bundle}", patch,
                content_type="application/json-patch+json", **ehr).status_code == 404
    # Not even a system client deletes it.
    assert platform.client.delete(f"/fhir/{bundle}", headers=ehr).status_code == 403
    forged = {**frozen, "id": "forged"}
    forged.pop("meta", None)
    forged["meta"] = {"tag": frozen["meta"]["tag"]}
    assert send(platform.client, "PUT", "/fhir/Bundle/forged", forged, **ehr).status_code == 403
    # The live record changes; the frozen one still says what was sent, pinned to versions.
    assert send(platform.client, "PUT", "/fhir/Observation/shared-obs",
                {**observation("Patient/shared", 99.0), "id": "shared-obs"}, **ehr).status_code == 200
    again = platform.client.get(f"/fhir/{bundle}", headers=ehr).json()
    assert again["entry"] == entries
    observation_entry = next(e["resource"] for e in entries if e["resource"]["id"] == "shared-obs")
    assert observation_entry["subject"]["reference"].startswith("Patient/shared/_history/")


def test_messages_to_investigators_go_through_refer_only(platform: Platform) -> None:
    to_investigator = {"resourceType": "Communication", "status": "completed",
                       "subject": {"reference": "Patient/shared"},
                       "recipient": [{"reference": "PractitionerRole/inv-bordeaux"}],
                       "payload": [{"contentString": "Here is my record"}]}
    for actor in ("patient", "physician"):
        response = send(platform.client, "POST", "/fhir/Communication", to_investigator,
                        **platform.headers(actor, "shared"))
        assert response.status_code == 403, actor
    forged = {**to_investigator, "category": [{"coding": [{
        "system": "https://oncotrials.example.org/fhir/CodeSystem/referral-message", "code": "referral"}]}]}
    assert send(platform.client, "POST", "/fhir/Communication", forged,
                **platform.headers("ehr")).status_code == 403


def test_a_patient_suggests_a_trial_to_their_physician_only(platform: Platform) -> None:
    suggestion = {"resourceType": "Communication", "status": "completed",
                  "category": [{"coding": [{
                      "system": "https://oncotrials.example.org/fhir/CodeSystem/referral-message",
                      "code": "trial-suggestion"}]}],
                  "subject": {"reference": "Patient/shared"}, "about": [{"reference": STUDY}],
                  "sender": {"reference": "Patient/shared"},
                  "recipient": [{"reference": "Practitioner/dr-martin"}],
                  "payload": [{"contentString": "Could this trial suit me?"}]}
    patient = platform.headers("patient", "shared")
    response = send(platform.client, "POST", "/fhir/Communication", suggestion, **patient)
    assert response.status_code == 201, response.text
    seen = platform.client.get(f"/fhir/Communication?about={STUDY}&category=trial-suggestion",
                               headers=platform.headers("physician")).json()
    assert response.json()["id"] in {e["resource"]["id"] for e in seen.get("entry", [])}
    for someone in ("Practitioner/dr-inv", "Practitioner/dr-team"):
        wrong = {**suggestion, "recipient": [{"reference": someone}]}
        assert send(platform.client, "POST", "/fhir/Communication", wrong, **patient).status_code == 403


def test_chains_and_has_never_look_into_what_the_caller_cannot_see(platform: Platform) -> None:
    probes = ("Communication?recipient=CareTeam/onco-bordeaux&subject:Patient.name=Shared",
              "ResearchStudy?_has:ResearchSubject:study:individual=Patient/shared",
              "Practitioner?_has:Consent:actor:patient=Patient/shared")
    for actor in ("site", "investigator", "admin", "physician"):
        for probe in probes:
            response = platform.client.get(f"/fhir/{probe}", headers=platform.headers(actor))
            assert response.status_code == 403, (actor, probe)
    # System clients chain freely; a chain within a directory type is fine for anyone.
    assert platform.client.get(f"/fhir/{probes[1]}", headers=platform.headers("ehr")).status_code == 200
    ok = platform.client.get("/fhir/PractitionerRole?practitioner.active=true",
                             headers=platform.headers("physician"))
    assert ok.status_code == 200


def test_non_compartment_types_are_directory_only_for_confined_callers(platform: Platform) -> None:
    binary = {"resourceType": "Binary", "id": "scan-1", "contentType": "text/plain",
              "securityContext": {"reference": "Patient/stranger"}, "data": "c2Nhbg=="}
    assert send(platform.client, "PUT", "/fhir/Binary/scan-1", binary, **platform.headers("ehr")).status_code == 201
    for actor in ("physician", "investigator", "site", "admin", "patient"):
        headers = platform.headers(actor, "shared")
        assert platform.client.get("/fhir/Binary/scan-1", headers=headers).status_code == 404, actor
    hijack = {"resourceType": "PractitionerRole", "id": "inv-bordeaux", "active": True,
              "practitioner": {"reference": "Practitioner/dr-martin"}}
    for actor in ("physician", "investigator", "patient"):
        response = send(platform.client, "PUT", "/fhir/PractitionerRole/inv-bordeaux", hijack,
                        **platform.headers(actor, "shared"))
        assert response.status_code == 403, actor
    study = {"resourceType": "ResearchStudy", "id": "study-2", "status": "active"}
    assert send(platform.client, "PUT", "/fhir/ResearchStudy/study-2", study,
                **platform.headers("admin")).status_code == 201


def test_no_write_reaches_into_another_patients_record(platform: Platform) -> None:
    sneaky = observation("Patient/stranger") | {"performer": [{"reference": "Patient/shared"}]}
    for actor in ("patient", "physician"):
        response = send(platform.client, "POST", "/fhir/Observation", sneaky, **platform.headers(actor, "shared"))
        assert response.status_code == 403, actor


def test_referrals_answers_and_consents_stay_as_their_authors_left_them(platform: Platform) -> None:
    referral = _referral(platform)
    for actor in ("patient", "physician"):
        headers = platform.headers(actor, "shared")
        assert platform.client.delete(f"/fhir/Communication/{referral['id']}", headers=headers).status_code == 204
        changed = {k: v for k, v in referral.items() if k != "meta"} | {"status": "completed"}
        assert send(platform.client, "PUT", f"/fhir/Communication/{referral['id']}", changed,
                    **headers).status_code in (403, 404)
    subjects = platform.client.get("/fhir/ResearchSubject?individual=Patient/shared",
                                   headers=platform.headers("physician")).json()["entry"]
    subject = {k: v for k, v in subjects[0]["resource"].items() if k != "meta"} | {"status": "on-study"}
    assert send(platform.client, "PUT", f"/fhir/ResearchSubject/{subject['id']}", subject,
                **platform.headers("physician")).status_code in (403, 404)
    objection = platform.client.get("/fhir/Consent/objected-c2", headers=platform.headers("ehr")).json()
    lifted = {k: v for k, v in objection.items() if k != "meta"} | {"status": "inactive"}
    assert send(platform.client, "PUT", "/fhir/Consent/objected-c2", lifted,
                **platform.headers("physician")).status_code == 403
    assert platform.client.delete("/fhir/Consent/objected-c2", headers=platform.headers("physician")).status_code == 403
    assert platform.refer("objected").status_code == 403
    for actor in ("site", "investigator"):
        assert platform.client.get(f"/fhir/Communication/{referral['id']}",
                                   headers=platform.headers(actor)).status_code == 200


def test_nobody_writes_in_an_investigators_name_or_thread(platform: Platform) -> None:
    referral = _referral(platform)
    base = {"resourceType": "Communication", "status": "completed",
            "subject": {"reference": "Patient/unshared"}, "payload": [{"contentString": "HIV+"}]}
    forged = [
        base | {"sender": {"reference": "CareTeam/onco-bordeaux"}, "recipient": [{"reference": "Practitioner/dr-martin"}]},
        base | {"sender": {"reference": "http://testserver/fhir/PractitionerRole/inv-bordeaux"},
                "recipient": [{"reference": "Practitioner/dr-martin"}]},
        base | {"recipient": [{"reference": "http://testserver/fhir/CareTeam/onco-bordeaux"}]},
        base | {"subject": {"reference": "Patient/shared"}, "sender": {"reference": "CareTeam/onco-bordeaux"},
                "inResponseTo": [{"reference": f"Communication/{referral['id']}"}],
                "recipient": [{"reference": "Practitioner/dr-martin"}]},
        base | {"sender": {"reference": "Practitioner/someone-else"}, "recipient": [{"reference": "Patient/unshared"}]},
    ]
    seen_before = platform.client.get("/fhir/Communication?_summary=count", headers=platform.headers("site")).json()
    for body in forged:
        for actor in ("physician", "patient"):
            mine = body | ({"subject": {"reference": "Patient/shared"}} if actor == "patient" else {})
            response = send(platform.client, "POST", "/fhir/Communication", mine,
                            **platform.headers(actor, "shared"))
            assert response.status_code == 403, (actor, body)
    seen_after = platform.client.get("/fhir/Communication?_summary=count", headers=platform.headers("site")).json()
    assert seen_after["total"] == seen_before["total"]


def test_a_physician_never_grants_what_the_patient_did_not(platform: Platform) -> None:
    physician = platform.headers("physician")
    # Sharing the patient objected to, access for someone else, or an agreement without evidence.
    assert send(platform.client, "POST", "/fhir/Consent", consent("objected", "research"), **physician).status_code == 403
    assert send(platform.client, "POST", "/fhir/Consent", consent("shared", actor="Practitioner/dr-inv"),
                **physician).status_code == 403
    assert send(platform.client, "POST", "/fhir/Consent", consent("unshared", "research", evidence=False),
                **physician).status_code == 403
    # Re-attesting after the patient withdrew it (Patient "withdrawn": its consent is inactive).
    assert send(platform.client, "POST", "/fhir/Consent", consent("withdrawn", actor="Practitioner/dr-martin"),
                **physician).status_code == 403
    assert platform.client.get("/fhir/Patient/withdrawn", headers=physician).status_code == 404


def test_investigator_identities_come_from_system_made_teams_only(platform: Platform) -> None:
    hijack = {"resourceType": "PractitionerRole", "id": "inv-bordeaux", "active": True,
              "practitioner": {"reference": "Practitioner/admin"}}
    assert send(platform.client, "PUT", "/fhir/PractitionerRole/inv-bordeaux", hijack,
                **platform.headers("admin")).status_code == 403
    # A patient's own care team naming their physician does not make them an investigator.
    team = {"resourceType": "CareTeam", "status": "active", "subject": {"reference": "Patient/minor"},
            "participant": [{"member": {"reference": "Practitioner/dr-martin"}}]}
    assert send(platform.client, "POST", "/fhir/CareTeam", team,
                **platform.headers("representative", "minor")).status_code == 201
    assert platform.client.get("/fhir/Patient/shared", headers=platform.headers("physician")).status_code == 200
    reply = {"resourceType": "Communication", "status": "completed", "subject": {"reference": "Patient/shared"},
             "inResponseTo": [{"reference": "Communication/whatever"}], "recipient": [{"reference": "Patient/shared"}]}
    assert send(platform.client, "POST", "/fhir/Communication", reply, **platform.headers("physician")).status_code == 201


def test_old_versions_follow_the_resource_out_of_reach(platform: Platform) -> None:
    ehr = platform.headers("ehr")
    moving = observation("Patient/shared") | {"id": "moving"}
    assert send(platform.client, "PUT", "/fhir/Observation/moving", moving, **ehr).status_code == 201
    physician = platform.headers("physician")
    assert platform.client.get("/fhir/Observation/moving/_history/1", headers=physician).status_code == 200
    moved = observation("Patient/stranger") | {"id": "moving"}
    assert send(platform.client, "PUT", "/fhir/Observation/moving", moved, **ehr).status_code == 200
    for url in ("/fhir/Observation/moving", "/fhir/Observation/moving/_history/1",
                "/fhir/Observation/moving/_history"):
        assert platform.client.get(url, headers=physician).status_code == 404, url
