"""Patient-level scopes reach the launch patient's compartment only, through every door:
read, vread, search, chains, `_has`, `_include`/`_revinclude`, history, writes, Bundles.

Patients A and B each have observations and share an Organization (not patient data, so
reached as the scope names it). Tokens are issued by the app's own token service, with a
`patient` claim as a launch would give.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.app import create_app
from fhir_server.settings import Settings
from tests.builders import observation, organization, patient
from tests.conftest import authorized, token
from tests.http.helpers import send

LAB = "http://terminology.hl7.org/CodeSystem/observation-category"


def _category(code: str) -> dict[str, Any]:
    return {"category": [{"coding": [{"system": LAB, "code": code}]}]}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("scopes"), base_url="http://testserver/fhir")
    with authorized(TestClient(create_app(settings))) as client:
        org = {**organization("CHU"), "id": "org"}
        assert send(client, "PUT", "/fhir/Organization/org", org).status_code == 201
        for id, family in (("a", "Alpha"), ("b", "Bravo")):
            body = {**patient(family=family), "id": id, "managingOrganization": {"reference": "Organization/org"}}
            assert send(client, "PUT", f"/fhir/Patient/{id}", body).status_code == 201
        writes = {
            "a-lab": observation("Patient/a", **_category("laboratory")),
            "a-vital": observation("Patient/a", **_category("vital-signs")),
            "b-lab": observation("Patient/b", **_category("laboratory")),
        }
        for id, body in writes.items():
            assert send(client, "PUT", f"/fhir/Observation/{id}", {**body, "id": id}).status_code == 201
        yield client


def _as(client: TestClient, scope: str, patient: str = "a") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(client, scope, patient=patient)}"}


def _ids(bundle: dict[str, Any], mode: str | None = None) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])
            if mode is None or e["search"]["mode"] == mode}


def test_reads_stop_at_the_compartment(world: TestClient) -> None:
    headers = _as(world, "patient/*.rs")
    assert world.get("/fhir/Patient/a", headers=headers).status_code == 200
    assert world.get("/fhir/Observation/a-lab", headers=headers).status_code == 200
    for path in ("/fhir/Patient/b", "/fhir/Observation/b-lab", "/fhir/Observation/b-lab/_history/1",
                 "/fhir/Patient/b/_history"):
        response = world.get(path, headers=headers)
        assert response.status_code == 404, path
        assert response.json()["resourceType"] == "OperationOutcome"
    # Not patient data: reached as the scope names it.
    assert world.get("/fhir/Organization/org", headers=headers).status_code == 200


def test_searches_are_confined_before_paging(world: TestClient) -> None:
    headers = _as(world, "patient/*.rs")
    def search(query: str) -> dict[str, Any]:
        response = world.get(f"/fhir/{query}", headers=headers)
        assert response.status_code == 200, response.text
        return dict(response.json())

    assert _ids(search("Observation")) == {"Observation/a-lab", "Observation/a-vital"}
    assert _ids(search("Observation?_count=1&_total=accurate")) <= {"Observation/a-lab", "Observation/a-vital"}
    assert search("Observation?_total=accurate")["total"] == 2
    assert _ids(search("Observation?subject=Patient/b")) == set()
    assert _ids(search("Patient")) == {"Patient/a"}
    assert _ids(search("Patient/b/Observation")) == set()
    # Chains and _has into a type the token reaches only in part could tell what lies outside
    # (a reference out of the compartment): refused, with an outcome.
    for linked in ("Observation?subject.family=Bravo", "Patient?_has:Observation:subject:category=laboratory",
                   "Observation?subject:Patient.name=Bravo"):
        refused = world.get(f"/fhir/{linked}", headers=headers)
        assert refused.status_code == 403 and "Chained search" in refused.text


def test_includes_never_bring_another_patient(world: TestClient) -> None:
    headers = _as(world, "patient/*.rs")
    included = world.get("/fhir/Observation?_include=Observation:subject", headers=headers).json()
    assert _ids(included, "include") == {"Patient/a"}
    rev = world.get("/fhir/Organization?_revinclude=Patient:organization", headers=headers).json()
    assert _ids(rev, "include") == {"Patient/a"}
    iterate = world.get("/fhir/Organization?_revinclude=Patient:organization"
                        "&_revinclude:iterate=Observation:subject", headers=headers).json()
    assert _ids(iterate, "include") == {"Patient/a", "Observation/a-lab", "Observation/a-vital"}


def test_history_and_system_search_need_system_scopes(world: TestClient) -> None:
    headers = _as(world, "patient/*.rs")
    assert world.get("/fhir/Observation/_history", headers=headers).status_code == 403
    assert world.get("/fhir/_history", headers=headers).status_code == 403
    assert world.get("/fhir?_type=Observation", headers=headers).status_code == 403
    own = world.get("/fhir/Observation/a-lab/_history", headers=headers)
    assert own.status_code == 200 and len(own.json()["entry"]) == 1


def test_writes_stay_inside_the_compartment(world: TestClient) -> None:
    read_only = _as(world, "patient/*.rs")
    assert send(world, "POST", "/fhir/Observation", observation("Patient/a"), **read_only).status_code == 403
    writer = _as(world, "patient/Observation.cruds")
    assert send(world, "POST", "/fhir/Observation", observation("Patient/a"), **writer).status_code == 201
    assert send(world, "POST", "/fhir/Observation", observation("Patient/b"), **writer).status_code == 403
    moved = {**observation("Patient/b"), "id": "a-vital"}
    assert send(world, "PUT", "/fhir/Observation/a-vital", moved, **writer).status_code == 403
    theirs = {**observation("Patient/a"), "id": "b-lab"}
    assert send(world, "PUT", "/fhir/Observation/b-lab", theirs, **writer).status_code == 404
    # Deleting out of reach does nothing and answers as for an id that does not exist;
    # creating with an id of one's choosing is refused like replacing one out of reach.
    assert world.delete("/fhir/Observation/b-lab", headers=writer).status_code == 204
    assert world.delete("/fhir/Observation/no-such-id", headers=writer).status_code == 204
    assert world.get("/fhir/Observation/b-lab", headers=_as(world, "system/*.rs")).status_code == 200
    fresh = {**observation("Patient/a"), "id": "new-id"}
    assert send(world, "PUT", "/fhir/Observation/new-id", fresh, **writer).status_code == 404


def test_bundle_entries_are_checked_one_by_one(world: TestClient) -> None:
    writer = _as(world, "patient/Observation.cruds")
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": observation("Patient/a"), "request": {"method": "POST", "url": "Observation"}},
        {"resource": observation("Patient/b"), "request": {"method": "POST", "url": "Observation"}},
    ]}
    refused = send(world, "POST", "/fhir", transaction, **writer)
    assert refused.status_code == 403
    batch = {**transaction, "type": "batch", "entry": [
        *transaction["entry"], {"request": {"method": "GET", "url": "Observation/b-lab"}}]}
    statuses = [e["response"]["status"][:3] for e in send(world, "POST", "/fhir", batch, **writer).json()["entry"]]
    assert statuses == ["201", "403", "404"]


def test_granular_scopes_select_inside_the_compartment(world: TestClient) -> None:
    headers = _as(world, f"patient/Observation.rs?category={LAB}|laboratory")
    found = world.get("/fhir/Observation", headers=headers).json()
    assert _ids(found) == {"Observation/a-lab"}
    assert world.get("/fhir/Observation/a-vital", headers=headers).status_code == 404
    assert world.get("/fhir/Observation/a-lab", headers=headers).status_code == 200
    assert world.get("/fhir/Condition", headers=headers).status_code == 403


def test_granular_scopes_on_different_parameters_reach_their_union(world: TestClient) -> None:
    """SMART 2.2 "Finer-grained resource constraints": each scope grants its own subset;
    together, the union (here: laboratory results, or vital signs with this code)."""
    vital = f"code=http://loinc.org|29463-7&category={LAB}|vital-signs"
    headers = _as(world, f"patient/Observation.rs?category={LAB}|laboratory "
                         f"patient/Observation.rs?{vital}")
    found = world.get("/fhir/Observation", headers=headers)
    assert found.status_code == 200, found.text
    assert _ids(found.json()) == {"Observation/a-lab", "Observation/a-vital"}
    for id in ("a-lab", "a-vital"):
        assert world.get(f"/fhir/Observation/{id}", headers=headers).status_code == 200
    assert world.get("/fhir/Observation/b-lab", headers=headers).status_code == 404
    narrowed = world.get(f"/fhir/Observation?category={LAB}|vital-signs", headers=headers).json()
    assert _ids(narrowed) == {"Observation/a-vital"}


def test_too_many_granular_scopes_to_combine_are_refused(world: TestClient) -> None:
    """Seven scopes of two parameters each make 2**7 clauses: refused (403), not searched."""
    scopes = " ".join(f"patient/Observation.rs?category={LAB}|c{i}&code=http://loinc.org|{i}"
                      for i in range(7))
    answer = world.get("/fhir/Observation", headers=_as(world, scopes))
    assert answer.status_code == 403 and "too many" in answer.text


def test_a_patient_scope_without_a_patient_grants_nothing(world: TestClient) -> None:
    bare = {"Authorization": f"Bearer {token(world, 'patient/*.rs')}"}
    assert world.get("/fhir/Observation", headers=bare).status_code == 403
    user = {"Authorization": f"Bearer {token(world, 'user/*.rs')}"}
    assert world.get("/fhir/Observation", headers=user).status_code == 403
