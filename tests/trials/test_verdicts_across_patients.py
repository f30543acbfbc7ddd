"""Verdicts shared across patients (trials/eligibility_shared.py; docs/matching.md, "Twelfth
session") against each patient judged alone: on generated catalogues and patients drawn from
small pools of values (so that many share some), with their own ids and so their own
references and ties, `TrialIndex.verdicts` with one `Shared` for all of them gives what it
gives each record alone, and `evaluate` (evidence, missing elements) is left as it was. A key
left without a value its rule reads is caught."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fhir_server.trials import eligibility_shared
from fhir_server.trials.eligibility import Shared, TrialIndex, evaluate, read_trial
from tests.trials.eligibility_builders import (HGNC, ICD10, ICDO3, LOINC, coded, condition, criterion,
                                               group, medication, observation, patient, procedure,
                                               quantity, record, variant)
from tests.trials.test_shared_verdicts import HER2, NEGATIVE, POSITIVE, leaves, trial_groups

CANCER_TYPE = "https://oncotrials.example.org/fhir/CodeSystem/cancer-type"
BRCA1, ECOG, STAGE, TNM_M = "HGNC:1100", "89247-1", "21908-9", "21907-1"
DAYS = st.sampled_from(["2026-10-01", "2026-11-01"])  # equal days: the latest is chosen by reference

more_leaves = st.one_of(
    st.builds(lambda high, t: criterion("age", quantity(high, "<", "a"), text=t), st.sampled_from([50, 77]),
              st.sampled_from([None, "Under"])),
    st.builds(lambda code: criterion("morphology", coded(ICDO3, code)), st.sampled_from(["8500/3", "8140"])),
    st.builds(lambda m, op: criterion("tnm-m", {"valueCodeableConcept": {"text": m}}, comparator=op),
              st.sampled_from(["M0", "M1"]), st.sampled_from(["ge", "eq"])),
    st.builds(lambda low: criterion("biomarker", quantity(low, ">="), measured=HER2), st.sampled_from([1, 2])),
    st.builds(lambda x: criterion("gene", coded(HGNC, BRCA1), exclude=x), st.booleans()),
    st.builds(lambda n: criterion("treatment-lines", quantity(n, ">=")), st.sampled_from([1, 2])),
    st.builds(lambda grade: criterion("ecog", coded(LOINC, grade), measured=ECOG),
              st.sampled_from(["LA9622-7", "LA9623-5"])),
    st.builds(lambda code: criterion("condition", coded(ICD10, code)), st.sampled_from(["C18", "C65", "C50"])),
)


@st.composite
def other_groups(draw: Any, n: int) -> dict[str, Any]:
    return group(f"h{n}", *draw(st.lists(st.one_of(leaves, more_leaves), min_size=1, max_size=4)))


catalogues = st.integers(1, 8).flatmap(lambda size: st.tuples(
    *(st.one_of(trial_groups(n), other_groups(n)) for n in range(size))))

ecog_values = st.one_of(st.builds(lambda g: {"valueInteger": g}, st.integers(0, 2)),
                        st.builds(lambda g: quantity(g), st.integers(0, 2)),
                        st.sampled_from([coded(LOINC, "LA9622-7"), {"valueString": "fit"}]))
her2_values = st.one_of(st.sampled_from([coded(LOINC, POSITIVE), coded(LOINC, NEGATIVE), {"valueString": "+"}]),
                        st.builds(lambda v: quantity(v), st.sampled_from([0, 1, 3])))
observations = st.one_of(
    st.tuples(st.just(ECOG), ecog_values, DAYS),
    st.tuples(st.just(STAGE), st.builds(lambda t: {"valueCodeableConcept": {"text": t}},
                                        st.sampled_from(["IIA", "IV", "III", "stage?"])), DAYS),
    st.tuples(st.just(TNM_M), st.builds(lambda t: {"valueCodeableConcept": {"text": t}},
                                        st.sampled_from(["M0", "M1a"])), DAYS),
    st.tuples(st.just(HER2), her2_values, DAYS),
)
diagnoses = st.sampled_from([("C50.4", ICD10), ("C50", ICD10), ("C34.1", ICD10), ("C79.3", ICD10),
                             ("8500/3", ICDO3), ("8140/6", ICDO3), ("colorectal", CANCER_TYPE),
                             ("breast", CANCER_TYPE)])
patients = st.fixed_dictionaries({
    "birth": st.sampled_from([None, "1950", "1976-12-06", "1976-12-07", "1990-04", "2030-01-01", "19x0"]),
    "gender": st.sampled_from([None, "female", "male", "other", "unknown"]),
    "diagnoses": st.lists(diagnoses, max_size=2, unique=True),
    "observations": st.lists(st.tuples(observations, st.sampled_from("abc")), max_size=4),
    "variants": st.lists(st.tuples(st.booleans(), DAYS), max_size=2),
    "treatments": st.lists(st.tuples(st.sampled_from(["L01XA01", "L01BC02", "L02BA01"]),
                                     st.sampled_from(["2025-01-10", "2025-03-01"])), max_size=2),
    "surgery": st.booleans(),
})


def _resources(spec: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """A patient's resources; ids (so references, and which of two results of one day is the
    latest) are the patient's own."""
    resources = [patient(spec["birth"], spec["gender"], id=f"p{n}"),
                 *(condition(code, system, id=f"c{n}-{k}") for k, (code, system) in enumerate(spec["diagnoses"])),
                 *(observation(code, value, id=f"o{n}-{tie}{k}", when=when)
                   for k, ((code, value, when), tie) in enumerate(spec["observations"])),
                 *(variant(BRCA1, present, id=f"v{n}-{k}", when=when)
                   for k, (present, when) in enumerate(spec["variants"])),
                 *(medication(atc, start, id=f"m{n}-{k}") for k, (atc, start) in enumerate(spec["treatments"]))]
    return resources + ([procedure(ICD10, "0DTJ0ZZ", id=f"s{n}")] if spec["surgery"] else [])


