"""Sites and distances for $match (docs/matching.md, "Sites and distance"): the offline
gazetteer against known city pairs, the nearest *recruiting* site (closed and stale sites
ignored), sites without coordinates placed by their postal code."""

from __future__ import annotations

from datetime import date

import pytest

from fhir_server.search import distance_km
from fhir_server.trials.gazetteer import department, parse_location, place
from fhir_server.trials.catalogue_sites import RECRUITMENT_STATUS, RECRUITMENT_SYSTEM, REVIEW_DATE, Recorded
from fhir_server.trials.match_sites import Site, nearest, position, sites
from tests.trials.match_world import location, site

TODAY = date(2026, 12, 6)


@pytest.mark.parametrize("a, b, km", [
    ("75001", "69001", 392),  # Paris - Lyon
    ("75001", "13001", 661),  # Paris - Marseille
    ("59000", "75001", 204),  # Lille - Paris
    ("33000", "31000", 212),  # Bordeaux - Toulouse
    ("67000", "44000", 718),  # Strasbourg - Nantes
])
def test_known_city_pairs(a: str, b: str, km: float) -> None:
    here, there = place(a), place(b)
    assert here is not None and there is not None
    assert distance_km(*here, *there) == pytest.approx(km, rel=0.03)


@pytest.mark.parametrize("postal, expected", [
    ("33000", "33"), ("20000", "2A"), ("20200", "2B"), ("97400", "974"), ("2A000", None),
    ("7500", None), ("750011", None),
])
def test_departments(postal: str, expected: str | None) -> None:
    assert department(postal) == expected


def test_every_metropolitan_department_is_placed_in_france() -> None:
    for number in [*range(1, 20), *range(21, 96)]:
        found = place(f"{number:02d}100")
        assert found is not None, number
        assert 41 < found[0] < 51.5 and -5.5 < found[1] < 10, number
    assert place("98000") is None  # Monaco is not a French department


@pytest.mark.parametrize("text", ["Paris", "99999", "91,0", "45,200", "", "45.1;3"])
def test_bad_locations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_location(text)


def test_nearest_recruiting_site_ignores_closed_and_stale_ones() -> None:
    locations = {"Location/near": location("near", position=(48.85, 2.35)),
                 "Location/mid": location("mid", postal="45000"),  # Orléans, by postal code
                 "Location/far": location("far", position=(43.30, 5.37))}
    study = {"site": [site("near", "closed", "2026-12-01"), site("mid", "recruiting", "2026-06-01"),
                      site("far", "recruiting", "2026-11-30")]}
    found = sites(study, locations)
    paris = (48.8566, 2.3522)
    chosen, distance = nearest(found, paris, TODAY)
    # near is closed, mid's status is stale (more than 90 days): far is the nearest recruiting.
    assert chosen is not None and chosen.location == "Location/far"
    assert distance == pytest.approx(661, rel=0.03)
    fresh = (found[0], Site("Location/mid", Recorded("Location/mid", "recruiting", date(2026, 11, 1)),
                            found[1].point, True), found[2])
    chosen, distance = nearest(fresh, paris, TODAY)
    assert chosen is not None and chosen.location == "Location/mid" and chosen.geocoded
    assert distance == pytest.approx(111, rel=0.1)
    assert nearest(fresh, None, TODAY) == (fresh[2], None)  # no origin: no distance
    assert nearest(found[:1], paris, TODAY) == (None, None)


def test_position_wins_over_postal_code() -> None:
    assert position({"position": {"latitude": 1.5, "longitude": 2.5}, "address": {"postalCode": "75001"}}) == ((1.5, 2.5), False)
    assert position({"address": {"postalCode": "75001"}}) == ((48.86, 2.35), True)
    assert position({}) == (None, False)


def test_the_limit_of_staleness_is_the_settings_and_a_trials_own_status_counts() -> None:
    """One reader of site statuses (catalogue_sites.recorded): a site without its own status
    takes the trial's ECLAIRE recruitment status, confirmed at its review date."""
    locations = {"Location/a": location("a", position=(48.85, 2.35))}
    study = {"site": [{"reference": "Location/a"}], "extension": [
        {"url": RECRUITMENT_STATUS, "valueCodeableConcept": {"coding": [
            {"system": RECRUITMENT_SYSTEM, "code": "recruiting"}]}},
        {"url": REVIEW_DATE, "valueDateTime": "2026-10-01"}]}
    [only] = sites(study, locations)
    assert only.confirmed == "2026-10-01" and only.has_status
    assert nearest((only,), None, TODAY) == (only, None)  # 66 days: within 90
    assert nearest((only,), None, TODAY, max_age_days=30) == (None, None)
    [bare] = sites({"site": [{"reference": "Location/a"}]}, locations)
    assert not bare.has_status and nearest((bare,), None, TODAY) == (None, None)
