"""What a patient's Consents delegate to a relative (access/delegation.py), on plain data:
deny by default, a deny in force wins, periods and status count."""

from __future__ import annotations

from typing import Any

from fhir_server.access.delegation import ACTION_SYSTEM, TYPE_SYSTEM, delegation
from tests.builders import consent, deny_provision

RELATIVE = "RelatedPerson/r"
TODAY = "2026-12-06"


def granting(types: list[str] | None, actions: list[str] | None, **options: Any) -> dict[str, Any]:
    body = consent("a", actor=RELATIVE, evidence=False, **options)
    body["id"] = "d"
    if types is not None:
        body["provision"]["class"] = [{"system": TYPE_SYSTEM, "code": t} for t in types]
    if actions is not None:
        body["provision"]["action"] = [{"coding": [{"system": ACTION_SYSTEM, "code": a}]} for a in actions]
    return body


def test_types_and_actions_are_what_is_listed() -> None:
    granted = delegation([granting(["Observation", "Appointment"], ["access", "correct"])], RELATIVE, TODAY)
    assert granted is not None and granted.consents == ("d",)
    assert granted.permits("search", "Observation") and granted.permits("create", "Appointment")
    assert granted.permits("read", "Patient")  # whom they act for
    assert not granted.permits("read", "Condition")
    assert not granted.permits("delete", "Observation")
    assert not granted.permits("create", "Patient")


def test_deny_by_default() -> None:
    nothing_listed = delegation([granting(None, None)], RELATIVE, TODAY)
    assert nothing_listed is not None
    assert not nothing_listed.permits("read", "Observation") and not nothing_listed.permits("read", "Patient")
    reads = delegation([granting(["Observation"], ["access"])], RELATIVE, TODAY)
    assert reads is not None and not reads.permits("update", "Observation")
    assert delegation([granting(["Observation"], ["access"])], "RelatedPerson/other", TODAY) is None


def test_consents_and_relatedpersons_are_never_written() -> None:
    granted = delegation([granting(["Consent", "RelatedPerson"], ["access", "correct"])], RELATIVE, TODAY)
    assert granted is not None and granted.permits("read", "Consent")
    assert not granted.permits("create", "Consent") and not granted.permits("update", "RelatedPerson")


def test_withdrawn_ended_or_denied_grants_nothing() -> None:
    assert delegation([granting(["Observation"], ["access"], status="inactive")], RELATIVE, TODAY) is None
    assert delegation([granting(["Observation"], ["access"], end="2026-12-05")], RELATIVE, TODAY) is None
    assert delegation([granting(["Observation"], ["access"], start="2026-12-07")], RELATIVE, TODAY) is None
    nested = granting(["Observation"], ["access"], deny=[deny_provision(RELATIVE)])
    assert delegation([nested], RELATIVE, TODAY) is None
    objection = {**consent("a", type="deny", evidence=False), "id": "o"}
    assert delegation([granting(["Observation"], ["access"]), objection], RELATIVE, TODAY) is None


def test_several_delegations_add_up() -> None:
    one = granting(["Observation"], ["access"])
    two = {**granting(["Appointment"], ["access", "correct"]), "id": "e"}
    granted = delegation([one, two], RELATIVE, TODAY)
    assert granted is not None and granted.types == {"Observation", "Appointment"}
    assert granted.consents == ("d", "e")
    # Each on its own: reading one type and writing another is not writing the first.
    assert granted.permits("create", "Appointment") and not granted.permits("create", "Observation")
