"""Edges of `$match` and `$load` (docs/matching.md, docs/catalogue.md): a birth date in the
future, an unknown phase, the configured staleness limit in the outcome, GET on a POST-only
operation, and NDJSON given to `$load`."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest

from tests.http.helpers import send
from tests.trials.eclaire import example_unit
from tests.trials.match_world import World, world  # noqa: F401  (fixture)
from tests.trials.test_match_operation import PATIENT, _criteria, _matches, _outcome, _profile, _store_size

NOT_LISTED = {"name": "recruiting-only", "valueBoolean": False}


def test_a_profile_born_in_the_future_is_refused_naming_bundle(world: World) -> None:
    profile = _profile()
    profile["entry"][0]["resource"]["birthDate"] = "2999-01-01"
    before = _store_size(world)
    response = world.match({"name": "bundle", "resource": profile})
    assert response.status_code == 422, response.text
    assert "'bundle'" in response.json()["issue"][0]["diagnostics"]
    assert "birthDate" in response.json()["issue"][0]["diagnostics"]
    assert _store_size(world) == before


def test_a_stored_record_born_in_the_future_leaves_age_unknown(world: World) -> None:
    alice = world.client.get("/fhir/Patient/alice").json()
    future = {**alice, "birthDate": "2999-01-01"}
    assert send(world.client, "PUT", "/fhir/Patient/alice", future).status_code == 200
    try:
        bundle = world.match(PATIENT, NOT_LISTED).json()
    finally:
        assert send(world.client, "PUT", "/fhir/Patient/alice", alice).status_code == 200
    [breast] = [e for e in _matches(bundle) if e["resource"]["id"] == "breast"]  # still listed
    age = _criteria(breast)["18 years or older"]
    assert age["verdict"][0]["code"] == "unknown"
    assert age["missing"] == ["Patient.birthDate"]
    assert "in the future" in age["warning"][0]


@pytest.mark.parametrize("phase", ["phase-9", "phase-2,nonsense"])
def test_an_unknown_phase_is_refused_naming_phase(world: World, phase: str) -> None:
    response = world.match(PATIENT, {"name": "phase", "valueCode": phase})
    assert response.status_code == 400, response.text
    assert "'phase'" in response.json()["issue"][0]["diagnostics"]


def test_an_eclaire_phase_code_is_known(world: World) -> None:
    response = world.match(PATIENT, {"name": "phase", "valueCode": "phase-2"})
    assert response.status_code == 200, response.text


def test_the_stale_site_warning_names_the_configured_limit(world: World) -> None:
    state = world.client.app.state  # type: ignore[attr-defined]
    configured = state.context
    state.context = dataclasses.replace(configured, site_status_max_age_days=30)
    try:
        warnings = _outcome(world.match(PATIENT, NOT_LISTED).json())
    finally:
        state.context = configured
    assert any("confirmed in the last 30 days" in w for w in warnings), warnings
    assert not any("90 days" in w for w in warnings)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
@pytest.mark.parametrize("path", ["ResearchStudy/$match?patient=Patient/alice", "ResearchStudy/her2/$match",
                                  "ResearchStudy/$load"])
def test_the_trial_operations_are_post_only(world: World, method: str, path: str) -> None:
    response = world.client.request(method, f"/fhir/{path}", headers=world.headers("ehr"))
    assert response.status_code == 405, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert response.headers["Allow"] == "POST"


def _ndjson(resources: list[dict[str, Any]]) -> bytes:
    return b"\n".join(orjson.dumps(r) for r in resources) + b"\n"


def test_load_takes_ndjson(world: World) -> None:
    headers = {**world.headers("ehr"), "Content-Type": "application/fhir+ndjson"}
    unit = example_unit("2023-500001-01-00")
    response = world.client.post("/fhir/ResearchStudy/$load", content=_ndjson(unit), headers=headers)
    assert response.status_code == 200, response.text
    counts = {p["name"]: p["valueInteger"] for p in response.json()["parameter"]}
    assert counts == {"created": 6, "updated": 0, "unchanged": 0}
    again = world.client.post("/fhir/ResearchStudy/$load", content=_ndjson(unit), headers=headers)
    assert {p["name"]: p["valueInteger"] for p in again.json()["parameter"]}["unchanged"] == 6


@pytest.mark.parametrize("body", [b'{"resourceType": "Group"\n', b'[1, 2]\n',
                                  b'"a string"\n'])
def test_bad_ndjson_is_refused_naming_the_line_and_nothing_is_stored(world: World, body: bytes) -> None:
    headers = {**world.headers("ehr"), "Content-Type": "application/fhir+ndjson"}
    good = orjson.dumps(example_unit("2023-500002-01-00")[1]) + b"\n"
    response = world.client.post("/fhir/ResearchStudy/$load", content=good + body, headers=headers)
    assert response.status_code == 400, response.text
    assert "line 2" in response.json()["issue"][0]["diagnostics"]
    assert world.client.get("/fhir/Group/2023-500002-01-00-enrollment-group",
                            headers=world.headers("ehr")).status_code == 404
