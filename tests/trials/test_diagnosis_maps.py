"""Diagnoses coded without ICD-10 (SNOMED CT, as EHRs and Synthea send them; our cancer-type
codes) are read through the ConceptMaps terminology/ ships: the ICD-10 rule applies unchanged,
and the evidence names the Condition and the map, `url|version` (docs/matching.md §1, §2)."""

from __future__ import annotations

import glob
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server.trials.eligibility import evaluate, read_record, read_trial
from tests.http.helpers import send
from tests.trials.conftest import served
from tests.trials.eligibility_builders import (ICD10, TODAY, coded, condition, criterion, group,
                                               patient)
from tests.trials.match_world import RECENT, World, location, site, study

SNOMED = "http://snomed.info/sct"
CANCER_TYPE = "https://oncotrials.example.org/fhir/CodeSystem/cancer-type"
SNOMED_MAP = "https://oncotrials.example.org/fhir/ConceptMap/snomed-to-icd-10|1.0.0"
CANCER_TYPE_MAP = "https://oncotrials.example.org/fhir/ConceptMap/cancer-type-to-icd-10|1.0.0"
SYNTHEA = Path(__file__).resolve().parents[2] / "../shared/data/synthea"


def _florentino() -> list[tuple[str, dict[str, Any]]]:
    [path] = glob.glob(str(SYNTHEA / "Florentino_Mertz_*.json"))
    bundle = orjson.loads(Path(path).read_bytes())
    return [(f"{e['resource']['resourceType']}/{e['resource']['id']}", e["resource"]) for e in bundle["entry"]]


def _judged(code: str, resources: list[tuple[str, dict[str, Any]]], exclude: bool = False) -> Any:
    trial = read_trial("s", [group("g", criterion("condition", coded(ICD10, code), exclude=exclude))])
    return evaluate(trial, read_record(resources, TODAY)).criteria[0]


COLON = "Condition/75d91058-909f-4abb-9f0a-0e07be42f82e"


def test_synthea_colon_cancer_meets_a_colon_criterion() -> None:
    found = _judged("C18", _florentino())
    assert found.verdict == "met"
    assert found.evidence == (COLON, SNOMED_MAP)


def test_synthea_colon_cancer_is_not_a_breast_cancer() -> None:
    # The translated C18 is a recorded diagnosis like any ICD-10 one: the closed-world rule.
    found = _judged("C50", _florentino())
    assert found.verdict == "not-met"
    assert found.evidence == (COLON, SNOMED_MAP)
    # A more precise code than the map gives (C18 for primary colon cancer) stays open.
    assert _judged("C18.2", _florentino()).verdict == "unknown"
    # An exclusion is never proven absent by other diagnoses.
    assert _judged("C79.3", _florentino(), exclude=True).verdict == "unknown"


def _verdict(code: str, *recorded: dict[str, Any]) -> str:
    resources = [patient(), *recorded]
    return _judged(code, [(f"{r['resourceType']}/{r['id']}", r) for r in resources]).verdict


@pytest.mark.parametrize("required, recorded, expected", [
    ("C34", [condition("254637007", SNOMED)], "met"),  # NSCLC: C34, wider
    ("C34.1", [condition("254637007", SNOMED)], "unknown"),  # C34 is less precise
    ("C78.7", [condition("94381002", SNOMED)], "met"),  # secondary, liver
    ("D05", [condition("109889007", SNOMED)], "met"),  # DCIS: in situ
    ("C50", [condition("breast", CANCER_TYPE)], "met"),  # our own cancer types
    ("C18-C20", [condition("colorectal", CANCER_TYPE)], "unknown"),  # narrower only: unplaced
    # A diagnosis no map places (kidney: C64 or C65) keeps another from proving C65 absent.
    ("C65", [condition("C34.1"), condition("363518003", SNOMED, id="c2")], "unknown"),
    ("C65", [condition("C34.1")], "not-met"),
    # A SNOMED concept the map does not hold is not read, as before.
    ("C50", [condition("38341003", SNOMED)], "unknown"),
])
def test_translated_diagnoses(required: str, recorded: list[dict[str, Any]], expected: str) -> None:
    assert _verdict(required, *recorded) == expected


def test_icd10_present_wins_over_the_map() -> None:
    both = {**condition("C50.9"), "code": {"coding": [
        {"system": ICD10, "code": "C50.9"}, {"system": SNOMED, "code": "363406005"}]}}
    found = _judged("C18", [(f"Patient/p", patient()), ("Condition/c1", both)])
    assert (found.verdict, found.evidence) == ("not-met", ("Condition/c1",))


def test_cancer_type_evidence_cites_its_map() -> None:
    resources = [patient(), condition("lung", CANCER_TYPE)]
    found = _judged("C34", [(f"{r['resourceType']}/{r['id']}", r) for r in resources])
    assert found.evidence == ("Condition/c1", CANCER_TYPE_MAP)


@pytest.fixture(scope="module")
def colon_world(tmp_path_factory: pytest.TempPathFactory, signing_keys: bytes) -> Iterator[World]:
    """A catalogue of a colon cancer trial and a breast cancer one (SQLite: the store is not
    what is tested here)."""
    with served("sqlite", tmp_path_factory.mktemp("colon"), signing_keys) as client:
        for resource in (location("paris", position=(48.8566, 2.3522)),
                         group("colon-criteria", criterion("condition", coded(ICD10, "C18"), text="Colon cancer")),
                         study("colon", "phase-2", [site("paris", "recruiting", RECENT)]),
                         group("breast-criteria", criterion("condition", coded(ICD10, "C50"), text="Breast cancer")),
                         study("breast", "phase-2", [site("paris", "recruiting", RECENT)])):
            response = send(client, "PUT", f"/fhir/{resource['resourceType']}/{resource['id']}", resource)
            assert response.status_code == 201, response.text
        yield World(client)


def test_match_reads_a_synthea_record(colon_world: World) -> None:
    [path] = glob.glob(str(SYNTHEA / "Florentino_Mertz_*.json"))
    synthea = orjson.loads(Path(path).read_bytes())
    profile = {"resourceType": "Bundle", "type": "collection",
               "entry": [{"fullUrl": e["fullUrl"], "resource": e["resource"]} for e in synthea["entry"]
                         if e["resource"]["resourceType"] in ("Patient", "Condition", "Observation")]}
    response = colon_world.match({"name": "bundle", "resource": profile},
                                 {"name": "recruiting-only", "valueBoolean": False})
    assert response.status_code == 200, response.text
    listed = [e for e in response.json()["entry"] if e["search"]["mode"] == "match"]
    # The breast cancer trial is ineligible (the record's colon cancer, placed in C18): last.
    assert [e["resource"]["id"] for e in listed] == ["colon", "breast"]
    result = listed[0]["search"]["extension"][0]
    [explained] = [p for p in result["extension"] if p["url"] == "criterion"]
    parts = {p["url"]: p for p in explained["extension"]}
    assert parts["verdict"]["valueCoding"]["code"] == "met"
    assert [p["valueReference"]["reference"] for p in explained["extension"] if p["url"] == "evidence"] == [
        "urn:uuid:75d91058-909f-4abb-9f0a-0e07be42f82e", SNOMED_MAP]
