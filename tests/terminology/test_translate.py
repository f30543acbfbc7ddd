"""ConceptMap/$translate (FHIR R4 conceptmap-operation-translate.html) over the maps held:
ECLAIRE's (whose groups name CodeSystems by id), ours to ICD-10; target system, reverse,
systems no map covers, bad input; GET and POST agree."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.terminology.conftest import CANCER, LOINC, both, get, outcome, post, value

ECLAIRE = "https://interop.esante.gouv.fr/ig/fhir/eclaire"
STATUS = f"{ECLAIRE}/CodeSystem/eclaire-study-status-code-system"
STATUS_MAP = f"{ECLAIRE}/ConceptMap/eclaire-study-status-concept-map"
R4_STATUS = "http://hl7.org/fhir/research-study-status"
ICD10 = "http://hl7.org/fhir/sid/icd-10"


def matches(answer: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(equivalence, system, code) of each match."""
    out = []
    for p in answer["parameter"]:
        if p["name"] == "match":
            parts = {part["name"]: part for part in p["part"]}
            coding = parts["concept"]["valueCoding"]
            out.append((parts["equivalence"]["valueCode"], coding["system"], coding["code"]))
    return out


def test_eclaire_status_to_r4(client: TestClient) -> None:
    answer = both(client, "ConceptMap/$translate", system=STATUS, code="en-cours")
    assert value(answer, "result") is True
    assert matches(answer) == [("equivalent", R4_STATUS, "active")]
    match = next(p for p in answer["parameter"] if p["name"] == "match")
    assert {"name": "source", "valueUri": STATUS_MAP} in match["part"]
    assert {"name": "concept", "valueCoding": {"system": R4_STATUS, "code": "active",
                                                "display": "Active"}} in match["part"]
    two = both(client, "ConceptMap/$translate", url=STATUS_MAP, system=STATUS, code="suspendue")
    assert [m[2] for m in matches(two)] == ["temporarily-closed-to-accrual",
                                            "temporarily-closed-to-accrual-and-intervention"]


def test_reverse_and_target_system(client: TestClient) -> None:
    back = both(client, "ConceptMap/$translate", system=R4_STATUS, code="completed", reverse="true")
    assert sorted(m[2] for m in matches(back)) == ["archivee", "terminee"]
    assert all(m[1] == STATUS for m in matches(back))
    elsewhere = both(client, "ConceptMap/$translate", system=STATUS, code="en-cours",
                     targetsystem=ICD10)
    assert value(elsewhere, "result") is False and matches(elsewhere) == []


def test_our_cancer_types_to_icd10_by_instance(client: TestClient) -> None:
    answer = both(client, "ConceptMap/cancer-type-to-icd-10/$translate", system=CANCER, code="nsclc")
    assert matches(answer) == [("wider", ICD10, "C34")]
    colorectal = post(client, "ConceptMap/$translate", coding={"system": CANCER, "code": "colorectal"},
                      targetsystem=ICD10).json()
    assert [m[2] for m in matches(colorectal)] == ["C18", "C19", "C20"]


def test_no_map_is_a_false_result_with_a_message(client: TestClient) -> None:
    answer = both(client, "ConceptMap/$translate", system=LOINC, code="8867-4")
    assert value(answer, "result") is False and value(answer, "message")
    unmapped = both(client, "ConceptMap/cancer-type-to-icd-10/$translate", system=CANCER,
                    code="lymphoma")
    assert value(unmapped, "result") is False and "cancer-type-to-icd-10" in value(unmapped, "message")


def test_bad_input(client: TestClient) -> None:
    assert outcome(get(client, "ConceptMap/$translate", code="x"), 400)["expression"] == ["system"]
    assert outcome(get(client, "ConceptMap/$translate", system=STATUS), 400)["expression"] == ["code"]
    assert outcome(get(client, "ConceptMap/$translate", system=STATUS, code="x", reverse="1"),
                   400)["expression"] == ["reverse"]
    assert outcome(get(client, "ConceptMap/$translate", url=f"{ECLAIRE}/ConceptMap/none",
                       system=STATUS, code="x"), 404)["code"] == "not-found"
    assert outcome(get(client, "ConceptMap/none/$translate", system=STATUS, code="x"), 404)
    assert outcome(get(client, "ConceptMap/cancer-type-to-icd-10/$translate", url=STATUS_MAP,
                       system=STATUS, code="x"), 400)["expression"] == ["url"]


SNOMED = "http://snomed.info/sct"
SNOMED_MAP = "https://oncotrials.example.org/fhir/ConceptMap/snomed-to-icd-10"


def test_snomed_cancer_diagnoses_to_icd10(client: TestClient) -> None:
    # Synthea's colon cancer; no map named: every map held is tried.
    colon = both(client, "ConceptMap/$translate", system=SNOMED, code="93761005")
    assert matches(colon) == [("equivalent", ICD10, "C18")]
    match = next(p for p in colon["parameter"] if p["name"] == "match")
    assert {"name": "source", "valueUri": SNOMED_MAP} in match["part"]
    kidney = both(client, "ConceptMap/snomed-to-icd-10/$translate", system=SNOMED, code="363518003")
    assert matches(kidney) == [("narrower", ICD10, "C64"), ("narrower", ICD10, "C65")]
    nsclc = both(client, "ConceptMap/$translate", url=SNOMED_MAP, system=SNOMED, code="254637007")
    assert matches(nsclc) == [("wider", ICD10, "C34")]
    # Reverse: which SNOMED CT concepts the map places in C78.7.
    liver = both(client, "ConceptMap/$translate", url=SNOMED_MAP, system=ICD10, code="C78.7", reverse="true")
    assert (value(liver, "result"), [m[2] for m in matches(liver)]) == (True, ["94381002"])


V2_0001 = "http://terminology.hl7.org/CodeSystem/v2-0001"


def test_the_hl7_v2_tables_the_mappings_apply_are_concept_maps(client: TestClient) -> None:
    """mappings/hl7v2/vocabulary.json's v2 tables answer $translate as the listener maps them."""
    sex = both(client, "ConceptMap/$translate", system=V2_0001, code="F")
    assert value(sex, "result") is True
    assert matches(sex) == [("equivalent", "http://hl7.org/fhir/administrative-gender", "female")]
    patient_class = both(client, "ConceptMap/$translate",
                         system="http://terminology.hl7.org/CodeSystem/v2-0004", code="I")
    assert matches(patient_class) == [
        ("equivalent", "http://terminology.hl7.org/CodeSystem/v3-ActCode", "IMP")]
    back = both(client, "ConceptMap/$translate", system="http://hl7.org/fhir/administrative-gender",
                code="male", reverse="true")
    assert matches(back) == [("equivalent", V2_0001, "M")]
    unknown = both(client, "ConceptMap/$translate", system=V2_0001, code="Z")
    assert value(unknown, "result") is False
