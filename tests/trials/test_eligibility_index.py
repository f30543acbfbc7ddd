"""The trial index against brute force (docs/matching.md, "Pruning"): for random trials and
records, matching through the index gives, for every trial it evaluates, what evaluating that
trial alone gives; every trial it prunes is ineligible when evaluated; the ranking is
deterministic."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from fhir_server.trials.eligibility import TrialIndex, evaluate, read_trial
from tests.trials.eligibility_builders import (ICD10, between, coded, condition, criterion, group,
                                               observation, patient, quantity, record)

GENDER = "http://hl7.org/fhir/administrative-gender"
SNOMED = "http://snomed.info/sct"
CODES = ["C50", "C50.4", "C50.9", "C34", "C34.1", "C18.7", "C00-C14", "C10.2", "C79.3", "D05", "C65"]
# SNOMED CT-only diagnoses, read through our map (test_diagnosis_maps.py): breast cancer (C50),
# NSCLC (C34, wider), brain secondaries (C79.3), DCIS (D05.1), kidney (unplaced: C64 or C65).
RECORDED = ["C50.4", "C50", "C34.1", "C18.7", "C10.2", "C79.31", "D05.1",
            "254837009", "254637007", "94225005", "109889007", "363518003"]

diagnoses = st.builds(lambda code, exclude: criterion("condition", coded(ICD10, code), exclude=exclude),
                      st.sampled_from(CODES), st.booleans())
others = st.one_of(
    st.builds(lambda g, x: criterion("sex", coded(GENDER, g), exclude=x),
              st.sampled_from(["female", "male"]), st.booleans()),
    st.builds(lambda low: criterion("age", quantity(low, ">=", "a")), st.integers(10, 80)),
    st.builds(lambda high: criterion("ecog", between(0, high), measured="89247-1"), st.integers(0, 4)),
)
trials = st.lists(st.lists(st.one_of(diagnoses, others), max_size=5), min_size=1, max_size=25)
records = st.tuples(
    st.lists(st.sampled_from(RECORDED), max_size=3, unique=True),
    st.sampled_from([None, "female", "male"]),
    st.one_of(st.none(), st.integers(0, 5)),
    st.sampled_from([None, "1950", "1990-04-02", "2010-01-01"]),
)


def _record(drawn: tuple[list[str], str | None, int | None, str | None]) -> Any:
    codes, gender, ecog, birth = drawn
    resources: list[dict[str, Any]] = [patient(birth=birth, gender=gender)]
    resources += [condition(code, SNOMED if code[0].isdigit() else ICD10, id=f"c{n}")
                  for n, code in enumerate(codes)]
    if ecog is not None:
        resources.append(observation("89247-1", {"valueInteger": ecog}))
    return record(*resources)


@settings(max_examples=300, deadline=None)
@given(trials, records)
# A recorded C50 against a required C50.4 is open, so never pruned.
@example([[criterion("condition", coded(ICD10, "C50.4"))]], (["C50"], None, None, None))
# A diagnosis the map cannot place keeps every trial open.
@example([[criterion("condition", coded(ICD10, "C65"))]], (["C34.1", "363518003"], None, None, None))
def test_index_agrees_with_brute_force(drawn_trials: list[list[dict[str, Any]]], drawn: Any) -> None:
    catalogue = [read_trial(f"s{n:02d}", [group(f"g{n}", *criteria)])
                 for n, criteria in enumerate(drawn_trials)]
    patient_record = _record(drawn)
    brute = {t.study: evaluate(t, patient_record) for t in catalogue}

    found = TrialIndex(reversed(catalogue)).match(patient_record)

    assert {r.study for r in found.results} | set(found.pruned) == set(brute)
    assert not {r.study for r in found.results} & set(found.pruned)
    for result in found.results:
        assert result == brute[result.study]
    for study in found.pruned:
        assert brute[study].verdict == "ineligible"
    assert [r.rank for r in found.results] == sorted(r.rank for r in found.results)
    assert TrialIndex(catalogue).match(patient_record) == found


def test_pruning_skips_other_diagnoses() -> None:
    breast = [read_trial(f"b{n}", [group("g", criterion("condition", coded(ICD10, "C50")))]) for n in range(3)]
    lung = [read_trial(f"l{n}", [group("g", criterion("condition", coded(ICD10, "C34")))]) for n in range(2)]
    found = TrialIndex([*breast, *lung]).match(record(patient(), condition("C50.4")))
    assert [r.study for r in found.results] == ["b0", "b1", "b2"]
    assert found.pruned == ("l0", "l1")
    assert found.evaluated == 3
    # Without a recorded diagnosis nothing is proven: every trial is evaluated.
    assert TrialIndex([*breast, *lung]).match(record(patient())).pruned == ()
