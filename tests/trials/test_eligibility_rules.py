"""Decision tables of the eligibility engine, one per criterion type (docs/matching.md): each
row is a criterion, a record and the verdict expected — boundaries, hierarchy, units, and
absent data (always `unknown`, never `not-met`)."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.trials.eligibility import evaluate, read_trial
from tests.trials.eligibility_builders import (ATC, HGNC, ICD10, ICDO3, LOINC, between, coded,
                                               condition, criterion, group, medication, members,
                                               observation, patient, procedure, quantity, record,
                                               variant)

GENDER = "http://hl7.org/fhir/administrative-gender"
SNOMED = "http://snomed.info/sct"
VER_STATUS = "http://terminology.hl7.org/CodeSystem/condition-ver-status"


def verdict(characteristic: dict[str, Any], *resources: dict[str, Any],
            contained: tuple[dict[str, Any], ...] = ()) -> str:
    trial = read_trial("s", [group("g", characteristic, contained=contained)])
    return evaluate(trial, record(*resources)).criteria[0].verdict


ADULT = criterion("age", quantity(18, ">=", "a"))
UNDER_75 = criterion("age", between(18, 75, "a"))


@pytest.mark.parametrize("rule, birth, expected", [
    (ADULT, "2008-12-06", "met"),  # 18 today
    (ADULT, "2008-12-07", "not-met"),  # 18 tomorrow
    (ADULT, "2008", "unknown"),  # 17 or 18: the year alone does not tell
    (ADULT, "2000", "met"),
    (ADULT, "2008-11", "met"),
    (ADULT, "2008-12", "unknown"),
    (UNDER_75, "1951-12-06", "met"),  # 75 today: a Range is inclusive
    (UNDER_75, "1950-12-06", "not-met"),  # 76
    (ADULT, None, "unknown"),
    (ADULT, "soon", "unknown"),
    (criterion("age", quantity(216, ">=", "mo")), "2008-12-06", "met"),  # months convert
])
def test_age(rule: dict[str, Any], birth: str | None, expected: str) -> None:
    assert verdict(rule, patient(birth=birth)) == expected


@pytest.mark.parametrize("gender, exclude, expected", [
    ("female", False, "met"), ("male", False, "not-met"), (None, False, "unknown"),
    ("unknown", False, "unknown"), ("female", True, "not-met"), ("male", True, "met"),
])
def test_sex(gender: str | None, exclude: bool, expected: str) -> None:
    rule = criterion("sex", coded(GENDER, "female"), exclude=exclude)
    assert verdict(rule, patient(gender=gender)) == expected


BREAST = criterion("condition", coded(ICD10, "C50"))


@pytest.mark.parametrize("rule, recorded, expected", [
    (BREAST, [condition("C50.4")], "met"),  # hierarchy: C50 covers C50.4
    (BREAST, [condition("C504")], "met"),
    (BREAST, [condition("C34.1")], "not-met"),  # another diagnosis recorded
    (BREAST, [condition("C50.4", verificationStatus={"coding": [{"system": VER_STATUS, "code": "refuted"}]})], "unknown"),
    (BREAST, [], "unknown"),  # no diagnosis recorded
    (BREAST, [condition("254837009", SNOMED)], "met"),  # placed in C50 by our SNOMED CT map
    (BREAST, [condition("38341003", SNOMED)], "unknown"),  # a concept no map holds: not read
    # A recorded C50 is less precise than a required C50.4: open, not refuted.
    (criterion("condition", coded(ICD10, "C50.4")), [condition("C50")], "unknown"),
    (criterion("condition", coded(ICD10, "C50.4")), [condition("C50.1")], "not-met"),
    (criterion("condition", coded(ICD10, "C00-C14")), [condition("C10.2")], "met"),  # a block
    (criterion("condition", coded(ICD10, "C00-C14")), [condition("C15")], "not-met"),
    # An exclusion is never proven absent by other diagnoses.
    (criterion("condition", coded(ICD10, "C79.3"), exclude=True), [condition("C50.4")], "unknown"),
    (criterion("condition", coded(ICD10, "C79.3"), exclude=True),
     [condition("C50.4"), condition("C79.31", id="c2")], "not-met"),
    (criterion("condition", coded(SNOMED, "254837009")), [condition("C50.4")], "unknown"),
])
def test_condition(rule: dict[str, Any], recorded: list[dict[str, Any]], expected: str) -> None:
    assert verdict(rule, patient(), *recorded) == expected


@pytest.mark.parametrize("rule, recorded, expected", [
    (criterion("morphology", coded(ICDO3, "8500/3")), condition("8500/3", ICDO3), "met"),
    (criterion("morphology", coded(ICDO3, "850")), condition("8502/3", ICDO3), "met"),
    (criterion("morphology", coded(ICDO3, "8500")), condition("8140/3", ICDO3), "unknown"),
    (criterion("topography", coded(ICDO3, "C50")),
     condition("8500/3", ICDO3, bodySite=[{"coding": [{"system": ICDO3, "code": "C50.9"}]}]), "met"),
    (criterion("topography", coded(ICDO3, "C34")), condition("C50.9", ICDO3), "unknown"),
    (criterion("morphology", coded(ICD10, "8500/3")), condition("8500/3", ICDO3), "unknown"),
])
def test_icdo3(rule: dict[str, Any], recorded: dict[str, Any], expected: str) -> None:
    assert verdict(rule, patient(), recorded) == expected


M_CLINICAL = "21907-1"


@pytest.mark.parametrize("flag, exclude, recorded, expected", [
    (True, False, [condition("C78.0")], "met"),
    (True, False, [observation(M_CLINICAL, {"valueCodeableConcept": {"text": "cM1b"}})], "met"),
    (True, False, [observation(M_CLINICAL, {"valueCodeableConcept": {"text": "cM0"}})], "not-met"),
    (True, False, [observation("21908-9", {"valueCodeableConcept": {"text": "Stage IV"}})], "met"),
    (True, False, [condition("C50.4")], "unknown"),
    (False, False, [observation(M_CLINICAL, {"valueCodeableConcept": {"text": "M0"}})], "met"),
    (True, True, [condition("8500/6", ICDO3)], "not-met"),
    (True, True, [], "unknown"),
])
def test_metastasis(flag: bool, exclude: bool, recorded: list[dict[str, Any]], expected: str) -> None:
    rule = criterion("metastasis", {"valueBoolean": flag}, exclude=exclude)
    assert verdict(rule, patient(), *recorded) == expected


def _category(text: str) -> dict[str, Any]:
    return {"valueCodeableConcept": {"text": text}}


@pytest.mark.parametrize("kind, threshold, comparator, loinc, value, expected", [
    ("tnm-t", "T2", "ge", "21905-5", "cT2a", "met"),  # no subdivision: T2a is T2
    ("tnm-t", "T2", "ge", "21899-0", "pT1c", "not-met"),
    ("tnm-t", "T2", "eq", "21905-5", "T2b", "met"),
    ("tnm-t", "T2b", "ge", "21905-5", "T2a", "not-met"),
    ("tnm-t", "T1", "gt", "21905-5", "Tis", "not-met"),  # T0 < Tis < T1
    ("tnm-t", "T0", "gt", "21905-5", "Tis", "met"),
    ("tnm-t", "T2", "ge", "21905-5", "TX", "unknown"),
    ("tnm-n", "N1", "le", "21906-3", "N0(i+)", "met"),
    ("tnm-n", "N1", "le", "21906-3", "N3a", "not-met"),
    ("tnm-m", "M0", "eq", "21907-1", "M1a", "not-met"),
    ("stage", "III", "ge", "21908-9", "IIIB", "met"),
    ("stage", "III", "ge", "21908-9", "Stage 2A", "not-met"),
    ("stage", "IIIB", "le", "21902-2", "IIIA", "met"),
    ("stage", "IV", "eq", "21908-9", "IV", "met"),
    ("tnm-t", "T2a", "ge", "21905-5", "T2", "unknown"),  # T2 recorded: T2a or T2b, left open
    ("tnm-t", "T2a", "ge", "21905-5", "T3", "met"),
    ("stage", "IIIA", "le", "21908-9", "III", "unknown"),
])
def test_ordered(kind: str, threshold: str, comparator: str, loinc: str, value: str, expected: str) -> None:
    rule = criterion(kind, {"valueCodeableConcept": {"text": threshold}}, comparator=comparator)
    assert verdict(rule, patient(), observation(loinc, _category(value))) == expected
    assert verdict(rule, patient()) == "unknown"


HER2 = "48676-1"
CEA = "2039-6"
POSITIVE, NEGATIVE = "LA6576-8", "LA6577-6"


@pytest.mark.parametrize("rule, recorded, expected", [
    (criterion("biomarker", coded(LOINC, POSITIVE), measured=HER2), [observation(HER2, coded(LOINC, POSITIVE))], "met"),
    (criterion("biomarker", coded(LOINC, POSITIVE), measured=HER2), [observation(HER2, coded(LOINC, NEGATIVE))], "not-met"),
    (criterion("biomarker", coded(LOINC, POSITIVE), measured=HER2), [], "unknown"),
    # the latest result counts
    (criterion("biomarker", coded(LOINC, POSITIVE), measured=HER2),
     [observation(HER2, coded(LOINC, NEGATIVE), when="2025-01-01"),
      observation(HER2, coded(LOINC, POSITIVE), id="o2", when="2026-01-01")], "met"),
    # a cancelled result does not count
    (criterion("biomarker", coded(LOINC, POSITIVE), measured=HER2),
     [observation(HER2, coded(LOINC, POSITIVE), status="entered-in-error")], "unknown"),
    (criterion("biomarker", coded(LOINC, POSITIVE), measured=HER2), [observation(HER2, quantity(3))], "unknown"),
    # units: 0.5 mg/dL is 5 mg/L
    (criterion("biomarker", quantity(10, "<", "mg/L"), measured=CEA), [observation(CEA, quantity(0.5, unit="mg/dL"))], "met"),
    (criterion("biomarker", quantity(10, "<", "mg/L"), measured=CEA), [observation(CEA, quantity(2, unit="mg/dL"))], "not-met"),
    (criterion("biomarker", quantity(10, "<", "mg/L"), measured=CEA), [observation(CEA, quantity(2, unit="mmol/L"))], "unknown"),
    (criterion("biomarker", quantity(10, "<=", "mg/L"), measured=CEA), [observation(CEA, quantity(10, unit="mg/L"))], "met"),
    (criterion("biomarker", quantity(10, "<", "mg/L"), measured=CEA), [observation(CEA, quantity(10, unit="mg/L"))], "not-met"),
    # a recorded "< 20" may or may not be under 10
    (criterion("biomarker", quantity(10, "<", "mg/L"), measured=CEA), [observation(CEA, quantity(20, "<", "mg/L"))], "unknown"),
    (criterion("biomarker", between(1, 50, "%"), measured="85319-2"), [observation("85319-2", quantity(0.3, unit="1"))], "met"),
    (criterion("biomarker", quantity(10, "<", "mg/L"), measured=CEA), [observation(CEA, quantity(2, "ad", "mg/L"))], "unknown"),
])
def test_biomarker(rule: dict[str, Any], recorded: list[dict[str, Any]], expected: str) -> None:
    assert verdict(rule, patient(), *recorded) == expected


ECOG = "89247-1"


@pytest.mark.parametrize("rule, value, expected", [
    (criterion("ecog", between(0, 1), measured=ECOG), {"valueInteger": 1}, "met"),
    (criterion("ecog", between(0, 1), measured=ECOG), {"valueInteger": 2}, "not-met"),
    (criterion("ecog", between(0, 1), measured=ECOG), coded(LOINC, "LA9623-5"), "met"),  # grade 1
    (criterion("ecog", quantity(2, "<=")), coded(LOINC, "LA9625-0"), "not-met"),  # grade 3
    (criterion("ecog", coded(LOINC, "LA9622-7")), coded("https://oncotrials.example.org/fhir/CodeSystem/ecog-performance-status", "0"), "met"),
    (criterion("ecog", between(0, 1), measured=ECOG), None, "unknown"),
    (criterion("ecog", between(0, 1), measured=ECOG), {"valueString": "fit"}, "unknown"),
])
def test_ecog(rule: dict[str, Any], value: dict[str, Any] | None, expected: str) -> None:
    recorded = [observation(ECOG, value)] if value is not None else []
    assert verdict(rule, patient(), *recorded) == expected


EGFR = "HGNC:3236"


@pytest.mark.parametrize("recorded, expected", [
    ([variant(EGFR, True)], "met"),
    ([variant(EGFR, False)], "not-met"),
    ([variant("HGNC:1097", True)], "unknown"),  # BRAF tested, EGFR not
    ([], "unknown"),
    ([variant(EGFR, False, when="2025-01-01"), variant(EGFR, True, id="v2", when="2026-01-01")], "met"),
])
def test_gene(recorded: list[dict[str, Any]], expected: str) -> None:
    assert verdict(criterion("gene", coded(HGNC, EGFR)), patient(), *recorded) == expected


@pytest.mark.parametrize("rule, recorded, expected", [
    (criterion("prior-treatment", coded(ATC, "L01XE")), [medication("L01XE03", "2025-01-01")], "met"),
    (criterion("prior-treatment", coded(ATC, "L01XE")), [medication("L01BC06", "2025-01-01")], "unknown"),
    (criterion("prior-treatment", coded(ATC, "L01XE"), exclude=True), [medication("L01XE03", "2025-01-01")], "not-met"),
    # "no prior EGFR inhibitor": the record never proves a treatment was not given
    (criterion("prior-treatment", coded(ATC, "L01XE"), exclude=True), [], "unknown"),
    (criterion("prior-treatment", coded(ATC, "L01XE")), [medication("L01XE03", "2025-01-01", status="entered-in-error")], "unknown"),
    (criterion("prior-treatment", coded(SNOMED, "387713003")), [procedure(SNOMED, "387713003")], "met"),
    (criterion("prior-treatment", coded("urn:oid:1.2.3", "X")), [procedure("urn:oid:1.2.3", "X")], "unknown"),
])
def test_prior_treatment(rule: dict[str, Any], recorded: list[dict[str, Any]], expected: str) -> None:
    assert verdict(rule, patient(), *recorded) == expected


TWO_LINES = [medication("L01BC06", "2024-01-01"), medication("L01XE03", "2025-03-01", id="m2"),
             medication("L01BC06", "2024-01-01", id="m3")]  # same start: one line


@pytest.mark.parametrize("rule, recorded, expected", [
    (criterion("treatment-lines", quantity(1, ">=", "{lines}")), TWO_LINES, "met"),
    (criterion("treatment-lines", quantity(2, ">=", "{lines}")), TWO_LINES, "met"),
    (criterion("treatment-lines", quantity(3, ">=", "{lines}")), TWO_LINES, "unknown"),
    (criterion("treatment-lines", quantity(2, "<", "{lines}")), TWO_LINES, "not-met"),
    (criterion("treatment-lines", quantity(3, "<=", "{lines}")), TWO_LINES, "unknown"),  # more may exist
    (criterion("treatment-lines", quantity(0, ">=", "{lines}")), [], "met"),
])
def test_treatment_lines(rule: dict[str, Any], recorded: list[dict[str, Any]], expected: str) -> None:
    assert verdict(rule, patient(), *recorded) == expected


def test_free_text_is_never_evaluated() -> None:
    rule = criterion("free-text", {"valueBoolean": True}, text="Adequate organ function")
    trial = read_trial("s", [group("g", rule)])
    result = evaluate(trial, record(patient())).criteria[0]
    assert (result.verdict, result.text) == ("unknown", "Adequate organ function")
    assert "person" in (result.missing or "")


HER2_POS = criterion("biomarker", coded(LOINC, POSITIVE), measured=HER2)
STAGE_IV = criterion("stage", {"valueCodeableConcept": {"text": "IV"}}, comparator="eq")
FEMALE = criterion("sex", coded(GENDER, "female"))


@pytest.mark.parametrize("minimum, gender, recorded, expected", [
    (1, None, [observation(HER2, coded(LOINC, POSITIVE))], "met"),  # any of
    (1, None, [observation(HER2, coded(LOINC, NEGATIVE))], "unknown"),  # sex and stage open
    (1, "male", [observation(HER2, coded(LOINC, NEGATIVE)), observation("21908-9", _category("II"), id="o2")], "not-met"),
    (2, "female", [observation(HER2, coded(LOINC, POSITIVE))], "met"),
    (3, "female", [observation(HER2, coded(LOINC, POSITIVE)), observation("21908-9", _category("II"), id="o2")], "not-met"),
    (3, "female", [observation(HER2, coded(LOINC, POSITIVE))], "unknown"),
])
def test_at_least(minimum: int, gender: str | None, recorded: list[dict[str, Any]], expected: str) -> None:
    rule = criterion("at-least", {"valueReference": {"reference": "#any"}}, minimum=minimum)
    contained = (members("any", HER2_POS, STAGE_IV, FEMALE),)
    assert verdict(rule, patient(gender=gender), *recorded, contained=contained) == expected


def test_only_if_makes_a_criterion_not_applicable() -> None:
    """"Women: a negative pregnancy test" does not apply to a man, and is open for a woman
    without a test."""
    hcg = criterion("biomarker", coded(LOINC, NEGATIVE), measured="2106-3", only_if="women")
    contained = (members("women", FEMALE),)
    assert verdict(hcg, patient(gender="male"), contained=contained) == "not-applicable"
    assert verdict(hcg, patient(gender="female"), contained=contained) == "unknown"
    assert verdict(hcg, patient(gender=None), contained=contained) == "unknown"
    assert verdict(hcg, patient(gender=None), observation("2106-3", coded(LOINC, NEGATIVE)),
                   contained=contained) == "met"


@pytest.mark.parametrize("characteristic", [
    {"code": {"text": "no type"}, "valueBoolean": True},
    criterion("blood-type", coded(LOINC, "x")),
    criterion("age", quantity(18, ">=", "kg")),
    criterion("biomarker", coded(LOINC, POSITIVE)),  # no LOINC test named
    criterion("at-least", {"valueReference": {"reference": "#missing"}}),
    criterion("tnm-t", quantity(2)),
    criterion("condition", between(1, 2)),
    criterion("age", {"valueQuantity": {"unit": "a"}}),  # no value
    criterion("age", {"valueQuantity": {"value": 18, "comparator": "ad", "code": "a"}}),
])
def test_unsupported_criteria_are_unknown_with_a_warning(characteristic: dict[str, Any]) -> None:
    trial = read_trial("s", [group("g", characteristic)])
    result = evaluate(trial, record(patient(), condition("C50.4"), observation(HER2, coded(LOINC, POSITIVE))))
    assert result.criteria[0].verdict == "unknown"
    assert result.criteria[0].warnings()
    assert result.verdict == "undetermined"


def test_overall_verdict_score_and_evidence_pinned() -> None:
    trial = read_trial("s", [group("g", FEMALE, BREAST, HER2_POS,
                                   criterion("ecog", between(0, 1), measured=ECOG))])
    p = patient()
    result = evaluate(trial, record(p, condition("C50.4"), observation(HER2, coded(LOINC, POSITIVE))))
    assert (result.verdict, result.score) == ("undetermined", 0.75)
    assert [c.verdict for c in result.criteria] == ["met", "met", "met", "unknown"]
    assert result.criteria[1].evidence == ("Condition/c1/_history/2",)
    assert result.criteria[2].evidence == ("Observation/o1/_history/3",)
    assert result.criteria[3].missing and "89247-1" in result.criteria[3].missing
    eligible = evaluate(trial, record(p, condition("C50.4"), observation(HER2, coded(LOINC, POSITIVE)),
                                      observation(ECOG, {"valueInteger": 0}, id="o2")))
    assert (eligible.verdict, eligible.score) == ("eligible", 1.0)
    ineligible = evaluate(trial, record(patient(gender="male"), condition("C50.4")))
    assert (ineligible.verdict, ineligible.score) == ("ineligible", 0.0)


def test_a_trial_without_computable_criteria_is_never_eligible() -> None:
    result = evaluate(read_trial("s", []), record(patient(), condition("C50.4")))
    assert (result.verdict, result.score, result.criteria) == ("undetermined", 0.0, ())

