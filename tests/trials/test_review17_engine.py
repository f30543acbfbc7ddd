"""Issue 17 §3/§4 review of the engine (trials/eligibility_rules.py, routed to its owner):
a code in a system the engine holds no rule for, or a result it cannot read, must give
`unknown` (with a warning for the criterion's own codes), never `met` nor `not-met`. Each test
fails today."""

from __future__ import annotations

from typing import Any

from fhir_server.trials.eligibility import evaluate, read_trial
from tests.trials.eligibility_builders import (ICD10, LOINC, coded, condition, criterion, group,
                                               observation, patient, record)

LOCAL = "urn:oid:1.2.3.4.5"
HER2 = "48676-1"


def _judged(characteristic: dict[str, Any], *resources: dict[str, Any]) -> tuple[str, str, str | None]:
    trial = read_trial("s", [group("g", characteristic)])
    result = evaluate(trial, record(patient(), *resources))
    [found] = result.criteria
    return result.verdict, found.verdict, found.warning


def test_a_diagnosis_criterion_partly_in_an_unknown_system_is_not_refuted() -> None:
    # "Breast cancer" coded ICD-10 C50 and in a local system; the patient's diagnoses: an ICD-10
    # lung cancer and the local code itself. Today: not-met (ineligible), no warning: the local
    # code is dropped and the closed-world rule refutes on ICD-10 alone.
    either = criterion("condition", {"valueCodeableConcept": {"coding": [
        {"system": ICD10, "code": "C50"}, {"system": LOCAL, "code": "X1"}]}})
    trial, verdict, warning = _judged(either, condition("C34"), condition("X1", system=LOCAL, id="c2"))
    assert verdict != "not-met" and trial != "ineligible"
    assert warning and LOCAL in warning


def test_a_biomarker_criterion_coded_in_an_unknown_system_is_never_met() -> None:
    # Today: met, code for code, in a system the engine has no rule for.
    local = criterion("biomarker", coded(LOCAL, "POS"), measured=HER2)
    _, verdict, warning = _judged(local, observation(HER2, coded(LOCAL, "POS")))
    assert verdict == "unknown" and warning and LOCAL in warning


def test_a_biomarker_result_the_engine_cannot_read_is_unknown_not_refuted() -> None:
    positive = criterion("biomarker", coded(LOINC, "LA6576-8"), measured=HER2)
    # Today: not-met for a result written as text, or coded in a local system.
    for value in ({"valueCodeableConcept": {"text": "positive"}}, coded(LOCAL, "NEG")):
        trial, verdict, _ = _judged(positive, observation(HER2, value))
        assert (trial, verdict) == ("undetermined", "unknown"), value
    # A LOINC answer that differs is read: negative refutes positive.
    assert _judged(positive, observation(HER2, coded(LOINC, "LA6577-6")))[1] == "not-met"
