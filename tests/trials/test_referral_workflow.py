"""The referral workflow in-process: answers and the ResearchSubject, the summary, what a
withdrawn sharing consent does, and how a physician opens a new patient record."""

from __future__ import annotations

from typing import Any

from fhir_server.model.platform_codes import MESSAGE_SYSTEM, OUTCOME_SYSTEM
from tests.builders import consent, deny_provision, observation, patient
from tests.http.helpers import send
from tests.trials.conftest import DR, ROLE, STUDY, TEAM, Platform


def _referral(platform: Platform, who: str = "shared", recipients: tuple[str, ...] = (ROLE, TEAM)) -> dict[str, Any]:
    response = platform.refer(who, recipients=recipients)
    assert response.status_code == 201, response.text
    assert response.headers["Location"].startswith("http://testserver/fhir/Communication/")
    return response.json()  # type: ignore[no-any-return]


def _subject(platform: Platform, referral: dict[str, Any]) -> dict[str, Any]:
    found = platform.client.get(
        f"/fhir/ResearchSubject?identifier=https://oncotrials.example.org/fhir/referral|{referral['id']}",
        headers=platform.headers("physician")).json()
    [entry] = found["entry"]
    return entry["resource"]  # type: ignore[no-any-return]


def _read(platform: Platform, reference: str, actor: str = "physician") -> dict[str, Any]:
    response = platform.client.get(f"/fhir/{reference}", headers=platform.headers(actor))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_a_referral_is_sent_with_its_frozen_record_and_research_subject(platform: Platform) -> None:
    referral = _referral(platform)
    assert referral["status"] == "in-progress"
    assert referral["category"][0]["coding"][0] == {
        "system": MESSAGE_SYSTEM, "code": "referral", "display": "Referral to a clinical trial"}
    assert referral["about"] == [{"reference": STUDY}]
    assert referral["sender"] == {"reference": DR}
    assert [r["reference"] for r in referral["recipient"]] == [ROLE, TEAM]
    assert referral["statusReason"]["coding"][0]["code"] == "referred"
    subject = _subject(platform, referral)
    assert subject["status"] == "candidate" and subject["study"] == {"reference": STUDY}
    assert subject["individual"] == {"reference": "Patient/shared"}
    assert subject["consent"] == {"reference": "Consent/shared-c1"}


def test_investigators_answer_and_the_physician_sees_the_answers(platform: Platform) -> None:
    referral = _referral(platform)
    missing_reason = platform.answer(referral["id"], "not-preselected")
    assert missing_reason.status_code == 400
    unknown = platform.answer(referral["id"], "maybe")
    assert unknown.status_code == 400
    answered = platform.answer(referral["id"], "preselected", reason="Screening visit on 12/12.")
    assert answered.status_code == 201, answered.text
    answer = answered.json()
    assert answer["inResponseTo"] == [{"reference": f"Communication/{referral['id']}"}]
    assert answer["sender"] == {"reference": ROLE} and answer["recipient"] == [{"reference": DR}]
    assert _read(platform, f"Communication/{referral['id']}")["statusReason"]["coding"][0]["code"] == "preselected"
    assert _subject(platform, referral)["status"] == "screening"
    thread = platform.client.get(f"/fhir/Communication?in-response-to=Communication/{referral['id']}",
                                 headers=platform.headers("physician")).json()
    assert [e["resource"]["id"] for e in thread["entry"]] == [answer["id"]]
    assert platform.answer(referral["id"], "included").status_code == 201
    closed = _read(platform, f"Communication/{referral['id']}")
    assert closed["status"] == "completed" and _subject(platform, referral)["status"] == "on-study"
    late = platform.answer(referral["id"], "not-included")
    assert late.status_code == 409


def test_only_recipients_answer(platform: Platform) -> None:
    to_role_only = _referral(platform, recipients=(ROLE,))
    # Not addressed to the site: an ordinary write, which an investigator may not make.
    assert platform.answer(to_role_only["id"], "preselected", actor="site").status_code == 403
    assert platform.answer(to_role_only["id"], "preselected", actor="physician").status_code == 403
    assert platform.client.get(f"/fhir/Communication/{to_role_only['id']}",
                               headers=platform.headers("site")).status_code == 404


