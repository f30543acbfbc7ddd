"""`POST [base]/ResearchStudy/{id}/$match` (docs/matching.md, "Inverse match"): actors x
consent states, counts only for investigators, pseudonyms only under a pre-screening
Consent for the study, the same 404 for everyone else and for a made-up study, and the
patients touched in the audit trail."""

from __future__ import annotations

import json
from typing import Any

import pytest

import dataclasses

from fhir_server.access import Principal, Role, parse_scopes
from fhir_server.services.context import Context
from fhir_server.trials import inverse_counts
from tests.http.helpers import send
from tests.trials.inverse_world import COUNTED, CRITERIA, INVESTIGATOR, PATIENTS, STUDY, InverseWorld, exact_figures, inverse_world, new_day  # noqa: F401


def investigator_context(world: InverseWorld, fhir_user: str = INVESTIGATOR) -> Context:
    """The server's context as an investigator's request would carry it."""
    ctx = world.client.app.state.context  # type: ignore[attr-defined]
    principal = Principal(Role.INVESTIGATOR, subject="inv", client_id="portal",
                          grant=parse_scopes("user/*.rs"), fhir_user=fhir_user)
    return dataclasses.replace(ctx, principal=principal)


def _parameters(body: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for parameter in body["parameter"]:
        found.setdefault(parameter["name"], []).append(parameter)
    return found


def _value(parameter: dict[str, Any]) -> Any:
    return next(v for k, v in parameter.items() if k.startswith("value"))


def _parts(parameter: dict[str, Any]) -> dict[str, Any]:
    return {p["name"]: _value(p) if "part" not in p else p for p in parameter["part"]}


def test_the_physician_sees_their_consented_patients_explained(inverse_world: InverseWorld) -> None:
    response = inverse_world.match(STUDY, "physician")
    assert response.status_code == 200, response.text
    bundle = response.json()
    found = [e for e in bundle["entry"] if e["search"]["mode"] == "match"]
    # Their patients with breast cancer, whatever their research consent says; not Eve (another
    # physician's), not Fay (no consent), not Gus (lung: pruned by the index).
    assert [e["resource"]["id"] for e in found] == ["ann", "bea", "cat", "dot"]
    assert bundle["total"] == 4
    [result] = found[0]["search"]["extension"]
    parts = {p["url"]: p for p in result["extension"]}
    assert parts["verdict"]["valueCoding"]["code"] == "eligible"
    assert parts["site"]["valueReference"] == {"reference": "Location/lyon"}
    criterion = next(p for p in result["extension"] if p["url"] == "criterion")
    assert {"url": "evidence", "valueReference": {"reference": "Condition/ann-c/_history/1"}} in criterion["extension"]
    [outcome] = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert "1 proven ineligible by the index" in outcome["issue"][0]["diagnostics"]


@pytest.mark.parametrize("who", ["investigator", "site"])
def test_an_investigator_gets_counts_and_pseudonyms_only(inverse_world: InverseWorld, who: str,
                                                          exact_figures: None) -> None:
    response = inverse_world.match(STUDY, who)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["resourceType"] == "Parameters"
    found = _parameters(body)
    figures = {name: _value(found[name][0]) for name in ("population", "pruned", "evaluated",
                                                         "eligible", "undetermined")}
    assert figures == {"population": len(COUNTED), "pruned": 1, "evaluated": 3, "eligible": 3,
                       "undetermined": 0}
    [lyon] = [_parts(p) for p in found["site"]]
    assert lyon == {"site": {"reference": "Location/lyon"}, "may-be-eligible": 3}
    criteria = [_parts(p) for p in found["criterion"]]
    assert [(c["key"], c["text"], c["met"], c["not-met"]) for c in criteria] == [
        ("1", "Breast cancer", 3, 0), ("2", "18 years or older", 3, 0)]
    # Bea allows pre-screening for this study: one pseudonymised candidate. Hal's consent says
    # so too, under a restriction of processing: not counted, not listed.
    [candidate] = [_parts(p) for p in found["candidate"]]
    assert candidate["verdict"]["code"] == "eligible"
    assert len(candidate["pseudonym"]) == 22
    text = json.dumps(body)
    assert not any(f'"{id}' in text for id in PATIENTS) and "Patient/" not in text
    assert "Condition/" not in text  # no evidence, no record
    again = _parameters(inverse_world.match(STUDY, who).json())
    assert _parts(again["candidate"][0])["pseudonym"] == candidate["pseudonym"]


def test_every_figure_is_a_multiple_of_five_and_they_add_up(inverse_world: InverseWorld) -> None:
    found = _parameters(inverse_world.match(STUDY, "investigator").json())
    counts = [p for p in inverse_world.match(STUDY, "investigator").json()["parameter"] if "part" not in p]
    parts = [q for p in found["site"] + found.get("criterion", []) for q in p["part"] if "valueInteger" in q]
    assert all(p["valueInteger"] % 5 == 0 for p in counts + parts if "valueInteger" in p)
    value = {name: _value(found[name][0]) for name in ("population", "pruned", "evaluated", "eligible",
                                                        "undetermined")}
    assert value["population"] == value["pruned"] + value["evaluated"]
    assert sum(_parts(p)["may-be-eligible"] for p in found["site"]) == value["eligible"] + value["undetermined"]
    # Every criterion's row when the evaluated figure is not 0, none when it is.
    assert len(found.get("criterion", [])) == (0 if value["evaluated"] == 0 else len(CRITERIA))
    for criterion in found.get("criterion", []):
        assert sum(_parts(criterion)[v] for v in inverse_counts.VERDICTS) == value["evaluated"]


def test_pseudonyms_differ_between_studies(inverse_world: InverseWorld) -> None:
    from fhir_server.trials.prescreening import pseudonym
    ctx = investigator_context(inverse_world)
    assert pseudonym(ctx, "s1", "bea") != pseudonym(ctx, "s2", "bea")
    assert pseudonym(ctx, "s1", "bea") == pseudonym(ctx, "s1", "bea")
    assert pseudonym(ctx, "s1", "bea") != pseudonym(ctx, "s1", "ann")


@pytest.mark.parametrize("who", ["patient", "admin", "ehr"])
def test_everyone_else_is_answered_as_for_a_missing_study(inverse_world: InverseWorld, who: str) -> None:
    existing = inverse_world.match(STUDY, who)
    made_up = inverse_world.match("no-such-study", who)
    assert existing.status_code == made_up.status_code == 404
    assert existing.json() == json.loads(made_up.text.replace("no-such-study", STUDY))
    # A bad parameter changes nothing: the caller learns nothing of the study either way.
    bad = inverse_world.match(STUDY, who, {"name": "colour", "valueString": "blue"})
    assert bad.status_code == 404


@pytest.mark.parametrize("who", ["physician", "investigator"])
def test_a_made_up_study_is_not_found(inverse_world: InverseWorld, who: str) -> None:
    response = inverse_world.match("no-such-study", who)
    assert response.status_code == 404
    assert response.json()["issue"][0]["code"] == "not-found"


@pytest.mark.parametrize(("parameter", "named"), [
    ({"name": "colour", "valueString": "blue"}, "colour"),
    ({"name": "count", "valueInteger": 0}, "count"),
])
def test_bad_parameters_are_named(inverse_world: InverseWorld, parameter: dict[str, Any], named: str) -> None:
    response = inverse_world.match(STUDY, "physician", parameter)
    assert response.status_code == 400
    assert named in response.json()["issue"][0]["diagnostics"]


def _events(world: InverseWorld, patient: str) -> list[dict[str, Any]]:
    found = world.client.get(f"/fhir/AuditEvent?patient=Patient/{patient}&subtype=operation&_count=50",
                             headers=world.headers("ehr")).json()
    return [e["resource"] for e in found.get("entry", [])]


def _study_events(world: InverseWorld) -> list[dict[str, Any]]:
    found = world.client.get(f"/fhir/AuditEvent?entity=ResearchStudy/{STUDY}&subtype=operation&_count=200",
                             headers=world.headers("ehr")).json()
    return [e["resource"] for e in found.get("entry", [])]


def test_every_call_is_audited_with_the_patients_it_touched(inverse_world: InverseWorld) -> None:
    new_day(inverse_world.client)
    before = {id: len(_events(inverse_world, id)) for id in PATIENTS}
    assert inverse_world.match(STUDY, "investigator").status_code == 200
    after = {id: len(_events(inverse_world, id)) for id in PATIENTS}
    # The day's first call reads every counted record to compute the figures: each is named.
    assert {id for id in PATIENTS if after[id] > before[id]} == set(COUNTED)
    assert inverse_world.match(STUDY, "physician").status_code == 200
    final = {id: len(_events(inverse_world, id)) for id in PATIENTS}
    assert {id for id in PATIENTS if final[id] > after[id]} == {"ann", "bea", "cat", "dot", "gus"}  # not Hal: restricted


def test_a_call_served_from_the_days_figures_reads_no_record_and_names_the_study(inverse_world: InverseWorld) -> None:
    new_day(inverse_world.client)
    first = inverse_world.match(STUDY, "investigator")
    assert first.status_code == 200
    before = {id: len(_events(inverse_world, id)) for id in PATIENTS}
    study_before = len(_study_events(inverse_world))
    again = inverse_world.match(STUDY, "investigator")
    assert again.json() == first.json()
    # No counted record was read again: only Bea's trail grows, the pre-screening candidate
    # whose record is read live at every call.
    after = {id: len(_events(inverse_world, id)) for id in PATIENTS}
    assert {id for id in PATIENTS if after[id] > before[id]} == {"bea"}
    # The call itself is on the trail, naming the study whose figures it gave.
    assert len(_study_events(inverse_world)) == study_before + 1


def _ask(world: InverseWorld, who: str, candidate: str, study: str = STUDY) -> Any:
    from tests.http.helpers import send
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "candidate", "valueString": candidate}, {"name": "note", "valueString": "Slot in January."}]}
    return send(world.client, "POST", f"/fhir/ResearchStudy/{study}/$ask-referral", body, **world.headers(who))


