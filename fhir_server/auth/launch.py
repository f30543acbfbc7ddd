"""The context an app is launched in (SMART App Launch 2.2, "Launch context arrives with your
access_token"): the patient, and for an EHR launch the encounter, the resources the EHR opens
the app on (`fhirContext`, e.g. the referral a physician is reading) and whether the app must
show a patient banner. The EHR registers it (POST /auth/launch); it travels with the login,
the code and the refresh token, and comes back in the token response.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..model.types import is_resource_type, is_valid_id

MAX_FHIR_CONTEXT = 10
_MAX_ROLE = 256


@dataclass(frozen=True, slots=True)
class LaunchContext:
    patient: str
    encounter: str | None = None
    # Each {"reference": "Type/id"}, with a `role` (an absolute URI) when the EHR gives one.
    fhir_context: tuple[dict[str, str], ...] = ()
    # Standalone launches and EHRs that do not say: the app shows who the record is about.
    need_patient_banner: bool = True

    def as_dict(self) -> dict[str, Any]:
        """For the stored login, code and refresh token (JSON)."""
        return {"patient": self.patient, "encounter": self.encounter,
                "fhirContext": list(self.fhir_context),
                "need_patient_banner": self.need_patient_banner}

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> LaunchContext | None:
        """The context kept in a stored record, if any (records made before encounters and
        fhirContext existed name only `launch_patient`)."""
        launch = data.get("launch")
        if isinstance(launch, dict):
            return cls(launch["patient"], launch.get("encounter"),
                       tuple(launch.get("fhirContext") or ()),
                       bool(launch.get("need_patient_banner", True)))
        legacy = data.get("launch_patient")
        return cls(legacy) if isinstance(legacy, str) else None

    def token_fields(self, scopes: list[str]) -> dict[str, Any]:
        """What the token response adds for this context, given the granted scopes (the
        patient itself is added by the caller)."""
        fields: dict[str, Any] = {"need_patient_banner": self.need_patient_banner}
        if self.encounter and "launch/encounter" in scopes:
            fields["encounter"] = self.encounter
        if self.fhir_context and "launch" in scopes:
            fields["fhirContext"] = list(self.fhir_context)
        return fields


def parse_launch(body: Any) -> LaunchContext:
    """The context an EHR's launch request names; ValueError says what is wrong."""
    if not isinstance(body, dict):
        raise ValueError('Send {"patient": "<Patient id>"}.')
    patient = body.get("patient")
    if not isinstance(patient, str) or not is_valid_id(patient):
        raise ValueError('Send {"patient": "<Patient id>"}.')
    encounter = body.get("encounter")
    if encounter is not None and (not isinstance(encounter, str) or not is_valid_id(encounter)):
        raise ValueError("encounter must be an Encounter id.")
    banner = body.get("need_patient_banner", True)
    if not isinstance(banner, bool):
        raise ValueError("need_patient_banner must be true or false.")
    return LaunchContext(patient, encounter, _fhir_context(body.get("fhirContext", [])), banner)


def _fhir_context(items: Any) -> tuple[dict[str, str], ...]:
    if not isinstance(items, list) or len(items) > MAX_FHIR_CONTEXT:
        raise ValueError(f"fhirContext must be a list of at most {MAX_FHIR_CONTEXT} objects.")
    parsed = []
    for item in items:
        reference = item.get("reference") if isinstance(item, dict) else None
        kind, _, id = reference.partition("/") if isinstance(reference, str) else ("", "", "")
        if not is_resource_type(kind) or not is_valid_id(id):
            raise ValueError('Each fhirContext item is {"reference": "<Type>/<id>"}.')
        entry = {"reference": f"{kind}/{id}"}
        role = item.get("role")
        if role is not None:
            if not isinstance(role, str) or "://" not in role or len(role) > _MAX_ROLE:
                raise ValueError("A fhirContext role is an absolute URI.")
            entry["role"] = role
        if set(item) - {"reference", "role"}:
            raise ValueError("fhirContext items take reference and role only.")
        parsed.append(entry)
    return tuple(parsed)
