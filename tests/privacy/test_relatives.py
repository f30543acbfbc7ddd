"""Relatives who are not legal representatives (docs/privacy.md, "Relatives"): a RelatedPerson
signs in with `patient/` scopes and reaches exactly what the patient's delegation Consent
grants (FHIR R4 consent.html, provision.actor/class/action/period), nothing after revocation
or expiry, never another patient; `$everything` under their token is the brute-force scan of
the granted types; the patient sees the relative's reads in their access history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server import clock
from fhir_server.access import Role
from fhir_server.access.delegation import ACTION_SYSTEM, TYPE_SYSTEM
from fhir_server.model.platform_codes import REGISTER_SYSTEM, RIGHT_SYSTEM
from fhir_server.services.launch_context import openable
from tests.builders import consent
from tests.http.helpers import send
from tests.privacy.conftest import Server
from tests.privacy.records import bearer, compartment, patient_ids, synthea  # noqa: F401 - a fixture
from tests.privacy.test_everything import matched, pages, referenced

RELATIVE = "RelatedPerson/daughter"


def related_person(patient: str = "a", code: str = "DAU", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "RelatedPerson", "id": RELATIVE.partition("/")[2], "active": True,
            "patient": {"reference": f"Patient/{patient}"},
            "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                                          "code": code}]}], **extra}


def delegation(types: list[str], actions: list[str] = ["access"], *, patient: str = "a",
               end: str | None = None, status: str = "active", actor: str = RELATIVE) -> dict[str, Any]:
    body = consent(patient, actor=actor, end=end, status=status, evidence=False)
    body["performer"] = [{"reference": f"Patient/{patient}"}]
    body["provision"]["class"] = [{"system": TYPE_SYSTEM, "code": t} for t in types]
    body["provision"]["action"] = [{"coding": [{"system": ACTION_SYSTEM, "code": a}]} for a in actions]
    return body


def put(server: Server, resource: dict[str, Any]) -> None:
    """Stored by the EHR (a system client: RelatedPersons are theirs to write)."""
    url = f"/fhir/{resource['resourceType']}/{resource['id']}"
    response = send(server.client, "PUT", url, resource)
    assert response.status_code in (200, 201), response.text


def grant(server: Server, consent: dict[str, Any], patient: str = "patient-a") -> str:
    """The patient records a delegation (or changes it, given its id); its id."""
    if "id" in consent:
        response = send(server.client, "PUT", f"/fhir/Consent/{consent['id']}", consent,
                        **server.headers(patient))
    else:
        response = send(server.client, "POST", "/fhir/Consent", consent, **server.headers(patient))
    assert response.status_code in (200, 201), response.text
    return str(response.json()["id"])


def relative_headers(server: Server, patient: str = "a", scope: str = "patient/*.cruds") -> dict[str, str]:
    tokens = server.client.app.state.tokens  # type: ignore[attr-defined]
    issued = tokens.issue(subject="daughter", client_id="portal", scope=scope, patient=patient,
                          fhir_user=RELATIVE)
    return {"Authorization": f"Bearer {issued['access_token']}"}


@pytest.fixture
def granted(server: Server) -> Server:
    """Patient a delegates reading their Observations to their daughter."""
    put(server, related_person())
    server.delegation = grant(server, delegation(["Observation"]))  # type: ignore[attr-defined]
    return server


def ids(response: Any) -> set[str]:
    assert response.status_code == 200, response.text
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in response.json().get("entry", []) if e["search"]["mode"] == "match"}


def test_a_relative_sees_exactly_the_granted_scope(granted: Server) -> None:
    get = granted.client.get
    headers = relative_headers(granted)
    assert ids(get("/fhir/Observation", headers=headers)) == {
        "Observation/a-obs0", "Observation/a-obs1", "Observation/a-obs2"}
    assert get("/fhir/Patient/a", headers=headers).status_code == 200  # whom they act for
    for url in ("/fhir/Condition", "/fhir/Condition/a-cond", "/fhir/Consent"):
        response = get(url, headers=headers)
        assert response.status_code == 403, (url, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
    # Reading only: no create, no change, no deletion.
    observation = get("/fhir/Observation/a-obs0", headers=headers).json()
    assert send(granted.client, "PUT", "/fhir/Observation/a-obs0", observation,
                **headers).status_code == 403
    assert granted.client.delete("/fhir/Observation/a-obs0", headers=headers).status_code == 403


def test_never_another_patient_and_the_same_answer_as_for_a_made_up_id(granted: Server) -> None:
    get = granted.client.get
    headers = relative_headers(granted)
    for kind, other, made_up in (("Observation", "b-obs0", "no-such-obs"), ("Patient", "b", "nobody")):
        theirs = get(f"/fhir/{kind}/{other}", headers=headers)
        unknown = get(f"/fhir/{kind}/{made_up}", headers=headers)
        assert theirs.status_code == unknown.status_code == 404
        assert [{**i, "diagnostics": ""} for i in theirs.json()["issue"]] == [
            {**i, "diagnostics": ""} for i in unknown.json()["issue"]]
    assert ids(get("/fhir/Observation?patient=Patient/b", headers=headers)) == set()
    # A token naming a patient who delegated nothing reaches nothing at all.
    for url in ("/fhir/Patient/b", "/fhir/Observation"):
        assert get(url, headers=relative_headers(granted, patient="b")).status_code == 403


def test_nothing_after_revocation(granted: Server) -> None:
    headers = relative_headers(granted)
    assert granted.client.get("/fhir/Observation", headers=headers).status_code == 200
    revoked = {**delegation(["Observation"], status="inactive"), "id": granted.delegation}  # type: ignore[attr-defined]
    grant(granted, revoked)
    for url in ("/fhir/Observation", "/fhir/Observation/a-obs0", "/fhir/Patient/a"):
        assert granted.client.get(url, headers=headers).status_code == 403, url


def test_nothing_after_expiry(server: Server) -> None:
    put(server, related_person())
    grant(server, delegation(["Observation"], end="2030-06-30"))
    headers = relative_headers(server)  # checked against the real clock: still valid
    with clock.frozen(datetime(2030, 6, 30, 23, 59, tzinfo=UTC)):
        assert server.client.get("/fhir/Observation", headers=headers).status_code == 200
    with clock.frozen(datetime(2030, 7, 1, 0, 0, 1, tzinfo=UTC)):
        assert server.client.get("/fhir/Observation", headers=headers).status_code == 403


def test_a_delegation_to_someone_related_to_another_patient_grants_nothing(server: Server) -> None:
    """The RelatedPerson is patient b's: patient a's Consent naming them opens nothing."""
    put(server, related_person(patient="b"))
    grant(server, delegation(["Observation"]))
    assert server.client.get("/fhir/Observation", headers=relative_headers(server)).status_code == 403


def test_a_write_grant_books_for_the_patient_but_never_extends_itself(server: Server) -> None:
    put(server, related_person())
    grant(server, delegation(["Appointment", "Consent"], ["access", "correct"]))
    headers = relative_headers(server)
    appointment = {"resourceType": "Appointment", "status": "proposed",
                   "participant": [{"actor": {"reference": "Patient/a"}, "status": "needs-action"}]}
    created = send(server.client, "POST", "/fhir/Appointment", appointment, **headers)
    assert created.status_code == 201, created.text
    for_b = {**appointment, "participant": [{"actor": {"reference": "Patient/b"}, "status": "needs-action"}]}
    assert send(server.client, "POST", "/fhir/Appointment", for_b, **headers).status_code == 403
    wider = delegation(["Appointment", "Consent", "Condition"], ["access", "correct"])
    refused = send(server.client, "POST", "/fhir/Consent", wider, **headers)
    assert refused.status_code == 403, refused.text
    assert server.client.get("/fhir/Condition", headers=headers).status_code == 403


@pytest.mark.parametrize("system, code", [(RIGHT_SYSTEM, "erasure"), (REGISTER_SYSTEM, "disclosure"),
                                          (REGISTER_SYSTEM, "breach")])
def test_nobody_but_the_operator_writes_into_the_registers(server: Server, system: str,
                                                          code: str) -> None:
    """The rights, breaches and disclosures registers are the operator's (`fhir-server rights`,
    `breach`, `disclosure`): neither the patient nor a relative with `correct` on Task files
    a Task there."""
    put(server, related_person())
    grant(server, delegation(["Task"], ["access", "correct"]))
    register = f"/fhir/Task?code={system}|"
    before = len(server.client.get(register, headers=server.headers("admin")).json().get("entry", []))
    task = {"resourceType": "Task", "status": "requested", "intent": "order",
            "for": {"reference": "Patient/a"}, "code": {"coding": [{"system": system, "code": code}]}}
    for headers in (server.headers("patient-a"), relative_headers(server)):
        refused = send(server.client, "POST", "/fhir/Task", task, **headers)
        assert refused.status_code == 403, refused.text
        assert refused.json()["resourceType"] == "OperationOutcome"
    after = server.client.get(register, headers=server.headers("admin")).json().get("entry", [])
    assert len(after) == before
    # A Task of their own is still theirs to write.
    task["code"] = {"text": "book a taxi"}
    assert send(server.client, "POST", "/fhir/Task", task, **relative_headers(server)).status_code == 201


def test_a_relative_writes_only_as_themselves_to_the_patients_physicians(server: Server) -> None:
    """The patient's rule on messages holds for a relative who writes for them: to the
    physicians the patient consented to only, and as the sender, themselves."""
    put(server, related_person())
    grant(server, delegation(["Communication"], ["access", "correct"]))
    headers = relative_headers(server)
    message = {"resourceType": "Communication", "status": "completed",
               "subject": {"reference": "Patient/a"}, "payload": [{"contentString": "hello"}],
               "recipient": [{"reference": "Practitioner/stranger"}]}
    before = _count(server, "/fhir/Communication")
    for sender in (None, RELATIVE, "Patient/a"):
        if sender:
            message["sender"] = {"reference": sender}
        for who in (headers, server.headers("patient-a")):
            refused = send(server.client, "POST", "/fhir/Communication", message, **who)
            assert refused.status_code == 403, refused.text
    assert _count(server, "/fhir/Communication") == before


def test_a_practitioner_named_on_a_delegation_too_reaches_nothing_by_it(server: Server) -> None:
    """A delegation limited to Observation naming the daughter and a practitioner: the
    practitioner is no referring physician by it (practitioners reach whole records only)."""
    put(server, related_person())
    body = delegation(["Observation"])
    body["provision"]["actor"].append({**body["provision"]["actor"][0],
                                       "reference": {"reference": "Practitioner/dr"}})
    grant(server, body)
    for url in ("/fhir/Condition", "/fhir/Observation", "/fhir/Patient"):
        response = server.client.get(url, headers=server.headers("physician"))
        assert response.status_code == 200, response.text
        assert response.json().get("entry", []) == [], url
    assert server.client.get("/fhir/Observation", headers=relative_headers(server)).json()["entry"]


@pytest.mark.parametrize("format", ["csv", "pdf"])
def test_a_relative_does_not_export_the_record(granted: Server, format: str) -> None:
    """The export (GDPR arts. 15, 20) is the patient's or their representative's: a relative
    is refused, the same for the patient, another one and a made-up id."""
    headers = relative_headers(granted)
    for patient in ("a", "b", "nobody"):
        refused = granted.client.get(f"/fhir/Patient/{patient}/$record-export?format={format}",
                                     headers=headers)
        assert refused.status_code == 403, refused.text
        assert refused.json()["resourceType"] == "OperationOutcome"
    own = granted.client.get(f"/fhir/Patient/a/$record-export?format={format}",
                             headers=granted.headers("patient-a"))
    assert own.status_code == 200


def test_periods_end_at_their_instant_in_their_time_zone(server: Server) -> None:
    """The delegation's and the RelatedPerson's periods end at the instant they say, not at
    the end of that day (08:00 at +02:00 is 06:00Z)."""
    put(server, related_person(period={"start": "2020-01-01", "end": "2030-07-31T01:00:00+02:00"}))
    body = delegation(["Observation"])
    body["provision"]["period"]["end"] = "2030-06-30T08:00:00+02:00"
    grant(server, body)
    headers = relative_headers(server)
    with clock.frozen(datetime(2030, 6, 30, 5, 59, tzinfo=UTC)):
        assert server.client.get("/fhir/Observation", headers=headers).status_code == 200
    with clock.frozen(datetime(2030, 6, 30, 20, 0, tzinfo=UTC)):
        assert server.client.get("/fhir/Observation", headers=headers).status_code == 403
    # The RelatedPerson ends at 23:00Z on 30 July.
    body = delegation(["Observation"], end="2031-01-01")
    grant(server, body)
    with clock.frozen(datetime(2030, 7, 30, 22, 59, tzinfo=UTC)):
        assert server.client.get("/fhir/Observation", headers=headers).status_code == 200
    with clock.frozen(datetime(2030, 7, 30, 23, 30, tzinfo=UTC)):
        assert server.client.get("/fhir/Observation", headers=headers).status_code == 403


def test_a_legal_representative_stays_a_representative(server: Server) -> None:
    """A RelatedPerson with a representative relationship reaches the whole record without any
    delegation; a relative without one reaches nothing."""
    put(server, related_person(code="GUARD"))
    assert server.client.get("/fhir/Condition", headers=relative_headers(server)).status_code == 200
    put(server, related_person(code="DAU"))
    assert server.client.get("/fhir/Condition", headers=relative_headers(server)).status_code == 403


def test_everything_is_the_scan_restricted_to_the_grant(server: Server) -> None:
    put(server, related_person())
    grant(server, delegation(["Observation", "Condition"]))
    entries = pages(server.client, "/fhir/Patient/a/$everything?_count=2", relative_headers(server))
    brute = set()
    for kind in ("Patient", "Observation", "Condition"):
        response = server.client.get(f"/fhir/{kind}?_count=100", headers=server.headers("ehr"))
        brute |= {f"{kind}/{r['id']}" for r in (e["resource"] for e in response.json()["entry"])
                  if r["id"] == "a" or r.get("subject", {}).get("reference") == "Patient/a"}
    assert sorted(matched(entries)) == sorted(brute)
    assert len(brute) == 5


def test_the_patient_sees_the_relatives_reads_in_their_access_history(granted: Server) -> None:
    assert granted.client.get("/fhir/Observation/a-obs1", headers=relative_headers(granted)).status_code == 200
    response = granted.client.get("/fhir/AuditEvent?patient=Patient/a&_count=200",
                                  headers=granted.headers("patient-a"))
    events = [e["resource"] for e in response.json()["entry"]]
    by_relative = [e for e in events if e["agent"][0].get("who") == {"reference": RELATIVE}]
    assert any({"reference": "Observation/a-obs1"} in [x.get("what") for x in e["entity"]]
               for e in by_relative)
    # Patient b's history says nothing of it.
    other = granted.client.get("/fhir/AuditEvent?_count=200", headers=granted.headers("patient-b"))
    assert all(e["resource"]["agent"][0].get("who") != {"reference": RELATIVE}
               for e in other.json().get("entry", []))


@pytest.mark.anyio
async def test_the_launch_picker_offers_the_delegating_patient(granted: Server) -> None:
    from fhir_server.services import principals
    from fhir_server.access import Claims

    ctx = granted.client.app.state.context  # type: ignore[attr-defined]
    assert await openable(ctx, RELATIVE) == ["a"]
    principal = await principals.principal_of(ctx, Claims(
        subject="daughter", client_id="portal", scope="patient/*.rs", patient="a", fhir_user=RELATIVE))
    assert principal.role is Role.RELATIVE and principal.delegation is not None
    assert principal.delegation.types == {"Observation"}


def _count(server: Server, url: str) -> int:
    response = server.client.get(url, headers=server.headers("ehr"))
    return len(response.json().get("entry", []))


def test_bad_input_is_refused_and_changes_nothing(server: Server) -> None:
    put(server, related_person())
    grant(server, delegation(["Appointment", "Observation"], ["access", "correct"]))
    headers = relative_headers(server)
    before = {url: _count(server, url) for url in ("/fhir/Appointment", "/fhir/Consent",
                                                   "/fhir/Observation")}
    refusals = [
        # someone else's record, and a type the grant leaves out
        send(server.client, "POST", "/fhir/Appointment", {
            "resourceType": "Appointment", "status": "proposed",
            "participant": [{"actor": {"reference": "Patient/b"}, "status": "needs-action"}]}, **headers),
        send(server.client, "POST", "/fhir/Consent", delegation(["Condition"]), **headers),
        server.client.delete("/fhir/Observation/a-obs0", headers=headers),
        # a date range upside down
        server.client.get("/fhir/Patient/a/$everything?start=2026-02-01&end=2026-01-01", headers=headers),
    ]
    assert [r.status_code for r in refusals] == [403, 403, 403, 400]
    assert all(r.json()["resourceType"] == "OperationOutcome" for r in refusals)
    assert {url: _count(server, url) for url in before} == before


def test_an_erased_patients_relative_reaches_nothing(server: Server) -> None:
    put(server, related_person())
    grant(server, delegation(["Observation"]))
    headers = relative_headers(server)
    assert server.client.get("/fhir/Observation", headers=headers).status_code == 200
    assert server.erase_and_settle("a").status_code == 200
    for url in ("/fhir/Observation", "/fhir/Patient/a", "/fhir/Patient/a/$everything"):
        response = server.client.get(url, headers=headers)
        assert response.status_code == 403 and response.json()["resourceType"] == "OperationOutcome", url


def test_everything_on_the_synthea_sample_is_the_compartment_restricted_to_the_grant(
        synthea: TestClient) -> None:
    """Issue 18's test on the shared Synthea data: under a relative's token, `$everything` is
    the brute-force compartment scan of the granted types (and the Patient), plus what they
    reference; nothing of another patient."""
    first, second = sorted(patient_ids(synthea))[:2]
    granted_types = ["Condition", "Encounter", "Observation"]
    relative = {**related_person(first), "id": "synthea-daughter"}
    assert send(synthea, "PUT", "/fhir/RelatedPerson/synthea-daughter", relative).status_code == 201
    grant_body = delegation(granted_types, patient=first, actor="RelatedPerson/synthea-daughter")
    assert send(synthea, "POST", "/fhir/Consent", grant_body).status_code == 201
    headers = bearer(synthea, "patient/*.rs", patient=first, fhir_user="RelatedPerson/synthea-daughter")
    entries = pages(synthea, f"/fhir/Patient/{first}/$everything?_count=41", headers)
    members = matched(entries)
    assert len(members) == len(set(members))
    expected = compartment(synthea, first, ["Patient", *granted_types])
    assert len(expected) > 30
    assert set(members) == expected
    assert set(matched(entries, "include")) == referenced(synthea, expected)
    # Another patient's record answers as an id nobody has.
    assert synthea.get(f"/fhir/Patient/{second}/$everything", headers=headers).status_code == 404
    assert synthea.get("/fhir/Patient/nobody/$everything", headers=headers).status_code == 404
