"""The `eligibility-review` extension of drafted criteria is the server's
(services/platform_rules.py `check_review`): a client cannot forge an approval, and editing
approved criteria puts them back to draft, out of matching until a person approves again."""

from __future__ import annotations

from typing import Any

from fhir_server.auth.users import Users
from fhir_server.trials.criteria_review import REVIEW_URL, review
from tests.http.helpers import send
from tests.trials.match_world import World, world  # noqa: F401  (fixture)
from tests.trials.test_draft_criteria import _approve, _draft, _listed


def _with_review(group: dict[str, Any], *parts: dict[str, Any]) -> dict[str, Any]:
    others = [e for e in group["extension"] if e["url"] != REVIEW_URL]
    return {**group, "extension": [*others, {"url": REVIEW_URL, "extension": list(parts)}]}


def _put(world: World, group: dict[str, Any]) -> Any:
    return send(world.client, "PUT", f"/fhir/Group/{group['id']}", group, **world.headers("ehr"))


def _read(world: World, id: str) -> dict[str, Any]:
    return world.client.get(f"/fhir/Group/{id}", headers=world.headers("ehr")).json()


STUDY = {"url": "study", "valueReference": {"reference": "ResearchStudy/breast"}}


def test_a_system_client_cannot_forge_an_approval(world: World) -> None:
    before = _listed(world)
    group = _draft(world).json()
    forged = _with_review(group, {"url": "status", "valueCode": "approved"}, STUDY,
                          {"url": "by", "valueReference": {"reference": "Practitioner/curator"}},
                          {"url": "at", "valueDateTime": "2026-12-06T10:00:00Z"})
    r = _put(world, forged)
    assert r.status_code == 422, r.text
    assert "eligibility-review" in r.json()["issue"][0]["diagnostics"]
    assert _read(world, group["id"])["meta"]["versionId"] == group["meta"]["versionId"]  # untouched
    created = {k: v for k, v in forged.items() if k not in ("id", "meta")}
    r = send(world.client, "POST", "/fhir/Group", created, **world.headers("ehr"))
    assert r.status_code == 422, r.text
    assert _listed(world) == before


def test_editing_approved_criteria_puts_them_back_to_draft(world: World) -> None:
    Users(world.client.app.state.oauth.registry).add(  # type: ignore[attr-defined]
        "curator", "a long enough password", "Practitioner/curator", admin=True)
    before = _listed(world)
    group = _draft(world).json()
    assert _approve(world, group["id"]).status_code == 200
    approved = _read(world, group["id"])
    assert _listed(world) != before
    edited = {**approved, "characteristic": approved["characteristic"][:1]}
    r = _put(world, edited)  # still claiming the approval
    assert r.status_code == 422, r.text
    assert _read(world, group["id"])["meta"]["versionId"] == approved["meta"]["versionId"]
    r = _put(world, _with_review(edited, {"url": "status", "valueCode": "draft"}, STUDY))
    assert r.status_code == 200, r.text
    assert review(_read(world, group["id"]))["status"] == "draft"
    assert _listed(world) == before  # matching no longer reads it
    assert _approve(world, group["id"]).status_code == 200
    study = world.client.get("/fhir/ResearchStudy/breast", headers=world.headers("ehr")).json()
    assert [e["reference"] for e in study["enrollment"]].count(f"Group/{group['id']}") == 1
