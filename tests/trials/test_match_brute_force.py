"""`$match` against a brute-force evaluator (docs/matching.md): for random anonymous profiles
and parameters, the trials listed, their order, verdicts, scores and distances are what
evaluating every trial of the catalogue one by one and filtering gives; the ineligible last,
the ones the trial index prunes after those it evaluates."""

from __future__ import annotations

import math
from datetime import date, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_server import clock
from fhir_server.search import distance_km
from fhir_server.trials.eligibility import RANK, TrialIndex, evaluate, read_record, read_trial
from fhir_server.trials.gazetteer import parse_location, place
from tests.trials.eligibility_builders import ICD10, LOINC, coded, condition, group, observation, patient
from tests.trials.match_world import CRITERIA, HER2, LOCATIONS, STUDIES, World, world  # noqa: F401

# ICD-10, and SNOMED CT-only diagnoses read through our map: breast cancer (C50), NSCLC (C34),
# primary colon cancer (C18), kidney (unplaced: C64 or C65).
CODES = ["C50.4", "C50", "C34.1", "C79.3", "C18.7", "254837009", "254637007", "93761005", "363518003"]
SNOMED = "http://snomed.info/sct"
ORIGINS = [None, "75001", "69003", "33000", "44.84,-0.58"]


def _point(name: str) -> tuple[float, float] | None:
    found = next(loc for loc in LOCATIONS if loc["id"] == name)
    if "position" in found:
        return found["position"]["latitude"], found["position"]["longitude"]
    return place(found["address"]["postalCode"])


def _nearest(study: dict[str, Any], origin: tuple[float, float] | None, today: date) -> tuple[str | None, float | None, bool]:
    """(nearest recruiting site, its distance, whether any site has a status)."""
    open_sites = []
    for s in study["site"]:
        status = {e["url"]: e for e in s["extension"][0]["extension"]}
        confirmed = date.fromisoformat(status["confirmed"]["valueDateTime"])
        if status["status"]["valueCode"] == "recruiting" and today - confirmed <= timedelta(days=90):
            open_sites.append(s["reference"])
    if not open_sites:
        return None, None, True
    if origin is None:
        return min(open_sites), None, True
    distance, name = min((distance_km(*origin, *_point(r.split("/")[1])), r) for r in open_sites)  # type: ignore[misc]
    return name, round(distance, 1), True


def brute_force(resources: list[dict[str, Any]], origin_text: str | None, radius: float | None,
                phase: str | None, recruiting_only: bool) -> list[tuple[str, str, float, float | None]]:
    today = clock.now().date()
    record = read_record([(f"urn:uuid:{n}", r) for n, r in enumerate(resources)], today)
    origin = parse_location(origin_text) if origin_text else None
    trials = {study["id"]: read_trial(study["id"], [group(f"{study['id']}-criteria", *CRITERIA[study["id"]])])
              for study in STUDIES}
    _, pruned = TrialIndex(trials.values()).candidates(record)
    rows = []
    for study in STUDIES:
        if recruiting_only and (study["status"] != "active" or "extension" in study):  # "done"
            continue
        if phase and study["phase"]["coding"][0]["code"] != phase:
            continue
        result = evaluate(trials[study["id"]], record)
        site, distance, _ = _nearest(study, origin, today)
        if recruiting_only and site is None:
            continue
        if radius is not None and (distance is None or distance > radius):
            continue
        rows.append((RANK[result.verdict], -result.score, study["id"] in pruned,
                     distance if distance is not None else math.inf, study["id"], result.verdict, result.score, distance))
    return [(r[4], r[5], r[6], r[7]) for r in sorted(rows)]


profiles = st.tuples(
    st.lists(st.sampled_from(CODES), max_size=2, unique=True),
    st.sampled_from([None, "female", "male"]),
    st.sampled_from([None, "1950-03-01", "2015-01-01"]),
    st.sampled_from([None, "LA6576-8", "LA6577-6"]),
    st.one_of(st.none(), st.integers(0, 4)),
)
parameters = st.tuples(st.sampled_from(ORIGINS), st.sampled_from([None, 50.0, 500.0]),
                       st.sampled_from([None, "phase-1", "phase-2"]), st.booleans())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(profiles, parameters)
def test_match_agrees_with_brute_force(world: World, profile: Any, drawn: Any) -> None:
    codes, gender, birth, her2, ecog = profile
    origin, radius, phase, recruiting_only = drawn
    if radius is not None and origin is None:
        radius = None  # a radius needs a place (422 otherwise: test_match_operation.py)
    resources: list[dict[str, Any]] = [{k: v for k, v in patient(birth=birth, gender=gender).items()
                                        if k not in ("id", "meta")}]
    resources += [condition(code, SNOMED if code[0].isdigit() else ICD10, id=f"c{n}")
                  for n, code in enumerate(codes)]
    if her2:
        resources.append(observation(HER2, coded(LOINC, her2), id="h"))
    if ecog is not None:
        resources.append(observation("89247-1", {"valueInteger": ecog}, id="e"))
    for resource in resources[1:]:
        resource["subject"] = {"reference": "urn:uuid:0"}
        resource.pop("meta")
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"fullUrl": f"urn:uuid:{n}", "resource": r} for n, r in enumerate(resources)]}
    sent = [{"name": "bundle", "resource": bundle}, {"name": "recruiting-only", "valueBoolean": recruiting_only}]
    if origin:
        sent.append({"name": "location", "valueString": origin})
    if radius:
        sent.append({"name": "radius", "valueDecimal": radius})
    if phase:
        sent.append({"name": "phase", "valueCode": phase})
    response = world.match(*sent)
    assert response.status_code == 200, response.text
    listed = []
    for entry in response.json()["entry"]:
        if entry["search"]["mode"] != "match":
            continue
        parts = {p["url"]: p for p in entry["search"]["extension"][0]["extension"]}
        # R4 match-grade follows the verdict
        assert entry["search"]["extension"][1]["valueCode"] == {
            "eligible": "probable", "undetermined": "possible", "ineligible": "certainly-not"}[
            parts["verdict"]["valueCoding"]["code"]]
        distance = parts["distance"]["valueQuantity"]["value"] if "distance" in parts else None
        listed.append((entry["resource"]["id"], parts["verdict"]["valueCoding"]["code"],
                       entry["search"]["score"], distance))
    assert listed == brute_force(resources, origin, radius, phase, recruiting_only)
