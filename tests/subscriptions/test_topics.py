"""The shipped SubscriptionTopics (profiles/topics/) and their listing in the
CapabilityStatement (Backport IG 1.1.0, capabilitystatement-subscriptiontopic-canonical)."""

from __future__ import annotations

from fhir_server.model.platform_codes import MESSAGE_SYSTEM
from fhir_server.search import default_registry
from fhir_server.services.capabilities import capability_statement
from fhir_server.subscriptions.topics import topics

BASE = "https://oncotrials.example.org/fhir/SubscriptionTopic"


def _message(code: str) -> dict[str, object]:
    return {"resourceType": "Communication", "status": "completed",
            "category": [{"coding": [{"system": MESSAGE_SYSTEM, "code": code}]}]}


def test_each_topic_fires_on_its_interactions_and_criteria_only() -> None:
    shipped = topics()
    received, answered = shipped[f"{BASE}/referral-received"], shipped[f"{BASE}/referral-answered"]
    assert received.triggered("create", _message("referral"))
    assert not received.triggered("create", _message("answer"))
    assert not received.triggered("update", _message("referral"))
    assert answered.triggered("create", _message("answer"))
    consent = shipped[f"{BASE}/consent-changed"]
    assert all(consent.triggered(i, {"resourceType": "Consent"}) for i in ("create", "update"))
    assert consent.triggered("delete", None)
    patient = shipped[f"{BASE}/patient-updated"]
    assert patient.triggered("update", {"resourceType": "Patient"})
    assert not patient.triggered("create", {"resourceType": "Patient"})
    trials = shipped[f"{BASE}/trial-matching"]
    assert trials.triggered("create", {"resourceType": "ResearchStudy", "status": "active"})
    assert not trials.triggered("create", {"resourceType": "ResearchStudy", "status": "closed-to-accrual"})
    assert {t.resource_type for t in shipped.values()} == {"Communication", "Consent", "Patient",
                                                           "ResearchStudy"}


def test_the_capability_statement_lists_every_topic_on_subscription() -> None:
    statement = capability_statement(default_registry(), "http://testserver/fhir",
                                     conditional_delete_multiple=False)
    [entry] = [r for r in statement["rest"][0]["resource"] if r["type"] == "Subscription"]
    listed = {e["valueCanonical"] for e in entry["extension"]}
    assert listed == set(topics()) and len(listed) == 5
