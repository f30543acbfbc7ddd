"""`ResearchStudy/{id}/$draft-criteria` and `Group/{id}/$approve-criteria`
(trials/criteria_review.py, docs/matching.md "Drafting criteria"): a draft is never used for
matching until a person approves it; who may draft and approve; bad input."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.auth.users import Users
from fhir_server.trials.criteria_review import REVIEW_URL, review
from fhir_server.trials.drafting import CONFIDENCE_URL
from tests.http.helpers import send
from tests.trials.match_world import World, world  # noqa: F401  (fixture)

PATIENT = {"name": "patient", "valueReference": {"reference": "Patient/alice"}}
TEXT = "Inclusion criteria:\n- Adults 18 years or older\nExclusion criteria:\n- Women"


def _headers(world: World, who: str) -> dict[str, str]:
    if who != "admin":
        return world.headers(who)
    tokens = world.client.app.state.tokens  # type: ignore[attr-defined]
    return {"Authorization": "Bearer " + tokens.issue(subject="curator", client_id="portal", scope="user/*.cruds",
                                                      fhir_user="Practitioner/curator")["access_token"]}


def _draft(world: World, who: str = "ehr", study: str = "breast", text: str | None = TEXT) -> Any:
    body: dict[str, Any] = {"resourceType": "Parameters"}
    if text is not None:
        body["parameter"] = [{"name": "text", "valueString": text}]
    return send(world.client, "POST", f"/fhir/ResearchStudy/{study}/$draft-criteria", body, **_headers(world, who))


def _approve(world: World, group: str, who: str = "admin") -> Any:
    return send(world.client, "POST", f"/fhir/Group/{group}/$approve-criteria", **_headers(world, who))


def _listed(world: World) -> dict[str, str]:
    """Each trial $match lists for Alice, and its verdict (the ineligible ones are listed too)."""
    bundle = world.match(PATIENT).json()
    return {e["resource"]["id"]: next(p["valueCoding"]["code"] for p in e["search"]["extension"][0]["extension"]
                                      if p["url"] == "verdict")
            for e in bundle["entry"] if e["search"]["mode"] == "match"}


def test_a_draft_is_used_only_once_a_person_approves_it(world: World) -> None:
    Users(world.client.app.state.oauth.registry).add(  # type: ignore[attr-defined]
        "curator", "a long enough password", "Practitioner/curator", admin=True)
    before = _listed(world)
    assert before["breast"] == "eligible"
    response = _draft(world)
    assert response.status_code == 201, response.text
    group = response.json()
    assert review(group) == {"status": "draft", "study": {"reference": "ResearchStudy/breast"}}
    [age, women] = group["characteristic"]
    assert age["code"]["text"] == "Adults 18 years or older" and age["exclude"] is False
    assert women["code"]["text"] == "Women" and women["exclude"] is True
    assert {"url": CONFIDENCE_URL, "valueDecimal": 0.8} in women["extension"]
    study = world.client.get("/fhir/ResearchStudy/breast", headers=world.headers("ehr")).json()
    assert {"reference": f"Group/{group['id']}"} not in study["enrollment"]
    assert _listed(world) == before  # the draft is not read

    for who in ("ehr", "physician", "alice"):
        assert _approve(world, group["id"], who).status_code == 403, who
    approved = _approve(world, group["id"])
    assert approved.status_code == 200, approved.text
    parts = review(approved.json())
    assert parts["status"] == "approved" and parts["by"] == {"reference": "Practitioner/curator"} and parts["at"]
    study = world.client.get("/fhir/ResearchStudy/breast", headers=world.headers("ehr")).json()
    assert {"reference": f"Group/{group['id']}"} in study["enrollment"]
    assert _listed(world)["breast"] == "ineligible"  # Alice is a woman: now excluded
    assert _approve(world, group["id"]).status_code == 409


def test_only_curators_draft(world: World) -> None:
    for who in ("physician", "alice"):
        assert _draft(world, who).status_code == 403, who


@pytest.mark.parametrize(("study", "text", "status"), [
    ("no-such-study", TEXT, 404),
    ("breast", "   ", 400),
    ("breast", "", 422),  # not a FHIR string at all
    ("breast", None, 422),  # no text, and no ECLAIRE criteria to read
])
def test_bad_input(world: World, study: str, text: str | None, status: int) -> None:
    assert _draft(world, study=study, text=text).status_code == status


def test_only_drafts_are_approved(world: World) -> None:
    assert _approve(world, "her2-criteria").status_code == 404
    assert _approve(world, "no-such-group").status_code == 404
    assert REVIEW_URL.endswith("eligibility-review")
