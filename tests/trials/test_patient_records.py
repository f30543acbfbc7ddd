"""Several patients' records read together (services/patient_record.py `read_all`, the
physician's view of `ResearchStudy/{id}/$match`) are the records read one by one, in fewer
searches, with the same access and the same audit trail."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from fastapi.testclient import TestClient

from fhir_server.access import Principal, Role, parse_scopes
from fhir_server.audit.trail import Trail
from fhir_server.model.errors import FhirError, Kind
from fhir_server.services import patient_record
from fhir_server.services.context import Context
from fhir_server.store.base import Query, SearchPage
from fhir_server.trials.eligibility_record import TYPES
from tests.builders import consent
from tests.http.helpers import send
from tests.trials.conftest import served
from tests.trials.eligibility_builders import condition, group, patient
from tests.trials.inverse_world import CRITERIA, DR, INVESTIGATOR, STUDY, InverseWorld, prescreening
from tests.trials.match_world import RECENT, location, site, study
READ = [t for t in TYPES if t != "Patient"]
# Patient id -> Observations, Conditions; "gone" is deleted, "far" has no consent naming DR.
WORLD = {"a": (0, 1), "b": (3, 2), "c": (0, 0), "d": (5, 0), "e": (1, 1), "gone": (1, 1), "far": (2, 1)}


def _observation(owner: str, n: int) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": f"{owner}-o{n}", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
            "subject": {"reference": f"Patient/{owner}"}, "valueQuantity": {"value": 160 + n}}


@pytest.fixture(scope="module", params=["sqlite", "mongodb-double"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          signing_keys: bytes) -> Iterator[TestClient]:
    with served(request.param, tmp_path_factory.mktemp("records"), signing_keys) as client:
        def put(resource: dict[str, Any]) -> None:
            response = send(client, "PUT", f"/fhir/{resource['resourceType']}/{resource['id']}", resource)
            assert response.status_code in (200, 201), response.text

        for who in (DR, INVESTIGATOR):
            put({"resourceType": "Practitioner", "id": who.split("/")[1], "active": True})
        put(location("lyon", postal="69003"))
        put({"resourceType": "PractitionerRole", "id": "inv-role", "active": True,
             "practitioner": {"reference": INVESTIGATOR}, "location": [{"reference": "Location/lyon"}]})
        put(group(f"{STUDY}-criteria", *CRITERIA))
        put(study(STUDY, "phase-2", [site("lyon", "recruiting", RECENT)]))
        for id, (observations, conditions) in WORLD.items():
            put({**patient(id=id)})
            for n in range(observations):
                put(_observation(id, n))
            for n in range(conditions):
                put({**condition("C50.4", id=f"{id}-c{n}"), "subject": {"reference": f"Patient/{id}"}})
            if id != "far":
                put({**consent(id, actor=DR), "id": f"{id}-k"})
            put({**prescreening(id), "id": f"{id}-p"})
        # Written again: the newest version is read.
        put({**_observation("b", 0), "valueQuantity": {"value": 170}})
        assert send(client, "DELETE", "/fhir/Patient/gone").status_code in (200, 204)
        yield client


class Counted:
    """A store that counts the searches made through it."""

    def __init__(self, store: Any) -> None:
        self.store, self.searches = store, 0

    async def search(self, query: Query, cursor: str | None = None) -> SearchPage:
        self.searches += 1
        return await self.store.search(query, cursor)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def _physician(app_ctx: Context) -> tuple[Context, Counted]:
    principal = Principal(Role.PRACTITIONER, "dr", "portal", parse_scopes("user/*.cruds"),
                          fhir_user=DR, consented=tuple(sorted(set(WORLD) - {"far"})))
    counted = Counted(app_ctx.store)
    return dataclasses.replace(app_ctx, principal=principal, trail=Trail(), store=counted), counted  # type: ignore[arg-type]


def _keys(record: patient_record.PatientRecord) -> list[str]:
    return [f"{v.resource_type}/{v.id}/{v.version}" for v in record.versions]


def test_records_read_together_are_those_read_one_by_one(world: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(patient_record, "TOGETHER", 2)  # several chunks from a few patients
    app_ctx: Context = world.app.state.context  # type: ignore[attr-defined]
    asked = sorted(WORLD)

    async def both() -> tuple[Any, ...]:
        together, counted = _physician(app_ctx)
        many = await patient_record.read_all(together, asked, READ)
        alone, _ = _physician(app_ctx)
        one = {}
        for id in asked:
            try:
                one[id] = await patient_record.read(alone, id, READ)
            except FhirError as exc:
                assert exc.kind in (Kind.NOT_FOUND, Kind.GONE)
        return many, one, together.trail, alone.trail, counted.searches

    many, one, trail_many, trail_one, searches = world.portal.call(both)  # type: ignore[union-attr]
    assert list(many) == ["a", "b", "c", "d", "e"]  # deleted and out of reach: left out
    assert {id: _keys(r) for id, r in many.items()} == {id: _keys(r) for id, r in one.items()}
    assert {id: patient_record.bodies(r) for id, r in many.items()} == {
        id: patient_record.bodies(r) for id, r in one.items()}
    assert "Observation/b-o0/2" in _keys(many["b"])
    assert trail_many.owners == trail_one.owners  # the same patients on the audit trail
    assert searches == 3 * (len(READ) - 1)  # five patients, two a search; no Medication referenced, none read


def test_a_record_past_the_most_read_is_said_truncated(world: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(patient_record, "MOST", 4)  # d: the Patient and 5 Observations
    app_ctx: Context = world.app.state.context  # type: ignore[attr-defined]

    async def read() -> dict[str, patient_record.PatientRecord]:
        ctx, _ = _physician(app_ctx)
        return await patient_record.read_all(ctx, ["b", "d", "e"], READ)

    records = world.portal.call(read)  # type: ignore[union-attr]
    assert {id: (len(r.versions), r.truncated) for id, r in records.items()} == {
        "b": (4, True), "d": (4, True), "e": (3, False)}


@pytest.mark.parametrize("who", ["physician", "investigator"])
def test_a_deleted_patient_is_left_out_of_the_inverse_match(world: TestClient, who: str) -> None:
    """Patient/gone, deleted, keeps its Consents: its read answers 410, which failed the
    whole call (only 404 was left out)."""
    response = InverseWorld(world).match(STUDY, who)
    assert response.status_code == 200, response.text
    assert "gone" not in response.text


def test_the_medication_a_treatment_references_is_in_the_record(world: TestClient) -> None:
    """Medication has no `patient` parameter: a record read one patient at a time held every
    Medication the caller reads, so a MedicationStatement's `medicationReference` was
    resolved and decided a prior-treatment criterion. Read together, the Medications matched
    no patient and were dropped: the physician's view said the prior platinum was unknown."""
    from tests.trials.eligibility_builders import ICD10, coded, criterion

    platinum = {"resourceType": "Medication", "id": "cisplatin",
                "code": {"coding": [{"system": "http://www.whocc.no/atc", "code": "L01XA01"}]}}
    # Referenced by no record: in none (the directory may hold thousands).
    other = {"resourceType": "Medication", "id": "aspirin",
             "code": {"coding": [{"system": "http://www.whocc.no/atc", "code": "B01AC06"}]}}
    treated = {"resourceType": "MedicationStatement", "id": "a-platinum", "status": "completed",
               "medicationReference": {"reference": "Medication/cisplatin"},
               "subject": {"reference": "Patient/a"}}
    written = [group("s-platinum-criteria", criterion("condition", coded(ICD10, "C50"), text="Breast cancer"),
                     criterion("prior-treatment", coded("http://www.whocc.no/atc", "L01XA"), text="Prior platinum")),
               study("s-platinum", "phase-2", [site("lyon", "recruiting", RECENT)]), platinum, other, treated]
    for resource in written:
        body = {k: v for k, v in resource.items() if k != "meta" or "profile" in v}
        assert send(world, "PUT", f"/fhir/{resource['resourceType']}/{resource['id']}", body).status_code == 201
    app_ctx: Context = world.app.state.context  # type: ignore[attr-defined]

    async def read() -> tuple[patient_record.PatientRecord, dict[str, patient_record.PatientRecord]]:
        ctx, _ = _physician(app_ctx)
        together = await patient_record.read_all(ctx, ["a", "b"], READ)
        return await patient_record.read(ctx, "a", READ), together

    try:
        alone, after_together = world.portal.call(read)  # type: ignore[union-attr]
        together = after_together["a"]
        assert "Medication/cisplatin/1" in _keys(alone)
        assert not any(key.startswith("Medication/aspirin") for key in _keys(alone))
        assert _keys(together) == _keys(alone)
        assert not any(k.startswith("Medication/") for k in _keys(after_together["b"]))
        response = InverseWorld(world).match("s-platinum", "physician")
        assert response.status_code == 200, response.text
        [found] = [e for e in response.json()["entry"] if e["resource"].get("id") == "a"]
        [result] = found["search"]["extension"]
        prior = next(p for p in result["extension"] if p["url"] == "criterion"
                     and any(q.get("valueString") == "Prior platinum" for q in p["extension"]))
        evidence = {"reference": "MedicationStatement/a-platinum/_history/1"}
        assert {"url": "evidence", "valueReference": evidence} in prior["extension"], prior
    finally:
        for resource in reversed(written):  # the other tests' records stay as they were
            gone = send(world, "DELETE", f"/fhir/{resource['resourceType']}/{resource['id']}")
            assert gone.status_code in (200, 204)