def _requests(world: InverseWorld, who: str) -> list[dict[str, Any]]:
    system = "https://oncotrials.example.org/fhir/CodeSystem/referral-message"
    found = world.client.get(f"/fhir/Communication?category={system}|referral-request",
                             headers=world.headers(who)).json()
    return [e["resource"] for e in found.get("entry", [])]


def test_an_investigator_asks_the_physicians_of_a_candidate_to_refer(inverse_world: InverseWorld) -> None:
    from fhir_server.trials.prescreening import pseudonym
    [candidate] = [_parts(p)["pseudonym"] for p in _parameters(inverse_world.match(STUDY, "investigator").json())["candidate"]]
    before = len(_requests(inverse_world, "physician"))
    response = _ask(inverse_world, "investigator", candidate)
    assert response.status_code == 200, response.text
    assert response.json()["issue"][0]["diagnostics"] == "1 referring physician(s) asked."
    assert not any(f'"{id}' in response.text for id in PATIENTS)
    [request] = _requests(inverse_world, "physician")[before:] if before else _requests(inverse_world, "physician")
    assert request["subject"] == {"reference": "Patient/bea"}
    assert request["recipient"] == [{"reference": "Practitioner/dr-inv-match"}]
    assert "sender" not in request and request["payload"][1] == {"contentString": "Slot in January."}
    assert _requests(inverse_world, "investigator") == []  # the investigator cannot read it back
    ctx = investigator_context(inverse_world)
    for who, alias, study in (("investigator", "made-up", STUDY),
                              ("investigator", pseudonym(ctx, STUDY, "ann"), STUDY),  # no pre-screening
                              ("investigator", pseudonym(ctx, "s2", "bea"), "s2"),  # not for s2
                              ("physician", candidate, STUDY), ("patient", candidate, STUDY)):
        assert _ask(inverse_world, who, alias, study).status_code == 404, (who, study)


