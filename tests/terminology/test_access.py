"""The terminology operations go through the service layer: the caller's scopes decide
(deny by default) and each call leaves an AuditEvent (FHIR R4 terminology-service.html;
SMART App Launch 2.2 scopes)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from fhir_server.app import create_app
from fhir_server.settings import Settings
from tests.conftest import authorized, token
from tests.terminology.conftest import CANCER, get, outcome


def test_scopes_decide(settings: Settings) -> None:
    with authorized(TestClient(create_app(settings)), "system/Patient.rs") as client:
        for path, params in [("ValueSet/cancer-type/$expand", {}),
                             ("CodeSystem/$lookup", {"system": CANCER, "code": "lung"}),
                             ("ConceptMap/$translate", {"system": CANCER, "code": "lung"})]:
            assert outcome(get(client, path, **params), 403)["code"] == "forbidden"
    with authorized(TestClient(create_app(settings)), "system/ValueSet.r") as client:
        assert get(client, "ValueSet/cancer-type/$expand").status_code == 200
        outcome(get(client, "CodeSystem/$lookup", system=CANCER, code="lung"), 403)
    with TestClient(create_app(settings)) as patient_app:
        # A patient's app reaches value sets (no patient data) when its scopes name them.
        bearer = token(patient_app, "patient/ValueSet.rs patient/Patient.rs", patient="p1")
        patient_app.headers["Authorization"] = f"Bearer {bearer}"
        assert get(patient_app, "ValueSet/cancer-type/$expand").status_code == 200
    with TestClient(create_app(settings)) as anonymous:
        assert get(anonymous, "ValueSet/cancer-type/$expand").status_code == 401


def test_each_call_is_audited(client: TestClient) -> None:
    def operations() -> list[dict]:
        events = client.get("/fhir/AuditEvent?_count=1000").json().get("entry", [])
        return [e["resource"] for e in events
                if e["resource"]["subtype"][0]["code"] == "operation"]

    before = len(operations())
    get(client, "CodeSystem/$lookup", system=CANCER, code="lung")
    get(client, "CodeSystem/$lookup", system=CANCER, code="nope")
    after = operations()
    assert len(after) == before + 2
    assert sorted(e["outcome"] for e in after[-2:]) == ["0", "4"]


def test_the_capability_statement_names_the_official_definitions(client: TestClient) -> None:
    statement = client.get("/fhir/metadata").json()
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    official = "http://hl7.org/fhir/OperationDefinition"
    expected = {"CodeSystem": {"lookup": f"{official}/CodeSystem-lookup",
                               "validate-code": f"{official}/CodeSystem-validate-code"},
                "ValueSet": {"expand": f"{official}/ValueSet-expand",
                             "validate-code": f"{official}/ValueSet-validate-code"},
                "ConceptMap": {"translate": f"{official}/ConceptMap-translate"}}
    for type_name, operations in expected.items():
        listed = {o["name"]: o["definition"] for o in resources[type_name]["operation"]}
        assert listed == operations
