"""`$match`'s ranking of a large catalogue (trials/match.py `rank`, docs/matching.md §4): the
trials the index prunes rank last and are neither judged nor explained unless `count`
reaches them, and then only the ones listed. Evaluations are counted, not timed."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest

from fhir_server.access import Decision
from fhir_server.trials import match, match_sites
from fhir_server.trials.catalogue_sites import Recorded
from fhir_server.trials.eligibility import TrialIndex, read_trial
from fhir_server.trials.match_catalogue import Catalogue
from fhir_server.trials.match_parameters import MatchRequest
from fhir_server.trials.match_sites import Site
from tests.trials.eligibility_builders import ICD10, TODAY, coded, condition, criterion, group, patient, record

GENDER = "http://hl7.org/fhir/administrative-gender"
TRIALS = 10_000
BREAST = 100  # trials for breast cancer: 20 open to women, 80 to men only
OTHERS = ["C34", "C18", "C61", "C25", "C16", "C64", "C67", "C56"]


def _trial(n: int) -> tuple[str, dict[str, object]]:
    diagnosis = "C50" if n < BREAST else OTHERS[n % len(OTHERS)]
    sex = "female" if n < 20 or n >= BREAST else "male"
    return f"s{n:05d}", group(f"g{n}", criterion("condition", coded(ICD10, diagnosis)),
                              criterion("sex", coded(GENDER, sex)))


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    trials = [read_trial(study, [body]) for study, body in map(_trial, range(TRIALS))]
    studies = {t.study: {"resourceType": "ResearchStudy", "id": t.study, "status": "active"} for t in trials}
    return Catalogue(studies, {t.study: t for t in trials}, TrialIndex(trials), {s: () for s in studies}, 90)


@pytest.fixture
def judged(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Counter[str], Counter[str]]]:
    """(studies whose verdict was judged, studies explained), as `rank` calls the engine."""
    verdicts: Counter[str] = Counter()
    explained: Counter[str] = Counter()
    verdict, evaluate = match.verdict, match.evaluate
    monkeypatch.setattr(match, "verdict", lambda trial, r: verdicts.update([trial.study]) or verdict(trial, r))
    monkeypatch.setattr(match, "evaluate", lambda trial, r: explained.update([trial.study]) or evaluate(trial, r))
    yield verdicts, explained


def _rank(catalogue: Catalogue, count: int) -> match.Page:
    request = MatchRequest(None, None, None, None, frozenset(), True, count)
    woman = record(patient(gender="female"), condition("C50.4"))
    return match.rank(request, woman, catalogue, Decision(()), None, count)


def test_with_count_50_no_pruned_trial_is_judged_or_explained(
        catalogue: Catalogue, judged: tuple[Counter[str], Counter[str]]) -> None:
    verdicts, explained = judged
    page = _rank(catalogue, 50)
    # 20 eligible, then 30 of the 80 evaluated ineligible (by id); the 9,900 pruned not reached.
    assert [f.trial.study for f, _ in page.listed] == [f"s{n:05d}" for n in range(50)]
    assert [r.verdict for _, r in page.listed] == ["eligible"] * 20 + ["ineligible"] * 30
    assert set(verdicts) == {f"s{n:05d}" for n in range(BREAST)}  # once each, the index's candidates
    assert max(verdicts.values()) == 1
    assert set(explained) == {f"s{n:05d}" for n in range(50)} and max(explained.values()) == 1
    assert page.total == TRIALS
    assert (page.counts.evaluated, page.counts.pruned, page.counts.ineligible) == (BREAST, TRIALS - BREAST, 80)
    assert page.counts.ranked_ineligible == TRIALS - 20


def test_a_pruned_trial_is_explained_only_when_count_reaches_it(
        catalogue: Catalogue, judged: tuple[Counter[str], Counter[str]]) -> None:
    verdicts, explained = judged
    page = _rank(catalogue, 103)
    listed = [f.trial.study for f, _ in page.listed]
    # After the 100 evaluated, the first three pruned trials by id.
    assert listed == [f"s{n:05d}" for n in range(BREAST + 3)]
    assert set(verdicts) == {f"s{n:05d}" for n in range(BREAST)}  # pruned: never judged
    assert set(explained) == set(listed)
    pruned = page.listed[-1][1]
    assert (pruned.verdict, pruned.score) == ("ineligible", 0)
    [why] = [c for c in pruned.criteria if c.verdict == "not-met"]
    assert (why.kind, why.evidence) == ("condition", ("Condition/c1/_history/2",))


def test_distances_are_worked_out_for_the_trials_listed_or_ranked_by_them(
        catalogue: Catalogue, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every trial has two recruiting sites: the 9,900 pruned ones are counted by the site
    filters, but their distances (once 20,000 of them a call) are not needed: `count` 50
    stops within the 100 evaluated, whose distances rank them."""
    confirmed = TODAY - timedelta(days=1)
    sites = {s: tuple(Site(f"Location/{s}-{n}", Recorded(f"Location/{s}-{n}", "recruiting", confirmed),
                           (45.0 + n, 4.0)) for n in range(2)) for s in catalogue.studies}
    sited = dataclasses.replace(catalogue, sites=sites)
    distances = Counter[str]()
    measure = match_sites.distance_km
    monkeypatch.setattr(match_sites, "distance_km", lambda *a: distances.update(["km"]) or measure(*a))
    request = MatchRequest(None, None, None, None, frozenset(), True, 50)
    page = match.rank(request, record(patient(gender="female"), condition("C50.4")), sited,
                      Decision(()), (45.75, 4.85), 50)
    assert page.total == TRIALS and page.counts.ranked_ineligible == TRIALS - 20
    assert [f.distance for f, _ in page.listed][:2] == [71.4, 71.4]  # the first site, Lyon to 45.0, 4.0
    assert distances["km"] == 2 * BREAST
