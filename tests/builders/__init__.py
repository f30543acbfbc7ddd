"""Resource builders for tests: small valid resources with the fields a test cares about."""

from __future__ import annotations

from typing import Any

INS_NIR = "urn:oid:1.2.250.1.213.1.4.8"


def patient(family: str = "Dupont", given: str = "Hélène", **extra: Any) -> dict[str, Any]:
    """A Patient with one official name."""
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "name": [{"use": "official", "family": family, "given": [given]}],
        "gender": "female",
        "birthDate": "1962-04-17",
    }
    resource.update(extra)
    return resource


def identified_patient(nir: str, **extra: Any) -> dict[str, Any]:
    """A Patient carrying a French INS-NIR identifier (`nir`: 15 characters with its key)."""
    return patient(identifier=[{"use": "official", "system": INS_NIR, "value": nir}], **extra)


def observation(subject: str, value: Any = 64.5, **extra: Any) -> dict[str, Any]:
    """A body-weight Observation about `subject` ("Patient/<id>")."""
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"reference": subject},
        "valueQuantity": {"value": value, "unit": "kg", "system": "http://unitsofmeasure.org",
                          "code": "kg"},
    }
    resource.update(extra)
    return resource


LOINC = "http://loinc.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"


def condition(subject: str, code: str = "C50.9", **extra: Any) -> dict[str, Any]:
    """An ICD-10 coded Condition (default C50.9, breast cancer) about `subject` ("Patient/<id>")."""
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "code": {"coding": [{"system": ICD10, "code": code}]},
        "subject": {"reference": subject},
    }
    resource.update(extra)
    return resource


def organization(name: str = "CHU de Bordeaux", **extra: Any) -> dict[str, Any]:
    """An Organization with a name."""
    resource: dict[str, Any] = {"resourceType": "Organization", "name": name}
    resource.update(extra)
    return resource


def lab_observation(subject: str, code: str, when: str, value: float, unit: str, **extra: Any) -> dict[str, Any]:
    """A LOINC-coded laboratory Observation about `subject`, effective at `when`."""
    return observation(
        subject,
        code={"coding": [{"system": LOINC, "code": code}]},
        effectiveDateTime=when,
        valueQuantity={"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
        **extra,
    )


CONSENT_SCOPES = "http://terminology.hl7.org/CodeSystem/consentscope"


def consent(patient: str, scope: str = "patient-privacy", *, actor: str | None = None,
            type: str = "permit", start: str = "2020-01-01", end: str | None = None,
            status: str = "active", deny: list[dict[str, Any]] | None = None,
            evidence: bool = True) -> dict[str, Any]:
    """A Consent of Patient/`patient`: `scope` patient-privacy (naming `actor`, a referring
    physician) or research (sharing with investigators); `deny` adds nested provisions."""
    provision: dict[str, Any] = {"type": type, "period": {"start": start, **({"end": end} if end else {})}}
    if actor:
        provision["actor"] = [{"role": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]},
            "reference": {"reference": actor}}]
    if deny:
        provision["provision"] = deny
    body: dict[str, Any] = {
        "resourceType": "Consent", "status": status,
        "scope": {"coding": [{"system": CONSENT_SCOPES, "code": scope}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient}"},
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                   "code": "OPTIN" if type == "permit" else "OPTOUT"}]},
        "provision": provision,
    }
    if evidence:
        body["sourceAttachment"] = {"contentType": "application/pdf", "title": "Signed form"}
    return body


def deny_provision(actor: str | None = None, start: str = "2020-01-01") -> dict[str, Any]:
    """A nested deny provision (for `actor`, or for everyone)."""
    provision: dict[str, Any] = {"type": "deny", "period": {"start": start}}
    if actor:
        provision["actor"] = [{"role": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]},
            "reference": {"reference": actor}}]
    return provision