async def _one_search_each(ctx: Context, patient_id: str) -> list[str]:
    """A record as `read` made it before records were read together: a search
    `patient=Patient/<id>` per type, as the caller's access confines it (the reference)."""
    from fhir_server.search import parse_query
    from fhir_server.services import crud
    from fhir_server.services.guard import decision

    keys = [f"Patient/{patient_id}/{(await crud.read(ctx, 'Patient', patient_id)).version}"]
    for resource_type in READ:
        query, _ = parse_query(resource_type, [("patient", f"Patient/{patient_id}"), ("_count", "2")],
                               ctx.registry)
        query, cursor = decision(ctx, "search", resource_type).confine(query), None
        while True:
            page = await ctx.store.search(query, cursor)
            keys += [f"{v.resource_type}/{v.id}/{v.version}" for v in page.matches if v.body is not None]
            if (cursor := page.next_cursor) is None:
                break
    return keys


_WRITTEN = [0]  # examples run, for ids of their own


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_records_read_together_are_each_patients_search(world: TestClient, data: st.DataObject) -> None:
    """Whatever form a resource's reference to its patient takes (versioned, absolute under
    this server's base or another's, by identifier only, to a Group), each patient read
    together holds what a `patient` search of that patient finds, in its order."""
    app_ctx: Context = world.app.state.context  # type: ignore[attr-defined]
    _WRITTEN[0] += 1
    forms = st.sampled_from([
        "Patient/{}", "Patient/{}/_history/1", app_ctx.base_url + "/Patient/{}",
        "http://elsewhere.example/fhir/Patient/{}", "Group/{}", None])
    written = []
    for n in range(data.draw(st.integers(1, 8))):
        owner, form = data.draw(st.sampled_from(sorted(WORLD))), data.draw(forms)
        subject = {"reference": form.format(owner)} if form else {"identifier": {"value": owner}}
        kind = data.draw(st.sampled_from(["Observation", "Condition", "Procedure"]))
        body: dict[str, Any] = {"resourceType": kind, "id": f"x{_WRITTEN[0]}-{n}", "subject": subject,
                                "status": "final" if kind == "Observation" else "completed",
                                "code": {"text": "any"}}
        if kind == "Condition":
            del body["status"]
        assert send(world, "PUT", f"/fhir/{kind}/{body['id']}", body).status_code == 201
        written.append(f"{kind}/{body['id']}")

    async def both() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        ctx, _ = _physician(app_ctx)
        records = await patient_record.read_all(ctx, sorted(WORLD), READ)
        together = {id: _keys(r) for id, r in records.items()}
        return together, {id: await _one_search_each(ctx, id) for id in together}

    try:
        together, alone = world.portal.call(both)  # type: ignore[union-attr]
        assert together == alone
    finally:
        for key in written:
            assert send(world, "DELETE", f"/fhir/{key}").status_code in (200, 204)