def test_a_new_or_deleted_prescreening_consent_counts_at_the_next_call(inverse_world: InverseWorld) -> None:
    """The Consents read for the candidates are kept between calls, and read again after any
    Consent write: Ann's new pre-screening Consent lists her at once, its deletion unlists her."""
    from tests.trials.inverse_world import prescreening

    def candidates() -> int:
        found = _parameters(inverse_world.match(STUDY, "investigator").json())
        return len(found.get("candidate", []))

    assert candidates() == 1  # Bea
    added = send(inverse_world.client, "PUT", "/fhir/Consent/ann-k9", {**prescreening("ann"), "id": "ann-k9"})
    assert added.status_code == 201, added.text
    assert candidates() == 2
    assert send(inverse_world.client, "DELETE", "/fhir/Consent/ann-k9").status_code in (200, 204)
    assert candidates() == 1


def test_counts_read_treatments_and_their_medications(inverse_world: InverseWorld,
                                                     exact_figures: None) -> None:
    """Only the patients the index leaves have their other resources read (by patient, in
    batches): Ann's MedicationStatement and the Medication it references still decide a
    prior-treatment criterion of a study she may join; Gus (lung cancer) is pruned."""
    from tests.trials.eligibility_builders import ICD10, coded, criterion, group
    from tests.trials.match_world import RECENT, site, study

    client = inverse_world.client
    for resource in (
            group("s3-criteria", criterion("condition", coded(ICD10, "C50"), text="Breast cancer"),
                  criterion("prior-treatment", coded("http://www.whocc.no/atc", "L01XA"), text="Prior platinum")),
            study("s3", "phase-2", [site("lyon", "recruiting", RECENT)]),
            {"resourceType": "Medication", "id": "cisplatin",
             "code": {"coding": [{"system": "http://www.whocc.no/atc", "code": "L01XA01"}]}},
            {"resourceType": "MedicationStatement", "id": "ann-platinum", "status": "completed",
             "medicationReference": {"reference": "Medication/cisplatin"},
             "subject": {"reference": "Patient/ann"}}):
        body = {k: v for k, v in resource.items() if k != "meta" or "profile" in v}
        assert send(client, "PUT", f"/fhir/{resource['resourceType']}/{resource['id']}", body).status_code == 201
    found = _parameters(inverse_world.match("s3", "investigator").json())
    assert {name: _value(found[name][0]) for name in ("population", "pruned", "evaluated")} == {
        "population": len(COUNTED), "pruned": 1, "evaluated": 3}
    platinum = next(_parts(p) for p in found["criterion"] if _parts(p)["text"] == "Prior platinum")
    assert (platinum["met"], platinum["unknown"]) == (1, 2)  # Ann; Bea and Cat have no record of it


def test_a_treatment_naming_no_medication_id_fails_no_count(inverse_world: InverseWorld,
                                                           exact_figures: None) -> None:
    """A `medicationReference` is stored as written: one "Medication/<101 names, by
    commas>" made the `_id` search of the named Medications ask more values than a search
    may, and the investigator's counts of every patient failed for one patient's resource."""
    client = inverse_world.client
    statement = {"resourceType": "MedicationStatement", "id": "ann-odd", "status": "completed",
                 "medicationReference": {"reference": "Medication/" + ",".join(f"m{n}" for n in range(101))},
                 "subject": {"reference": "Patient/ann"}}
    written = send(client, "PUT", "/fhir/MedicationStatement/ann-odd", statement)
    assert written.status_code == 201, written.text
    try:
        response = inverse_world.match(STUDY, "investigator")
        assert response.status_code == 200, response.text
        assert _value(_parameters(response.json())["population"][0]) == len(COUNTED)
    finally:
        assert send(client, "DELETE", "/fhir/MedicationStatement/ann-odd").status_code in (200, 204)