def _agree(groups: tuple[dict[str, Any], ...], specs: list[dict[str, Any]]) -> None:
    trials = [read_trial(f"s{n:02d}", [g]) for n, g in enumerate(groups)]
    index, shared = TrialIndex(trials), Shared()
    for n, spec in enumerate(specs):
        resources = _resources(spec, n)
        alone = index.verdicts(record(*resources))
        judged = record(*resources)
        assert index.verdicts(judged, shared) == alone
        # The explained path on a record the shared path judged: evidence and missing unchanged.
        assert [evaluate(t, judged) for t in trials] == [evaluate(t, record(*resources)) for t in trials]


@settings(max_examples=200, deadline=None)
@given(catalogues, st.lists(patients, min_size=2, max_size=8))
def test_shared_verdicts_are_each_patients_own(groups: tuple[dict[str, Any], ...], specs: list[dict[str, Any]]) -> None:
    _agree(groups, specs)


def _no_grade(criterion: Any, record: Any) -> Any:
    return bool(record.observed((LOINC, ECOG)))  # an ECOG is recorded, its grade left out


def _no_value(criterion: Any, record: Any) -> Any:
    return bool(record.observed((LOINC, HER2)))  # a result is recorded, its value left out


@pytest.mark.parametrize(("rule", "incomplete"), [
    ("age", lambda criterion, record: record.patient is not None),  # the birth date left out
    ("ecog", _no_grade), ("biomarker", _no_value),
    ("condition", lambda criterion, record: len(record.conditions)),  # the codes left out
], ids=["age", "ecog", "biomarker", "condition"])
def test_a_key_leaving_out_a_value_its_rule_reads_is_caught(monkeypatch: pytest.MonkeyPatch, rule: str,
                                                            incomplete: Any) -> None:
    monkeypatch.setitem(eligibility_shared.READS, rule, (incomplete,))

    @settings(max_examples=500, deadline=None, database=None, phases=[Phase.generate],  # no shrinking
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(catalogues, st.lists(patients, min_size=2, max_size=8))
    def check(groups: tuple[dict[str, Any], ...], specs: list[dict[str, Any]]) -> None:
        _agree(groups, specs)

    with pytest.raises(AssertionError):
        check()