def test_a_reference_naming_no_id_fails_no_record(world: TestClient) -> None:
    """A reference string is stored as written (an extension's, any text). One read as
    `Medication/<id>` whose "id" holds 101 commas made the `_id` search ask more values
    than a search may, and the whole call failed: the physician's view of every consented
    patient, for one patient's resource. A logical id has no comma: it names none."""
    reference = "Medication/" + ",".join(f"m{n}" for n in range(101))
    body = {"resourceType": "Observation", "id": "a-odd", "status": "final", "code": {"text": "any"},
            "subject": {"reference": "Patient/a"},
            "extension": [{"url": "http://example.org/x", "valueReference": {"reference": reference}}]}
    written = send(world, "PUT", "/fhir/Observation/a-odd", body)
    assert written.status_code == 201, written.text
    app_ctx: Context = world.app.state.context  # type: ignore[attr-defined]

    async def read() -> dict[str, patient_record.PatientRecord]:
        ctx, _ = _physician(app_ctx)
        return await patient_record.read_all(ctx, ["a", "b"], READ)

    try:
        records = world.portal.call(read)  # type: ignore[union-attr]
        assert any(k.startswith("Observation/a-odd/") for k in _keys(records["a"]))
    finally:
        assert send(world, "DELETE", "/fhir/Observation/a-odd").status_code in (200, 204)
