"""How many trials `$match` lists (match.py MOST_LISTED, the server's page size): a count
past what the server lists is cut, and the answer says so and by how much one may raise it."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tests.trials.match_world import World, world  # noqa: F401  (fixture)

PATIENT = {"name": "patient", "valueReference": {"reference": "Patient/alice"}}


def _told(bundle: dict) -> str:
    [outcome] = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    return " ".join(i["diagnostics"] for i in outcome["issue"])


def test_a_count_past_what_the_server_lists_is_cut_and_the_answer_says_so(world: World) -> None:
    app = world.client.app
    kept = app.state.context  # type: ignore[attr-defined]
    app.state.context = dataclasses.replace(kept, max_page_size=2)  # type: ignore[attr-defined]
    try:
        bundle = world.match(PATIENT, {"name": "count", "valueInteger": 100}).json()
    finally:
        app.state.context = kept  # type: ignore[attr-defined]
    listed = [e for e in bundle["entry"] if e["search"]["mode"] == "match"]
    assert len(listed) == 2 and bundle["total"] == 5
    told = _told(bundle)
    assert "'count' 100 is more than this server lists: 2 at most." in told
    assert "raise 'count', up to 2, to see them" in told


def test_no_answer_lists_more_than_the_most_listed(world: World) -> None:
    from fhir_server.trials import match

    bundle = world.match(PATIENT, {"name": "count", "valueInteger": 5000}).json()
    assert f"'count' 5000 is more than this server lists: {match.MOST_LISTED} at most." in _told(bundle)


@pytest.mark.parametrize("count", [{"valuePositiveInt": 0}, {"valueInteger": 2**31},
                                   {"valuePositiveInt": 10**12}])
def test_a_count_out_of_its_types_range_is_a_400_naming_count(world: World, count: dict[str, Any]) -> None:
    """A count out of its FHIR type's range is a 400 naming 'count', as 0 as valueInteger is
    (not the Parameters validation's 422 naming only a path)."""
    response = world.match(PATIENT, {"name": "count", **count})
    assert response.status_code == 400, response.text
    assert "'count'" in response.json()["issue"][0]["diagnostics"]
