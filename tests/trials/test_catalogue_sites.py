"""Per-site recruiting status and its confirmation date (trials/catalogue_sites.py): the
site's own status, the trial's as a default, staleness as unknown."""

from __future__ import annotations

from datetime import date

from fhir_server.trials.catalogue_sites import SiteStatus, site_statuses, with_site_status
from tests.trials.eclaire import example_unit

TODAY = date(2024, 7, 1)
SITE_0, SITE_1 = "Location/2022-500014-26-00-site-0", "Location/2022-500014-26-00-site-1"


def test_a_site_without_its_own_status_takes_the_trials_confirmed_at_its_review_date() -> None:
    study = example_unit()[0]  # recruiting, reviewed 2024-05-31
    assert site_statuses(study, today=TODAY) == [
        SiteStatus(SITE_0, "recruiting", date(2024, 5, 31), False),
        SiteStatus(SITE_1, "recruiting", date(2024, 5, 31), False)]


def test_an_eclaire_trial_completed_recruiting_has_its_sites_closed() -> None:
    study = example_unit()[0]
    study["extension"][6]["valueCodeableConcept"]["coding"][0]["code"] = "completed-recruiting"
    assert {s.status for s in site_statuses(study, today=TODAY)} == {"closed"}


def test_a_sites_own_status_wins_and_replaces_an_earlier_one() -> None:
    study = with_site_status(example_unit()[0], SITE_1, "recruiting", date(2024, 1, 1))
    study = with_site_status(study, SITE_1, "closed", date(2024, 6, 20))
    assert site_statuses(study, today=TODAY)[1] == SiteStatus(
        SITE_1, "closed", date(2024, 6, 20), False)
    assert len(study["site"][1]["extension"]) == 1


def test_a_status_older_than_the_limit_or_never_confirmed_is_unknown() -> None:
    study = with_site_status(example_unit()[0], SITE_0, "recruiting", date(2024, 4, 2))
    assert site_statuses(study, today=TODAY, max_age_days=90)[0].status == "recruiting"  # 90 days
    assert site_statuses(study, today=date(2024, 7, 2), max_age_days=90)[0] == SiteStatus(
        SITE_0, "unknown", date(2024, 4, 2), True)
    study["extension"] = [e for e in study["extension"] if not e["url"].endswith("review-date")]
    assert site_statuses(study, today=TODAY)[1] == SiteStatus(SITE_1, "unknown", None, True)


def test_a_site_status_is_valid_on_an_eclaire_study() -> None:
    from fhir_server.model.validation import Validator
    study = with_site_status(example_unit()[0], SITE_0, "recruiting", date(2024, 4, 1))
    # the IG example has no narrative: dom-6, a best-practice warning, is all there is
    assert [(i.severity, i.diagnostics.split(":")[0]) for i in Validator(use_models=True).outcome(study)] == [
        ("warning", "Invariant dom-6 failed")]