def test_the_referral_summary_counts_what_the_caller_sees(platform: Platform) -> None:
    def counts(actor: str) -> dict[str, int]:
        response = platform.client.get(f"/fhir/{STUDY}/$referral-summary", headers=platform.headers(actor))
        assert response.status_code == 200, response.text
        out = {p["part"][0]["valueCoding"]["code"]: p["part"][1]["valueInteger"]
               for p in response.json()["parameter"] if p["name"] == "outcome"}
        total = next(p["valueInteger"] for p in response.json()["parameter"] if p["name"] == "total")
        assert total == sum(out.values())
        return out

    before_site, before_role = counts("site"), counts("investigator")
    _referral(platform, recipients=(TEAM,))
    after_site, after_role = counts("site"), counts("investigator")
    assert after_site["referred"] == before_site["referred"] + 1
    assert after_role == before_role
    assert set(after_site) == {"referred", "preselected", "not-preselected", "included",
                               "not-included", "withdrawn"}
    assert platform.client.get("/fhir/ResearchStudy/nope/$referral-summary",
                               headers=platform.headers("site")).status_code == 404


def test_withdrawing_sharing_marks_sent_referrals_and_stops_new_ones(platform: Platform) -> None:
    referral = _referral(platform, "leaving")
    bundle = referral["payload"][0]["contentReference"]["reference"]
    frozen = _read(platform, bundle, "investigator")
    research = _read(platform, "Consent/leaving-c1", "ehr")
    patient_token = platform.headers("patient", "leaving")
    withdrawn = send(platform.client, "PUT", "/fhir/Consent/leaving-c1",
                     {**research, "status": "inactive"}, **patient_token)
    assert withdrawn.status_code == 200, withdrawn.text
    marked = _read(platform, f"Communication/{referral['id']}", "investigator")
    assert marked["status"] == "stopped"
    assert marked["statusReason"]["coding"][0]["code"] == "withdrawn"
    kept = _read(platform, bundle, "investigator")
    assert kept["entry"] == frozen["entry"]
    assert {"system": OUTCOME_SYSTEM, "code": "withdrawn", "display": "Consent withdrawn"} in kept["meta"]["tag"]
    assert _subject(platform, referral)["status"] == "withdrawn"
    assert platform.refer("leaving").status_code == 403
    assert platform.answer(referral["id"], "preselected").status_code == 409
    # The physician still reaches the record: only sharing was withdrawn.
    assert platform.client.get("/fhir/Patient/leaving", headers=platform.headers("physician")).status_code == 200


