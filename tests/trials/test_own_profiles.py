"""Our own profiles of the referral workflow (profiles/: referral Communication, research
Consent, trial ResearchSubject): what the workflow writes conforms to them, and what breaks
them is listed with its FHIRPath expression."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fhir_server.model.validation import Validator
from tests.http.helpers import send
from tests.trials.conftest import Platform

SD = "https://oncotrials.example.org/fhir/StructureDefinition"
REFERRAL, CONSENT, SUBJECT = (f"{SD}/referral-communication", f"{SD}/research-consent",
                              f"{SD}/trial-research-subject")


def _errors(resource: dict[str, Any], profile: str) -> set[tuple[str, tuple[str, ...]]]:
    return {(i.code, i.expression) for i in Validator(use_models=False).outcome(resource, [profile])
            if i.severity == "error"}


def _written(platform: Platform) -> dict[str, dict[str, Any]]:
    """A referral of the patient who shares their record, its ResearchSubject and Consent."""
    referred = platform.refer("shared")
    assert referred.status_code == 201, referred.text
    referral = referred.json()
    headers = platform.headers("physician")
    subject = platform.client.get(
        f"/fhir/ResearchSubject?identifier=https://oncotrials.example.org/fhir/referral|{referral['id']}",
        headers=headers).json()["entry"][0]["resource"]
    consent = platform.client.get(f"/fhir/{subject['consent']['reference']}", headers=headers).json()
    return {REFERRAL: referral, SUBJECT: subject, CONSENT: consent}


def test_what_the_referral_workflow_writes_conforms(platform: Platform) -> None:
    for profile, resource in _written(platform).items():
        assert _errors(resource, profile) == set(), profile
        checked = send(platform.client, "POST", f"/fhir/{resource['resourceType']}/$validate",
                       {"resourceType": "Parameters", "parameter": [
                           {"name": "resource", "resource": resource},
                           {"name": "profile", "valueUri": profile}]}, **platform.headers("physician"))
        assert checked.status_code == 200
        assert not [i for i in checked.json()["issue"] if i["severity"] == "error"], checked.text


@pytest.mark.parametrize(("profile", "change", "expected"), [
    (REFERRAL, lambda r: r.pop("about"), ("required", ("Communication.about",))),
    (REFERRAL, lambda r: r["category"][0]["coding"][0].update(code="answer"),
     ("value", ("Communication.category[0]",))),
    (REFERRAL, lambda r: r.update(subject={"reference": "Group/g1"}),
     ("structure", ("Communication.subject.reference",))),
    (REFERRAL, lambda r: r.pop("payload"), ("required", ("Communication.payload",))),
    (CONSENT, lambda r: r["scope"]["coding"][0].update(code="patient-privacy"),
     ("value", ("Consent.scope",))),
    (CONSENT, lambda r: [r.pop(k, None) for k in ("sourceAttachment", "sourceReference")],
     ("required", ("Consent.source",))),
    (SUBJECT, lambda r: r.pop("consent"), ("required", ("ResearchSubject.consent",))),
    (SUBJECT, lambda r: r.update(consent={"reference": "Patient/shared"}),
     ("structure", ("ResearchSubject.consent.reference",))),
    (SUBJECT, lambda r: r["identifier"][0].update(system="urn:other"),
     ("value", ("ResearchSubject.identifier[0]",))),
])
def test_what_breaks_them_is_listed(platform: Platform, profile: str, change: Any,
                                    expected: tuple[str, tuple[str, ...]]) -> None:
    resource = copy.deepcopy(_written(platform)[profile])
    change(resource)
    assert expected in _errors(resource, profile)
