"""The engine's shortcuts against brute force (docs/matching.md, "Pruning" and "Sharing"): on
generated catalogues whose trials share criteria (worded differently, at other positions,
inside at-least groups and only-if conditions), judging each criterion once per record and
pruning by the index give exactly what evaluating every trial alone on a fresh record gives."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_server.trials.eligibility import INELIGIBLE, TrialIndex, evaluate, read_trial, verdict
from fhir_server.trials.eligibility_codes import Interval
from fhir_server.trials.eligibility_format import Criterion
from tests.trials.eligibility_builders import (ATC, ICD10, LOINC, between, coded, condition, criterion,
                                               group, medication, members, observation, patient,
                                               quantity, record)

GENDER = "http://hl7.org/fhir/administrative-gender"
HER2, POSITIVE, NEGATIVE = "48676-1", "LA6576-8", "LA6577-6"
WORDS = st.sampled_from(["Adults", "Inclusion", "Critère", None])

leaves = st.one_of(
    st.builds(lambda code, x, t: criterion("condition", coded(ICD10, code), exclude=x, text=t),
              st.sampled_from(["C50", "C50.4", "C34", "C18-C20", "C79.3"]), st.booleans(), WORDS),
    st.builds(lambda g, x, t: criterion("sex", coded(GENDER, g), exclude=x, text=t),
              st.sampled_from(["female", "male"]), st.booleans(), WORDS),
    st.builds(lambda low, t: criterion("age", quantity(low, ">=", "a"), text=t), st.sampled_from([18, 40, 65]), WORDS),
    st.builds(lambda high, t: criterion("ecog", between(0, high), measured="89247-1", text=t), st.integers(0, 2), WORDS),
    st.builds(lambda stage, op, t: criterion("stage", {"valueCodeableConcept": {"text": stage}}, comparator=op, text=t),
              st.sampled_from(["II", "III", "IV"]), st.sampled_from(["ge", "le", "eq"]), WORDS),
    st.builds(lambda answer, t: criterion("biomarker", coded(LOINC, answer), measured=HER2, text=t),
              st.sampled_from([POSITIVE, NEGATIVE]), WORDS),
    st.builds(lambda x, t: criterion("prior-treatment", coded(ATC, "L01XA"), exclude=x, text=t), st.booleans(), WORDS),
    st.builds(lambda flag, t: criterion("metastasis", {"valueBoolean": flag}, text=t), st.booleans(), WORDS),
    st.just(criterion("free-text", {"valueBoolean": True})),
)


@st.composite
def trial_groups(draw: Any, n: int) -> dict[str, Any]:
    """A trial's Group: shared leaves, an at-least group, a criterion only for women."""
    characteristics = draw(st.lists(leaves, max_size=5))
    contained = [members("women", criterion("sex", coded(GENDER, "female")))]
    if draw(st.booleans()):
        contained.append(members("any", *draw(st.lists(leaves, min_size=1, max_size=3))))
        characteristics.append(criterion("at-least", {"valueReference": {"reference": "#any"}},
                                         minimum=draw(st.integers(1, 2))))
    if draw(st.booleans()):
        characteristics.append({**draw(leaves), "extension": [{
            "url": "https://oncotrials.example.org/fhir/StructureDefinition/eligibility-only-if",
            "valueReference": {"reference": "#women"}}]})
    return group(f"g{n}", *draw(st.permutations(characteristics)), contained=tuple(contained))


catalogues = st.integers(1, 12).flatmap(lambda size: st.tuples(*(trial_groups(n) for n in range(size))))
records = st.tuples(
    st.lists(st.sampled_from(["C50.4", "C50", "C34.1", "C19", "C79.3"]), max_size=2, unique=True),
    st.sampled_from([None, "female", "male"]),
    st.sampled_from([None, "1950", "1990-04-02"]),
    st.one_of(st.none(), st.integers(0, 3)),
    st.sampled_from([None, "IIA", "IV"]),
    st.sampled_from([None, POSITIVE, NEGATIVE]),
    st.booleans(),
)


def _resources(drawn: tuple[Any, ...]) -> list[dict[str, Any]]:
    codes, gender, birth, ecog, stage, her2, platinum = drawn
    resources = [patient(birth=birth, gender=gender), *(condition(c, id=f"c{n}") for n, c in enumerate(codes))]
    if ecog is not None:
        resources.append(observation("89247-1", {"valueInteger": ecog}, id="e"))
    if stage:
        resources.append(observation("21908-9", {"valueCodeableConcept": {"text": stage}}, id="s"))
    if her2:
        resources.append(observation(HER2, coded(LOINC, her2), id="h"))
    if platinum:
        resources.append(medication("L01XA01", "2025-01-10"))
    return resources


@settings(max_examples=300, deadline=None)
@given(catalogues, records)
def test_shared_and_pruned_paths_agree_with_brute_force(groups: tuple[dict[str, Any], ...], drawn: Any) -> None:
    trials = [read_trial(f"s{n:02d}", [g]) for n, g in enumerate(groups)]
    resources = _resources(drawn)
    brute = {t.study: evaluate(t, record(*resources)) for t in trials}  # a fresh record each time
    index = TrialIndex(trials)
    shared = record(*resources)  # one record for every trial: its judgements are shared

    found = index.verdicts(shared)
    assert found.pruned + len(found.found) == len(trials)
    assert [study for study, _, _ in found.found] == sorted(study for study, _, _ in found.found)
    for study, outcome, score in found.found:
        assert (outcome, score) == (brute[study].verdict, brute[study].score)
    pruned = set(brute) - {study for study, _, _ in found.found}
    assert all(brute[study].verdict == INELIGIBLE for study in pruned)
    assert pruned == set(index.candidates(shared)[1])
    # Unpruned, on the record already judged: the same verdicts, and the same explanations.
    for trial in trials:
        assert verdict(trial, shared) == (brute[trial.study].verdict, brute[trial.study].score)
    assert {r.study: r for r in index.match(shared).results} == {
        s: r for s, r in brute.items() if s not in pruned}


def test_the_rule_holds_every_field_but_the_wording() -> None:
    """Two criteria differing in anything but `key` and `text` never share a verdict."""
    base = Criterion("1", "age", "Adults")
    other = Criterion("2", "sex", "x")
    changed = {"kind": "ecog", "exclude": True, "codes": (("s", "c"),), "measured": (("s", "m"),),
               "interval": Interval(18), "unit": "a", "comparator": "ge", "flag": False,
               "members": (other,), "minimum": 2, "only_if": (other,), "problem": "unreadable"}
    names = {f.name for f in dataclasses.fields(Criterion)} - {"key", "text", "rule"}
    assert set(changed) == names
    for name, value in changed.items():
        assert dataclasses.replace(base, **{name: value}).rule != base.rule, name
    assert dataclasses.replace(base, key="7", text="Majeurs").rule == base.rule
    # Nested criteria count by their rule, not their wording.
    assert (dataclasses.replace(base, members=(other,)).rule
            == dataclasses.replace(base, members=(dataclasses.replace(other, key="9", text="y"),)).rule)
