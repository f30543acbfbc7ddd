"""`$validate` (operation-resource-validate.html) and its agreement with writes: a resource a
write refuses with 422 gets 200 here with the same issues, and the store is unchanged."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.model import french_ids as f
from fhir_server.model.profiles import FR_CORE_PATIENT_INS
from tests.builders import patient
from tests.conftest import authorized, token
from tests.http.helpers import create, send, stored
from tests.model.test_french_ids import NIR, qualified

ECLAIRE = "https://interop.esante.gouv.fr/ig/fhir/eclaire/StructureDefinition/eclaire-researchstudy"


def issues(response: Any) -> list[tuple[str, str, tuple[str, ...]]]:
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome", outcome
    return [(i["severity"], i["code"], tuple(i.get("expression", ()))) for i in outcome["issue"]]


def wrong_key() -> dict[str, Any]:
    resource = qualified()
    resource["identifier"][0]["value"] = NIR[:13] + "11"
    return resource


def provisional_with_matricule() -> dict[str, Any]:
    resource = qualified()
    resource["extension"][0]["extension"][0]["valueCoding"]["code"] = "PROV"
    return resource


def nia_as_nir() -> dict[str, Any]:
    return qualified(gender="male", birthDate="1984-01-01",
                     identifier=[{"use": "official", "system": f.NIR_SYSTEM,
                                  "value": "784017512345649"}])


def missing_trait() -> dict[str, Any]:
    resource = qualified()
    del resource["birthDate"]
    return resource


@pytest.mark.parametrize("build", [wrong_key, provisional_with_matricule, nia_as_nir, missing_trait])
def test_a_refused_write_and_validate_give_the_same_issues(client: TestClient, build: Any) -> None:
    resource = build()
    before = stored(client)
    checked = send(client, "POST", "/fhir/Patient/$validate", resource)
    assert checked.status_code == 200
    found = issues(checked)
    assert any(severity == "error" and expression for severity, _, expression in found)
    written = create(client, resource)
    assert written.status_code == 422
    assert issues(written) == found
    updated = send(client, "PUT", "/fhir/Patient/p1", dict(copy.deepcopy(resource), id="p1"))
    assert updated.status_code == 422 and issues(updated) == found
    assert stored(client) == before


def test_a_valid_resource_gets_one_informational_issue(client: TestClient) -> None:
    response = send(client, "POST", "/fhir/Patient/$validate", qualified())
    assert response.status_code == 200
    assert issues(response) == [("information", "informational", ())]
    assert create(client, qualified()).status_code == 201


def test_warnings_are_listed_and_the_write_passes(client: TestClient) -> None:
    resource = qualified(gender="male")
    response = send(client, "POST", "/fhir/Patient/$validate", resource)
    assert issues(response) == [("warning", "business-rule", ("Patient.gender",))]
    assert create(client, resource).status_code == 201


def test_parameters_body_with_mode_and_profile(client: TestClient) -> None:
    resource = qualified()
    del resource["extension"][0]
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": resource},
        {"name": "mode", "valueCode": "create"},
        {"name": "profile", "valueUri": FR_CORE_PATIENT_INS}]}
    response = send(client, "POST", "/fhir/Patient/$validate", body)
    assert response.status_code == 200
    # The INS rules warn of the missing status; the profile asked for makes it an error.
    warning = ("warning", "business-rule", ("Patient.identifier[0]",))
    assert issues(response) == [
        warning, ("error", "required", (f"Patient.extension('{f.IDENTITY_RELIABILITY_URL}')",))]
    assert issues(send(client, "POST", "/fhir/Patient/$validate", resource)) == [warning]


def test_profile_in_the_query_string(client: TestClient) -> None:
    resource = qualified()
    del resource["extension"][1]
    response = send(client, "POST", f"/fhir/Patient/$validate?profile={FR_CORE_PATIENT_INS}",
                    resource)
    assert issues(response) == [("error", "required", (f"Patient.extension('{f.BIRTHPLACE_URL}')",))]


def test_unknown_profile_is_400(client: TestClient) -> None:
    response = send(client, "POST", "/fhir/Patient/$validate?profile=http://example.org/nope",
                    qualified())
    assert response.status_code == 400
    assert "http://example.org/nope" in response.json()["issue"][0]["diagnostics"]


def test_unknown_profile_in_meta_profile_is_a_warning(client: TestClient) -> None:
    resource = patient(meta={"profile": ["http://example.org/nope"]})
    response = send(client, "POST", "/fhir/Patient/$validate", resource)
    assert issues(response) == [("warning", "not-supported", ("Patient.meta.profile",))]
    assert create(client, resource).status_code == 201


def test_meta_profile_is_honoured_on_writes(client: TestClient) -> None:
    resource = qualified(meta={"profile": [FR_CORE_PATIENT_INS]})
    del resource["extension"][0]
    before = stored(client)
    response = create(client, resource)
    assert response.status_code == 422
    assert ("error", "required", (f"Patient.extension('{f.IDENTITY_RELIABILITY_URL}')",)) \
        in issues(response)
    assert stored(client) == before


def test_malformed_json_is_400(client: TestClient) -> None:
    response = send(client, "POST", "/fhir/Patient/$validate", body=b'{"resourceType": "Pat')
    assert response.status_code == 400


def test_resource_of_another_type_is_400_as_for_a_write(client: TestClient) -> None:
    response = send(client, "POST", "/fhir/Patient/$validate", {"resourceType": "Organization"})
    assert response.status_code == 400
    assert create(client, {"resourceType": "Organization"}).status_code == 201


def test_unknown_mode_is_400(client: TestClient) -> None:
    response = send(client, "POST", "/fhir/Patient/$validate?mode=bogus", qualified())
    assert response.status_code == 400


def test_instance_update_mode_checks_the_id(client: TestClient) -> None:
    id = create(client, patient()).json()["id"]
    response = send(client, "POST", f"/fhir/Patient/{id}/$validate?mode=update",
                    patient(id=id, gender="male"))
    assert response.status_code == 200
    assert issues(response) == [("information", "informational", ())]
    mismatch = send(client, "POST", f"/fhir/Patient/{id}/$validate?mode=update", patient(id="x"))
    assert mismatch.status_code == 400
    missing = send(client, "POST", "/fhir/Patient/nobody/$validate?mode=update", patient(id="nobody"))
    assert missing.status_code == 404


def test_delete_mode_needs_no_resource(client: TestClient) -> None:
    id = create(client, patient()).json()["id"]
    response = send(client, "POST", f"/fhir/Patient/{id}/$validate?mode=delete")
    assert response.status_code == 200
    assert issues(response) == [("information", "informational", ())]
    assert client.get(f"/fhir/Patient/{id}").status_code == 200  # nothing deleted
    assert send(client, "POST", "/fhir/Patient/$validate?mode=delete").status_code == 400


def test_rpps_through_validate_and_write(client: TestClient) -> None:
    bad = {"resourceType": "Practitioner", "identifier": [{"system": f.RPPS_SYSTEM, "value": "123"}]}
    assert issues(send(client, "POST", "/fhir/Practitioner/$validate", bad)) == [
        ("error", "value", ("Practitioner.identifier[0].value",))]
    assert create(client, bad).status_code == 422
    luhn = {"resourceType": "Practitioner", "identifier": [{"system": f.RPPS_SYSTEM, "value": "810012345674"}]}
    assert issues(send(client, "POST", "/fhir/Practitioner/$validate", luhn)) == [
        ("warning", "value", ("Practitioner.identifier[0].value",))]
    assert create(client, luhn).status_code == 201


def test_eclaire_profile_through_validate(client: TestClient) -> None:
    study = {"resourceType": "ResearchStudy", "status": "active",
             "sponsor": {"reference": "Organization/x"}}
    response = send(client, "POST", f"/fhir/ResearchStudy/$validate?profile={ECLAIRE}", study)
    assert response.status_code == 200
    # dom-6 (no narrative) is a best-practice warning; sponsor is 0..0 in the profile
    assert issues(response) == [("warning", "invariant", ("ResearchStudy",)),
                                ("error", "structure", ("ResearchStudy.sponsor",))]
    assert issues(send(client, "POST", "/fhir/ResearchStudy/$validate", study)) == [
        ("information", "informational", ())]


def test_the_capability_statement_advertises_validate_and_the_profiles_held(client: TestClient) -> None:
    rest = client.get("/fhir/metadata").json()["rest"][0]
    assert {"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"} \
        in rest["operation"]
    by_type = {r["type"]: r for r in rest["resource"]}
    assert by_type["ResearchStudy"]["supportedProfile"] == [ECLAIRE]
    assert by_type["Patient"]["supportedProfile"] == [FR_CORE_PATIENT_INS]
    assert "supportedProfile" not in by_type["Observation"]


def test_validate_needs_read_on_the_type_and_delete_mode_needs_delete(client: TestClient) -> None:
    id = create(client, patient()).json()["id"]
    other = {"Authorization": f"Bearer {token(client, 'system/Observation.rs')}"}
    response = client.post("/fhir/Patient/$validate", json=patient(), headers=other)
    assert response.status_code == 403
    reader = {"Authorization": f"Bearer {token(client, 'system/Patient.rs')}"}
    assert client.post("/fhir/Patient/$validate", json=patient(), headers=reader).status_code == 200
    deleting = client.post(f"/fhir/Patient/{id}/$validate?mode=delete", headers=reader)
    assert deleting.status_code == 403


def test_profiles_required_on_write_per_type_and_client(settings: Any, store_kind: str) -> None:
    """`write_profiles`: the INS profile is required of the EHR's Patient writes, not of
    others'; its writes and its `$validate` agree, and a refused write stores nothing."""
    from fhir_server.app import create_app
    from fhir_server.settings import WriteProfileSetting
    from tests.store.conftest import encrypting, migrated_double

    settings = settings.model_copy(update={"write_profiles": [WriteProfileSetting(
        type="Patient", profiles=[FR_CORE_PATIENT_INS], clients=["ehr-chu"])]})
    store = None if store_kind == "sqlite" else migrated_double(codec=encrypting(settings.data_dir))
    plain = patient(identifier=[{"system": "urn:oid:1.2.250.1.999.1.1", "value": "42"}])
    with authorized(TestClient(create_app(settings, store))) as app:
        def as_client(client_id: str) -> dict[str, str]:
            issued = app.app.state.tokens.issue(  # type: ignore[attr-defined]
                subject=client_id, client_id=client_id, scope="system/*.cruds")
            return {"Authorization": f"Bearer {issued['access_token']}",
                    "Content-Type": "application/fhir+json"}

        before = stored(app)
        ehr = as_client("ehr-chu")
        refused = app.post("/fhir/Patient", json=plain, headers=ehr)
        assert refused.status_code == 422
        found = issues(refused)
        assert ("error", "required", ("Patient.extension('" + f.IDENTITY_RELIABILITY_URL + "')",)) in found
        checked = app.post("/fhir/Patient/$validate", json=plain, headers=ehr)
        assert checked.status_code == 200 and issues(checked) == found
        transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": plain, "request": {"method": "PUT", "url": "Patient?identifier=urn:oid:1.2.250.1.999.1.1|42"}}]}
        assert app.post("/fhir", json=transaction, headers=ehr).status_code == 422
        assert stored(app) == before
        assert app.post("/fhir/Patient", json=plain, headers=as_client("portal")).status_code == 201
        assert app.post("/fhir/Patient", json=qualified(), headers=ehr).status_code == 201


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_other_methods_on_validate_are_405(client: TestClient, method: str) -> None:
    """`$validate` takes a resource: POST only; not a read of id "$validate" (400 "invalid id")."""
    for url in ("/fhir/Patient/$validate", "/fhir/Patient/p1/$validate"):
        response = client.request(method, url)
        assert response.status_code == 405, (method, url, response.text)
        assert response.headers["Allow"] == "POST"
        assert response.json()["resourceType"] == "OperationOutcome"