def _new_record(with_consent: bool, evidence: bool = True, sharing: bool = False) -> dict[str, Any]:
    entries: list[dict[str, Any]] = [{"fullUrl": "urn:uuid:6a0a4bd8-0000-4000-8000-000000000001",
                                      "resource": patient(given="Nouvelle"),
                                      "request": {"method": "POST", "url": "Patient"}}]
    agreements = [consent("x", actor=DR, evidence=evidence)] if with_consent else []
    if sharing:
        agreements.append(consent("x", "research"))
    for body in agreements:
        body["patient"] = {"reference": "urn:uuid:6a0a4bd8-0000-4000-8000-000000000001"}
        entries.append({"resource": body, "request": {"method": "POST", "url": "Consent"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _patients(platform: Platform) -> int:
    return int(platform.client.get("/fhir/Patient?_summary=count", headers=platform.headers("ehr")).json()["total"])


def test_a_physician_creates_a_record_only_with_the_patients_agreement(platform: Platform) -> None:
    physician = platform.headers("physician")
    before = _patients(platform)
    alone = send(platform.client, "POST", "/fhir/Patient", patient(given="Seule"), **physician)
    assert alone.status_code == 403 and "Consent" in alone.text
    for bundle in (_new_record(False), _new_record(True, evidence=False)):
        assert send(platform.client, "POST", "/fhir", bundle, **physician).status_code == 403
    assert _patients(platform) == before
    created = send(platform.client, "POST", "/fhir", _new_record(True), **physician)
    assert created.status_code == 200, created.text
    id = created.json()["entry"][0]["response"]["location"].split("/")[1]
    assert platform.client.get(f"/fhir/Patient/{id}", headers=physician).status_code == 200
    # Without the second agreement the record cannot be referred; with it, it can.
    assert platform.refer(id).status_code == 403
    shared = send(platform.client, "POST", "/fhir", _new_record(True, sharing=True), **physician)
    other = shared.json()["entry"][0]["response"]["location"].split("/")[1]
    assert platform.refer(other).status_code == 201


def test_a_physician_records_an_agreement_for_an_existing_record(platform: Platform) -> None:
    physician = platform.headers("physician")
    assert platform.client.get("/fhir/Patient/stranger", headers=physician).status_code == 404
    unsigned = consent("stranger", actor=DR, evidence=False)
    assert send(platform.client, "POST", "/fhir/Consent", unsigned, **physician).status_code == 403
    for_other = consent("stranger", actor="Practitioner/someone")
    assert send(platform.client, "POST", "/fhir/Consent", for_other, **physician).status_code == 403
    # The answer does not tell whether a patient exists.
    missing = consent("no-such-patient", actor=DR)
    assert send(platform.client, "POST", "/fhir/Consent", missing, **physician).status_code == 201
    # Administrators and investigators reach no patient by consent, even one they record.
    for actor, who in (("admin", "Practitioner/admin"), ("investigator", "Practitioner/dr-inv")):
        grab = consent("stranger", actor=who)
        assert send(platform.client, "POST", "/fhir/Consent", grab, **platform.headers(actor)).status_code == 403
        assert platform.client.get("/fhir/Patient/stranger", headers=platform.headers(actor)).status_code == 404
    signed = send(platform.client, "POST", "/fhir/Consent", consent("stranger", actor=DR), **physician)
    assert signed.status_code == 201, signed.text
    # Only proposed (tests/trials/test_consent_confirmation.py): the patient accepts it.
    assert signed.json()["status"] == "proposed"
    assert platform.client.get("/fhir/Patient/stranger", headers=physician).status_code == 404
    accepted = {k: v for k, v in signed.json().items() if k != "meta"} | {"status": "active"}
    assert send(platform.client, "PUT", f"/fhir/Consent/{accepted['id']}", accepted,
                **platform.headers("patient", "stranger")).status_code == 200
    assert platform.client.get("/fhir/Patient/stranger", headers=physician).status_code == 200


def test_a_referral_is_audited_as_an_operation_on_the_patient(platform: Platform) -> None:
    referral = _referral(platform)
    events = platform.client.get("/fhir/AuditEvent?subtype=operation&_sort=-date&_count=1",
                                 headers=platform.headers("ehr")).json()["entry"]
    event = events[0]["resource"]
    assert event["agent"][0]["who"] == {"reference": DR}
    what = {e["what"]["reference"] for e in event["entity"] if "what" in e}
    assert {"Patient/shared", f"Communication/{referral['id']}"} <= what
    # The patient reads it in their own trail.
    mine = platform.client.get("/fhir/AuditEvent?patient=Patient/shared&subtype=operation",
                               headers=platform.headers("patient", "shared")).json()
    assert event["id"] in {e["resource"]["id"] for e in mine["entry"]}


def test_an_investigator_writing_to_the_record_changes_nothing(platform: Platform) -> None:
    _referral(platform)
    before = _read(platform, "Observation/shared-obs", "ehr")
    changed = {k: v for k, v in before.items() if k != "meta"} | {"status": "cancelled"}
    for actor in ("investigator", "site"):
        headers = platform.headers(actor)
        assert send(platform.client, "PUT", "/fhir/Observation/shared-obs", changed, **headers).status_code in (403, 404)
        assert send(platform.client, "PATCH", "/fhir/Observation/shared-obs",
                    [{"op": "replace", "path": "/status", "value": "cancelled"}],
                    content_type="application/json-patch+json", **headers).status_code == 404
        assert platform.client.delete("/fhir/Observation/shared-obs", headers=headers).status_code == 204  # a no-op, as for a missing id
        assert send(platform.client, "POST", "/fhir/Observation", changed, **headers).status_code == 403
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": changed, "request": {"method": "PUT", "url": "Observation/shared-obs"}}]}
        assert send(platform.client, "POST", "/fhir", bundle, **headers).status_code in (403, 404)
    assert _read(platform, "Observation/shared-obs", "ehr") == before


def test_malformed_referrals_get_an_outcome_and_store_nothing(platform: Platform) -> None:
    physician = platform.headers("physician")
    bad = [
        {"resourceType": "Patient"},
        {"resourceType": "Parameters", "parameter": 3},
        {"resourceType": "Parameters", "parameter": [{"name": "patient", "valueString": "shared"}]},
        {"resourceType": "Parameters", "parameter": [
            {"name": "patient", "valueReference": {"reference": "Patient/shared"}}]},
        {"resourceType": "Parameters", "parameter": [
            {"name": "patient", "valueReference": {"reference": "Observation/shared-obs"}},
            {"name": "recipient", "valueReference": {"reference": ROLE}}]},
        {"resourceType": "Parameters", "parameter": [
            {"name": "patient", "valueReference": {"reference": "Patient/shared"}},
            {"name": "recipient", "valueReference": {"reference": "Practitioner/dr-inv"}}]},
    ]
    before = platform.client.get("/fhir/Communication?_summary=count", headers=platform.headers("ehr")).json()["total"]
    for body in bad:
        response = send(platform.client, "POST", f"/fhir/{STUDY}/$refer", body, **physician)
        assert response.status_code in (400, 422), (body, response.status_code)
        assert response.json()["resourceType"] == "OperationOutcome"
    unknown_study = send(platform.client, "POST", "/fhir/ResearchStudy/nope/$refer",
                         {"resourceType": "Parameters", "parameter": [
                             {"name": "patient", "valueReference": {"reference": "Patient/shared"}},
                             {"name": "recipient", "valueReference": {"reference": ROLE}}]}, **physician)
    assert unknown_study.status_code == 404
    after = platform.client.get("/fhir/Communication?_summary=count", headers=platform.headers("ehr")).json()["total"]
    assert after == before


def test_a_practitioners_launch_patient_follows_the_consent(platform: Platform) -> None:
    tokens = platform.client.app.state.tokens  # type: ignore[attr-defined]
    launch = tokens.issue(subject="dr", client_id="portal", scope="patient/*.rs", patient="minor",
                          fhir_user=DR)["access_token"]
    headers = {"Authorization": f"Bearer {launch}"}
    assert platform.client.get("/fhir/Patient/minor", headers=headers).status_code == 200
    privacy = _read(platform, "Consent/minor-c0", "ehr")
    withdrawn = {k: v for k, v in privacy.items() if k != "meta"} | {"status": "inactive"}
    assert send(platform.client, "PUT", "/fhir/Consent/minor-c0", withdrawn,
                **platform.headers("patient", "minor")).status_code == 200
    assert platform.client.get("/fhir/Patient/minor", headers=headers).status_code == 403


def test_consents_name_their_patient_in_a_form_the_server_applies(platform: Platform) -> None:
    patient = platform.headers("patient", "unshared")
    for form in ("Patient/unshared/_history/1", "http://testserver/fhir/Patient/unshared", "unshared"):
        restriction = consent("unshared", type="deny") | {"patient": {"reference": form}}
        response = send(platform.client, "POST", "/fhir/Consent", restriction, **patient)
        assert response.status_code in (403, 422), form
    # A deny naming the physician by absolute URL is heeded.
    deny = consent("unshared", actor="http://testserver/fhir/Practitioner/dr-martin", type="deny")
    assert send(platform.client, "POST", "/fhir/Consent", deny, **patient).status_code == 201
    assert platform.client.get("/fhir/Patient/unshared", headers=platform.headers("physician")).status_code == 404


def test_a_deletion_out_of_reach_is_as_unknown(platform: Platform) -> None:
    ehr = platform.headers("ehr")
    assert platform.client.delete("/fhir/Observation/restricted-obs", headers=ehr).status_code in (200, 204)
    assert platform.client.get("/fhir/Observation/restricted-obs", headers=ehr).status_code == 410
    for actor in ("physician", "site"):
        headers = platform.headers(actor)
        assert platform.client.get("/fhir/Observation/restricted-obs", headers=headers).status_code == 404
        assert platform.client.get("/fhir/Observation/restricted-obs/_history/2", headers=headers).status_code == 404


def test_a_frozen_record_holds_only_what_is_about_the_patient(platform: Platform) -> None:
    ehr = platform.headers("ehr")
    performed = observation("Patient/stranger") | {"id": "performed-by-shared",
                                                   "performer": [{"reference": "Patient/shared"}]}
    assert send(platform.client, "PUT", "/fhir/Observation/performed-by-shared", performed, **ehr).status_code == 201
    frozen = _read(platform, _referral(platform)["payload"][0]["contentReference"]["reference"], "investigator")
    held = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in frozen["entry"]}
    assert "Observation/performed-by-shared" not in held and "Patient/stranger" not in held
    assert {"Patient/shared", "Observation/shared-obs", "Condition/shared-cond"} <= held


def _other_practitioner(platform: Platform) -> dict[str, str]:
    tokens = platform.client.app.state.tokens  # type: ignore[attr-defined]
    issued = tokens.issue(subject="other", client_id="portal", scope="user/*.cruds",
                          fhir_user="Practitioner/dr-other")
    return {"Authorization": f"Bearer {issued['access_token']}"}


def test_lapsed_agreements_are_renewed_by_the_patient_only(platform: Platform) -> None:
    physician = platform.headers("physician")
    # The patient lets the sharing agreement end, rather than making it inactive.
    research = _read(platform, "Consent/objected-c1", "ehr")
    research["provision"]["period"]["end"] = "2021-01-01"
    patient = platform.headers("patient", "objected")
    assert send(platform.client, "PUT", "/fhir/Consent/objected-c1", research, **patient).status_code == 200
    assert send(platform.client, "POST", "/fhir/Consent", consent("objected", "research"), **physician).status_code == 403
    # Consents are withdrawn, not deleted: the record of what was agreed stays.
    assert platform.client.delete("/fhir/Consent/objected-c1", headers=patient).status_code == 403


def test_a_practitioner_records_agreements_never_refusals(platform: Platform) -> None:
    physician = platform.headers("physician")
    for body in (consent("shared", actor=DR, deny=[deny_provision()]),
                 consent("shared", "research", type="deny"),
                 consent("shared", "research", status="rejected")):
        assert send(platform.client, "POST", "/fhir/Consent", body, **physician).status_code == 403


def test_recording_a_consent_tells_nothing_about_a_patient_out_of_reach(platform: Platform) -> None:
    other = _other_practitioner(platform)
    answers = {who: send(platform.client, "POST", "/fhir/Consent", consent(who, "research"), **other).status_code
               for who in ("objected", "shared", "no-such-patient")}
    assert set(answers.values()) == {403}
    attest = {who: send(platform.client, "POST", "/fhir/Consent",
                        consent(who, actor="Practitioner/dr-other"), **other).status_code
              for who in ("restricted", "no-such-patient-2")}
    assert set(attest.values()) == {201}
    # Attesting does not beat a restriction of processing.
    assert platform.client.get("/fhir/Patient/restricted", headers=other).status_code == 404


def test_teams_naming_a_patient_make_nobody_an_investigator(platform: Platform) -> None:
    physician = platform.headers("physician")
    group = {"resourceType": "Group", "type": "practitioner", "actual": True, "active": True,
             "member": [{"entity": {"reference": "Patient/shared"}},
                        {"entity": {"reference": "Practitioner/dr-evil"}}]}
    assert send(platform.client, "POST", "/fhir/Group", group, **physician).status_code == 201
    team = {"resourceType": "CareTeam", "status": "active",
            "participant": [{"member": {"reference": "Patient/shared"}},
                            {"member": {"reference": "Practitioner/dr-martin"}}]}
    assert send(platform.client, "POST", "/fhir/CareTeam", team, **platform.headers("patient", "shared")).status_code == 201
    tokens = platform.client.app.state.tokens  # type: ignore[attr-defined]
    evil = {"Authorization": "Bearer " + tokens.issue(subject="evil", client_id="portal", scope="user/*.rs",
                                                       fhir_user="Practitioner/dr-evil")["access_token"]}
    assert not platform.client.get("/fhir/Communication", headers=evil).json().get("entry")
    # The physician is still a physician: they record a new patient's agreement.
    assert send(platform.client, "POST", "/fhir", _new_record(True), **physician).status_code == 200


def test_system_clients_send_messages_in_any_name(platform: Platform) -> None:
    message = {"resourceType": "Communication", "status": "completed",
               "sender": {"reference": "Organization/chu"}, "recipient": [{"reference": "PractitionerRole/inv-bordeaux"}]}
    assert send(platform.client, "POST", "/fhir/Communication", message, **platform.headers("ehr")).status_code == 201


def test_a_physician_with_the_patient_in_context_does_not_change_consents(platform: Platform) -> None:
    tokens = platform.client.app.state.tokens  # type: ignore[attr-defined]
    launched = {"Authorization": "Bearer " + tokens.issue(
        subject="dr", client_id="portal", scope="patient/*.cruds user/*.cruds", patient="unshared",
        fhir_user=DR)["access_token"]}
    current = _read(platform, "Consent/unshared-c0", "ehr")
    changed = {k: v for k, v in current.items() if k != "meta"} | {"status": "inactive"}
    assert send(platform.client, "PUT", "/fhir/Consent/unshared-c0", changed, **launched).status_code == 403
    patch = [{"op": "replace", "path": "/status", "value": "inactive"}]
    assert send(platform.client, "PATCH", "/fhir/Consent/unshared-c0", patch,
                content_type="application/json-patch+json", **launched).status_code == 403


def test_a_withdrawal_in_any_form_is_renewed_by_the_patient_only(platform: Platform) -> None:
    physician = platform.headers("physician")
    patient = platform.headers("patient", "shared")
    edits = ([{"op": "replace", "path": "/status", "value": "entered-in-error"}],
             [{"op": "remove", "path": "/provision"}],
             [{"op": "replace", "path": "/scope/coding/0/code", "value": "treatment"}])
    for n, edit in enumerate(edits):
        agreed = send(platform.client, "POST", "/fhir/Consent", consent("shared", "research"), **patient)
        assert agreed.status_code == 201
        id = agreed.json()["id"]
        assert send(platform.client, "PATCH", f"/fhir/Consent/{id}", edit,
                    content_type="application/json-patch+json", **patient).status_code == 200, n
        assert send(platform.client, "POST", "/fhir/Consent", consent("shared", "research"),
                    **physician).status_code == 403, n


def test_a_patient_naming_an_investigator_or_administrator_opens_nothing_to_them(platform: Platform) -> None:
    patient = platform.headers("patient", "unshared")
    for who in ("Practitioner/dr-inv", "Practitioner/admin"):
        assert send(platform.client, "POST", "/fhir/Consent", consent("unshared", actor=who),
                    **patient).status_code == 201
    for actor in ("investigator", "admin"):
        assert platform.client.get("/fhir/Observation/unshared-obs", headers=platform.headers(actor)).status_code == 404


def test_a_patient_token_without_identity_sends_in_the_patients_name_only(platform: Platform) -> None:
    tokens = platform.client.app.state.tokens  # type: ignore[attr-defined]
    anonymous = {"Authorization": "Bearer " + tokens.issue(
        subject="app", client_id="portal", scope="patient/*.cruds", patient="shared")["access_token"]}
    message = {"resourceType": "Communication", "status": "completed", "subject": {"reference": "Patient/shared"},
               "sender": {"reference": DR}, "recipient": [{"reference": DR}]}
    assert send(platform.client, "POST", "/fhir/Communication", message, **anonymous).status_code == 403


def test_a_consent_moved_to_another_patient_withdraws_the_first(platform: Platform) -> None:
    created = send(platform.client, "POST", "/fhir", _new_record(True, sharing=True), **platform.headers("physician"))
    located = [e["response"]["location"].split("/")[1] for e in created.json()["entry"]]
    referral = _referral(platform, located[0])
    research = _read(platform, f"Consent/{located[2]}", "ehr")
    moved = {k: v for k, v in research.items() if k != "meta"} | {"patient": {"reference": "Patient/stranger"}}
    assert send(platform.client, "PUT", f"/fhir/Consent/{located[2]}", moved,
                **platform.headers("ehr")).status_code == 200
    assert _read(platform, f"Communication/{referral['id']}", "investigator")["status"] == "stopped"


def test_representatives_are_recorded_by_system_clients_only(platform: Platform) -> None:
    mother = _read(platform, "RelatedPerson/mother", "ehr")
    moved = {k: v for k, v in mother.items() if k != "meta"} | {"patient": {"reference": "Patient/shared"}}
    for actor in ("physician", "representative", "patient"):
        headers = platform.headers(actor, "minor" if actor == "representative" else "shared")
        assert send(platform.client, "PUT", "/fhir/RelatedPerson/mother", moved, **headers).status_code == 403, actor
    assert send(platform.client, "POST", "/fhir/RelatedPerson", {k: v for k, v in moved.items() if k != "id"},
                **platform.headers("patient", "shared")).status_code == 403


def test_a_proposed_consent_is_not_a_lapsed_one(platform: Platform) -> None:
    created = send(platform.client, "POST", "/fhir", _new_record(True), **platform.headers("physician"))
    id = created.json()["entry"][0]["response"]["location"].split("/")[1]
    proposed = consent(id, "research", status="proposed")
    assert send(platform.client, "POST", "/fhir/Consent", proposed, **platform.headers("ehr")).status_code == 201
    assert send(platform.client, "POST", "/fhir/Consent", consent(id, "research"),
                **platform.headers("physician")).status_code == 201


def test_a_physician_in_a_patient_launch_refers_but_never_speaks_as_the_patient(platform: Platform) -> None:
    tokens = platform.client.app.state.tokens  # type: ignore[attr-defined]
    launched = {"Authorization": "Bearer " + tokens.issue(
        subject="dr", client_id="portal", scope="patient/*.cruds user/*.cruds", patient="shared",
        fhir_user=DR)["access_token"]}
    message = {"resourceType": "Communication", "status": "completed", "subject": {"reference": "Patient/shared"},
               "sender": {"reference": "Patient/shared"}, "recipient": [{"reference": "Practitioner/dr-other"}]}
    assert send(platform.client, "POST", "/fhir/Communication", message, **launched).status_code == 403
    assert platform.refer("shared", headers=launched).status_code == 201


def test_a_deny_naming_a_stranger_physician_tells_them_nothing(platform: Platform) -> None:
    ehr = platform.headers("ehr")
    assert send(platform.client, "PUT", "/fhir/Patient/x1", {**patient(), "id": "x1"}, **ehr).status_code == 201
    keep_out = consent("x1", actor="Practitioner/dr-zed", deny=[deny_provision(DR)]) | {"id": "x1-c0"}
    assert send(platform.client, "PUT", "/fhir/Consent/x1-c0", keep_out, **ehr).status_code == 201
    physician = platform.headers("physician")
    answers = {who: send(platform.client, "POST", "/fhir/Consent", consent(who, actor=DR), **physician).status_code
               for who in ("x1", "nobody-1")}
    assert answers == {"x1": 201, "nobody-1": 201}
    assert platform.client.get("/fhir/Patient/x1", headers=physician).status_code == 404  # the deny wins
