"""Transaction Bundles over HTTP (FHIR R4 http.html#transaction, #trules, bundle.html#references).

All or nothing; processing order DELETE, POST, PUT/PATCH, GET; placeholder fullUrls and
conditional references rewritten in every reference; ifNoneExist, ifMatch, ifNoneMatch;
errors that name the entry; the whole Synthea sample.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from fhir_server.app import create_app
from fhir_server.settings import Settings
from tests.builders import INS_NIR, identified_patient, observation, organization, patient
from tests.conftest import SHARED, authorized
from tests.http.bundle_helpers import entry, json_patch, located_id, placeholder, post_bundle, responses
from tests.http.helpers import FHIR_JSON, create, issue, send
from tests.http.test_errors import _store_digest

NIR = "162047512345620"


def _read(client: TestClient, reference: str) -> dict[str, Any]:
    response = client.get(f"/fhir/{reference}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _total(client: TestClient, query: str) -> int:
    # The count rides in the query string itself: httpx's `params=` would replace it.
    separator = "&" if "?" in query else "?"
    return int(client.get(f"/fhir/{query}{separator}_summary=count").json()["total"])


def _expressions(response: Any) -> list[str]:
    return [e for i in response.json()["issue"] for e in i.get("expression", [])]


@pytest.mark.parametrize("path", ["/fhir", "/fhir/"])
@pytest.mark.parametrize("content_type", [FHIR_JSON, "application/json"])
def test_transaction_is_accepted_at_base_with_json_types(
    client: TestClient, path: str, content_type: str
) -> None:
    response = post_bundle(client, "transaction", [entry("POST", "Patient", patient())],
                           path=path, content_type=content_type)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["resourceType"] == "Bundle" and body["type"] == "transaction-response"
    [answer] = responses(response)
    assert answer["status"].startswith("201")
    assert _read(client, f"Patient/{located_id(answer)}")["name"][0]["family"] == "Dupont"


def test_response_entries_follow_request_order_with_status_location_etag(client: TestClient) -> None:
    send(client, "PUT", "/fhir/Patient/gone", patient(id="gone"))
    response = post_bundle(client, "transaction", [
        entry("GET", "Patient/kept"),
        entry("DELETE", "Patient/gone"),
        entry("PUT", "Patient/kept", patient(id="kept")),
        entry("POST", "Organization", organization()),
    ])
    assert response.status_code == 200, response.text
    read, deleted, put, posted = responses(response)
    assert read["status"] == "200 OK"
    assert deleted["status"].startswith("204")
    assert put["status"] == "201 Created"
    assert put["location"] == "Patient/kept/_history/1" and put["etag"] == 'W/"1"'
    assert put["lastModified"]
    assert posted["status"] == "201 Created" and posted["location"].startswith("Organization/")
    assert response.json()["entry"][3]["resource"]["resourceType"] == "Organization"


def test_entries_run_delete_then_post_then_put_then_get(client: TestClient) -> None:
    send(client, "PUT", "/fhir/Patient/a", patient(family="Old", id="a"))
    create(client, identified_patient(NIR))
    criteria = f"identifier={INS_NIR}|{NIR}"
    response = post_bundle(client, "transaction", [
        entry("GET", "Patient/a"),
        entry("PUT", "Patient/a", patient(family="New", id="a")),
        entry("POST", "Patient", identified_patient(NIR, name=[{"family": "Reborn"}]),
              ifNoneExist=criteria),
        entry("DELETE", f"Patient?{criteria}"),
    ])
    assert response.status_code == 200, response.text
    read, put, post, delete = responses(response)
    # GET ran after PUT: it sees the new name.
    assert response.json()["entry"][0]["resource"]["name"][0]["family"] == "New"
    assert put["status"] == "200 OK"
    # DELETE ran before POST: ifNoneExist found nothing left to match, so the POST created.
    assert delete["status"].startswith("204")
    assert post["status"] == "201 Created"
    found = client.get("/fhir/Patient", params={"identifier": f"{INS_NIR}|{NIR}"}).json()
    assert [e["resource"]["name"][0]["family"] for e in found["entry"]] == ["Reborn"]
    assert read["status"] == "200 OK"


def test_placeholders_are_rewritten_in_every_reference(client: TestClient) -> None:
    patient_url, org_url = placeholder(), "urn:oid:1.2.250.1.71.4.2.2"
    weight = observation(patient_url, performer=[{"reference": org_url}],
                         extension=[{"url": "http://example.org/fhir/StructureDefinition/seen-by",
                                     "valueReference": {"reference": org_url}}],
                         hasMember=[{"reference": "urn:uuid:0f0f0f0f-0000-4000-8000-000000000001"}])
    member = observation(patient_url, id="member")
    response = post_bundle(client, "transaction", [
        entry("POST", "Observation", weight),
        entry("PUT", "Observation/member", member,
              full_url="urn:uuid:0f0f0f0f-0000-4000-8000-000000000001"),
        entry("POST", "Patient", patient(managingOrganization={"reference": org_url}), full_url=patient_url),
        entry("POST", "Organization", organization(), full_url=org_url),
    ])
    assert response.status_code == 200, response.text
    obs, put, pat, org = responses(response)
    patient_ref, org_ref = f"Patient/{located_id(pat)}", f"Organization/{located_id(org)}"
    stored = _read(client, f"Observation/{located_id(obs)}")
    assert stored["subject"]["reference"] == patient_ref
    assert stored["performer"][0]["reference"] == org_ref
    assert stored["extension"][0]["valueReference"]["reference"] == org_ref
    assert stored["hasMember"][0]["reference"] == "Observation/member"
    assert _read(client, "Observation/member")["subject"]["reference"] == patient_ref
    assert _read(client, patient_ref)["managingOrganization"]["reference"] == org_ref
    assert put["status"] == "201 Created"
    # The rewritten references are indexed too: search by the new id finds the Observations.
    assert _total(client, f"Observation?subject={patient_ref}") == 2


def test_placeholder_naming_no_entry_fails(client: TestClient, settings: Settings) -> None:
    before = _store_digest(settings)
    response = post_bundle(client, "transaction", [
        entry("POST", "Patient", patient()),
        entry("POST", "Observation", observation("urn:uuid:4d2b6a0e-0000-4000-8000-00000000dead")),
    ])
    assert response.status_code == 400
    assert "Bundle.entry[1].resource" in _expressions(response)
    assert "urn:uuid:4d2b6a0e" in issue(response)["diagnostics"]
    assert _store_digest(settings) == before


def test_conditional_reference_with_one_match_is_resolved(client: TestClient) -> None:
    id = create(client, identified_patient(NIR)).json()["id"]
    response = post_bundle(client, "transaction", [
        entry("POST", "Observation", observation(f"Patient?identifier={INS_NIR}|{NIR}")),
    ])
    assert response.status_code == 200, response.text
    stored = _read(client, f"Observation/{located_id(responses(response)[0])}")
    assert stored["subject"]["reference"] == f"Patient/{id}"


def test_conditional_reference_equal_to_a_get_entry_s_full_url_is_resolved(client: TestClient) -> None:
    create(client, patient(identifier=[{"system": "urn:sys", "value": "42"}]))
    condition = "Patient?identifier=urn:sys|42"
    response = post_bundle(client, "transaction", [
        entry("POST", "Observation", observation(condition)),
        entry("GET", condition, full_url=condition)])
    assert response.status_code == 200, response.text
    [created, _] = responses(response)
    assert created["status"] == "201 Created"


@pytest.mark.parametrize(("patients", "code"), [(0, "not-found"), (2, "multiple-matches")])
def test_conditional_reference_without_exactly_one_match_fails(
    client: TestClient, settings: Settings, patients: int, code: str
) -> None:
    for _ in range(patients):
        create(client, identified_patient(NIR))
    before = _store_digest(settings)
    response = post_bundle(client, "transaction", [
        entry("POST", "Patient", patient()),
        entry("POST", "Observation", observation(f"Patient?identifier={INS_NIR}|{NIR}")),
    ])
    assert response.status_code == 412
    found = issue(response)
    assert found["code"] == code
    assert "Entry 1" in found["diagnostics"] and f"{INS_NIR}|{NIR}" in found["diagnostics"]
    assert "Bundle.entry[1].resource" in _expressions(response)
    assert _store_digest(settings) == before


@pytest.mark.parametrize("criteria", [
    # The Patient this would match is only created by the same transaction: conditional
    # references are resolved against stored resources, so it can never be satisfied.
    f"Patient?identifier={INS_NIR}|{NIR}",
    # Criteria that depend on a placeholder of the same Bundle (circular).
    "Patient?organization=urn:uuid:6a1e2d0c-0000-4000-8000-000000000007",
])
def test_unsatisfiable_conditional_reference_fails(
    client: TestClient, settings: Settings, criteria: str
) -> None:
    before = _store_digest(settings)
    response = post_bundle(client, "transaction", [
        entry("POST", "Organization", organization(),
              full_url="urn:uuid:6a1e2d0c-0000-4000-8000-000000000007"),
        entry("POST", "Patient", identified_patient(NIR)),
        entry("POST", "Observation", observation(criteria)),
    ])
    assert response.status_code in (400, 412)
    assert "Bundle.entry[2].resource" in _expressions(response)
    assert criteria in issue(response)["diagnostics"]
    assert _store_digest(settings) == before


def _with_if_none_exist(bundle: dict[str, Any]) -> dict[str, Any]:
    """Ask for a conditional create on the first identifier of every identified resource."""
    for item in bundle["entry"]:
        identifiers = item["resource"].get("identifier")
        if identifiers:
            first = identifiers[0]
            item["request"]["ifNoneExist"] = f"identifier={first['system']}|{first['value']}"
    return bundle


def test_resending_a_synthea_bundle_with_if_none_exist_never_duplicates(client: TestClient) -> None:
    path = sorted((SHARED / "synthea").glob("Alberto_*.json"))[0]
    body = orjson.dumps(_with_if_none_exist(orjson.loads(path.read_bytes())))
    first = send(client, "POST", "/fhir", body=body)
    assert first.status_code == 200, first.text
    counts = {t: _total(client, t) for t in ("Patient", "Organization", "Practitioner")}
    assert counts["Patient"] == 1 and counts["Organization"] >= 1
    second = send(client, "POST", "/fhir", body=body)
    assert second.status_code == 200, second.text
    assert {t: _total(client, t) for t in counts} == counts
    patient_first, patient_second = responses(first)[0], responses(second)[0]
    assert patient_first["status"] == "201 Created" and patient_second["status"] == "200 OK"
    assert located_id(patient_second) == located_id(patient_first)
    # The re-sent clinical data points at the Patient that already existed.
    observation_response = next(r for r in responses(second) if r["location"].startswith("Observation/"))
    stored = _read(client, observation_response["location"].rsplit("/_history", 1)[0])
    assert stored["subject"]["reference"] == f"Patient/{located_id(patient_first)}"


def test_if_match_guards_an_update(client: TestClient, settings: Settings) -> None:
    send(client, "PUT", "/fhir/Patient/a", patient(id="a"))
    ok = post_bundle(client, "transaction", [
        entry("PUT", "Patient/a", patient(family="Martin", id="a"), ifMatch='W/"1"')])
    assert ok.status_code == 200 and responses(ok)[0]["etag"] == 'W/"2"'
    before = _store_digest(settings)
    stale = post_bundle(client, "transaction", [
        entry("POST", "Patient", patient()),
        entry("PUT", "Patient/a", patient(family="Stale", id="a"), ifMatch='W/"1"')])
    assert stale.status_code == 412
    assert "Bundle.entry[1]" in _expressions(stale)
    assert _store_digest(settings) == before


def test_if_none_match_on_get_gives_304(client: TestClient) -> None:
    send(client, "PUT", "/fhir/Patient/a", patient(id="a"))
    response = post_bundle(client, "transaction", [
        entry("GET", "Patient/a", ifNoneMatch='W/"1"'),
        entry("GET", "Patient/a", ifNoneMatch='W/"7"'),
    ])
    assert response.status_code == 200
    same, changed = response.json()["entry"]
    assert same["response"]["status"].startswith("304") and "resource" not in same
    assert changed["response"]["status"] == "200 OK" and changed["resource"]["id"] == "a"


def test_if_none_match_star_on_put_creates_only(client: TestClient, settings: Settings) -> None:
    created = post_bundle(client, "transaction", [
        entry("PUT", "Patient/a", patient(id="a"), ifNoneMatch="*")])
    assert responses(created)[0]["status"] == "201 Created"
    before = _store_digest(settings)
    again = post_bundle(client, "transaction", [
        entry("PUT", "Patient/a", patient(family="Other", id="a"), ifNoneMatch="*")])
    assert again.status_code == 412
    assert "Bundle.entry[0]" in _expressions(again)
    assert _store_digest(settings) == before


def test_patch_entry_carries_json_patch_as_binary(client: TestClient) -> None:
    send(client, "PUT", "/fhir/Patient/a", patient(id="a"))
    operations = [{"op": "replace", "path": "/name/0/family", "value": "Durand"}]
    response = post_bundle(client, "transaction", [
        entry("PATCH", "Patient/a", json_patch(operations), ifMatch='W/"1"')])
    assert response.status_code == 200, response.text
    assert responses(response)[0]["etag"] == 'W/"2"'
    assert _read(client, "Patient/a")["name"][0]["family"] == "Durand"
    plain = post_bundle(client, "transaction", [entry("PATCH", "Patient/a", {"resourceType": "Basic"})])
    assert plain.status_code == 400
    assert "Bundle.entry[0].resource" in _expressions(plain)


def test_invalid_resource_at_entry_500_leaves_store_identical(client: TestClient, settings: Settings) -> None:
    create(client, patient())
    before = _store_digest(settings)
    entries = [entry("POST", "Patient", patient(family=f"P{i}")) for i in range(499)]
    entries.append(entry("POST", "Patient", patient(gender="x")))
    response = post_bundle(client, "transaction", entries)
    assert response.status_code == 422
    assert "Bundle.entry[499].resource.gender" in _expressions(response)
    assert "Entry 499" in issue(response)["diagnostics"]
    assert _store_digest(settings) == before


@pytest.mark.parametrize("late, failing", [
    # DELETEs run first: this one fails before anything else is written.
    (499, entry("DELETE", "Patient/a", ifMatch='W/"9"')),
    # Writes go to the store in chunks of 256: this one fails after the first chunk was
    # applied inside the unit of work.
    (400, entry("PUT", "Patient/a", patient(family="Stale", id="a"), ifMatch='W/"9"')),
])
def test_failure_in_the_store_at_a_late_entry_undoes_earlier_writes(
    client: TestClient, settings: Settings, late: int, failing: dict[str, Any]
) -> None:
    send(client, "PUT", "/fhir/Patient/a", patient(id="a"))
    before = _store_digest(settings)
    entries = [entry("PUT", f"Patient/p{i}", patient(id=f"p{i}")) for i in range(500)]
    entries[late] = failing
    response = post_bundle(client, "transaction", entries)
    assert response.status_code == 412
    assert f"Entry {late}" in issue(response)["diagnostics"]
    assert f"Bundle.entry[{late}]" in _expressions(response)
    assert _store_digest(settings) == before
    assert client.get("/fhir/Patient/p0").status_code == 404


def test_rolled_back_transaction_leaves_search_intact(client: TestClient) -> None:
    """Index state kept in memory (parameter ids) must roll back with the data."""
    failed = post_bundle(client, "transaction", [
        entry("POST", "Patient", patient(family="Rolled")),
        entry("PUT", "Device/d1", {"resourceType": "Device", "id": "d1"}, ifMatch='W/"3"')])
    assert failed.status_code == 412
    assert create(client, {"resourceType": "Organization", "name": "Oncology"}).status_code == 201
    assert create(client, patient(family="Kept")).status_code == 201
    assert _total(client, "Organization?name=Oncology") == 1
    assert _total(client, "Organization?name=Kept") == 0
    assert _total(client, "Patient?family=Kept") == 1


def test_get_failing_after_commit_is_reported_in_its_entry(client: TestClient) -> None:
    response = post_bundle(client, "transaction", [
        entry("POST", "Patient", patient()), entry("GET", "Patient/missing")])
    assert response.status_code == 200
    created, missing = responses(response)
    assert missing["status"].startswith("404")
    assert missing["outcome"]["issue"][0]["expression"] == ["Bundle.entry[1]"]
    assert client.get(f"/fhir/Patient/{located_id(created)}").status_code == 200


def test_get_that_can_never_succeed_fails_before_any_write(client: TestClient, settings: Settings) -> None:
    before = _store_digest(settings)
    response = post_bundle(client, "transaction", [
        entry("POST", "Patient", patient()), entry("GET", "Banana/1")])
    assert response.status_code == 404
    assert "Bundle.entry[1]" in _expressions(response)
    assert _store_digest(settings) == before


BAD_BUNDLES = [
    # (description, bundle, status, issue code, expression)
    ("not a Bundle", {"resourceType": "Patient"}, 400, "invalid", "resourceType"),
    ("wrong type", {"resourceType": "Bundle", "type": "collection", "entry": []}, 400, "invalid",
     "Bundle.type"),
    ("no request", {"resourceType": "Bundle", "type": "transaction",
                    "entry": [{"resource": patient()}]}, 400, "invalid", "Bundle.entry[0].request"),
    ("bad method", {"resourceType": "Bundle", "type": "transaction",
                    "entry": [entry("FETCH", "Patient", patient())]}, 400, "invalid",
     "Bundle.entry[0].request.method"),
    ("duplicate fullUrl", {"resourceType": "Bundle", "type": "transaction", "entry": [
        entry("POST", "Patient", patient(), full_url="urn:uuid:11111111-0000-4000-8000-000000000000"),
        entry("POST", "Patient", patient(), full_url="urn:uuid:11111111-0000-4000-8000-000000000000"),
    ]}, 400, "invalid", "Bundle.entry[1].fullUrl"),
    ("other server", {"resourceType": "Bundle", "type": "transaction",
                      "entry": [entry("POST", "http://elsewhere.example/fhir/Patient", patient())]},
     400, "invalid", "Bundle.entry[0].request.url"),
    ("write without type", {"resourceType": "Bundle", "type": "transaction",
                            "entry": [entry("DELETE", "?identifier=x")]}, 405, "not-supported",
     "Bundle.entry[0].request.url"),
    ("POST without resource", {"resourceType": "Bundle", "type": "transaction",
                               "entry": [entry("POST", "Patient")]}, 400, "invalid",
     "Bundle.entry[0].resource"),
    ("same resource twice", {"resourceType": "Bundle", "type": "transaction", "entry": [
        entry("PUT", "Patient/a", patient(id="a")), entry("DELETE", "Patient/a")]}, 400, "invalid",
     "Bundle.entry[1].request.url"),
    ("type differs from url", {"resourceType": "Bundle", "type": "transaction",
                               "entry": [entry("POST", "Observation", patient())]}, 400, "invalid",
     "Bundle.entry[0]"),
]


@pytest.mark.parametrize(("bundle", "status", "code", "expression"),
                         [pytest.param(*case[1:], id=case[0]) for case in BAD_BUNDLES])
def test_bad_bundle_gets_outcome_and_changes_nothing(
    client: TestClient, settings: Settings, bundle: dict[str, Any], status: int, code: str,
    expression: str,
) -> None:
    send(client, "PUT", "/fhir/Patient/a", patient(id="a"))
    before = _store_digest(settings)
    response = send(client, "POST", "/fhir", bundle)
    assert response.status_code == status, response.text
    assert issue(response)["code"] == code
    assert issue(response)["diagnostics"]
    assert expression in _expressions(response)
    assert _store_digest(settings) == before


def test_conditional_put_resolving_to_another_entry_s_resource_fails(client: TestClient) -> None:
    send(client, "PUT", "/fhir/Patient/a", identified_patient(NIR, id="a"))
    response = post_bundle(client, "transaction", [
        entry("PATCH", "Patient/a", json_patch([{"op": "add", "path": "/active", "value": True}])),
        entry("PUT", f"Patient?identifier={INS_NIR}|{NIR}", identified_patient(NIR)),
    ])
    assert response.status_code == 400
    assert "Patient/a" in issue(response)["diagnostics"]


def test_more_entries_than_the_limit_is_413(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, base_url="http://testserver/fhir", max_bundle_entries=3)
    with authorized(TestClient(create_app(settings))) as small:
        # Entry 0 is malformed too: the size is refused first, as such.
        entries = [{"resource": patient()}] + [entry("POST", "Patient", patient()) for _ in range(3)]
        response = post_bundle(small, "transaction", entries)
        assert response.status_code == 413
        assert issue(response)["code"] == "too-costly"
        assert "limit is 3" in issue(response)["diagnostics"]


def _references(value: Any, out: set[str]) -> set[str]:
    if isinstance(value, dict):
        if isinstance(value.get("reference"), str):
            out.add(value["reference"])
        for child in value.values():
            _references(child, out)
    elif isinstance(value, list):
        for child in value:
            _references(child, out)
    return out


def test_synthea_sample_loads_and_every_reference_resolves(client: TestClient) -> None:
    files = sorted((SHARED / "synthea").glob("*.json"))
    assert len(files) == 14
    written = 0
    for path in files:
        response = send(client, "POST", "/fhir", body=path.read_bytes())
        assert response.status_code == 200, (path.name, response.text[:500])
        written += sum(r["status"] == "201 Created" for r in responses(response))
    assert written == 1660
    stored: dict[str, dict[str, Any]] = {}
    for resource_type in ("Patient", "Organization", "Practitioner", "Encounter", "Observation",
                          "Condition", "Procedure", "Immunization", "Claim", "ExplanationOfBenefit",
                          "DiagnosticReport", "MedicationRequest", "CarePlan", "Goal"):
        page = client.get(f"/fhir/{resource_type}", params={"_count": "1000"}).json()
        assert "next" not in {link["relation"] for link in page["link"]}
        stored.update((f"{resource_type}/{e['resource']['id']}", e["resource"]) for e in page["entry"])
    assert len(stored) == 1660
    references = set().union(*(_references(r, set()) for r in stored.values()))
    external = {r for r in references if not r.startswith("#")}
    assert len(external) > 100
    assert external <= stored.keys(), sorted(external - stored.keys())[:5]


def test_request_urls_may_hold_urls_in_their_query(client: TestClient) -> None:
    """A conditional URL names code systems (`code=http://loinc.org|...`): still on this server."""
    body = observation("Patient/any")
    code = body["code"]["coding"][0]
    url = f"Observation?code={code['system']}|{code['code']}"
    done = post_bundle(client, "transaction", [entry("PUT", url, body)])
    assert done.status_code == 200, done.text
    assert responses(done)[0]["status"].startswith("201")
    elsewhere = post_bundle(client, "transaction", [entry("PUT", "http://other.example/fhir/Observation/x",
                                                          {**body, "id": "x"})])
    assert elsewhere.status_code == 400
