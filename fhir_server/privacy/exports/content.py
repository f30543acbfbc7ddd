"""What the human-readable exports show, taken from the resources of a record: rows of text
per section, in the reader's language. Renderers (pdf.py, tables.py) only lay them out."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ...model.errors import Kind, fail
from ...model.platform_codes import ANSWER, MESSAGE_SYSTEM, REFERRAL
from .labels import ACTIONS, DECISIONS, Language

Row = tuple[str, ...]
# Where each type keeps the date a reader knows it by (the first one present).
DATES = {
    "Observation": ("effectiveDateTime", "effectivePeriod.start", "effectiveInstant", "issued"),
    "Condition": ("onsetDateTime", "onsetPeriod.start", "recordedDate"),
    "Consent": ("dateTime", "provision.period.start"),
    "Communication": ("sent", "received"),
    "AuditEvent": ("recorded",),
    "Encounter": ("period.start",), "Procedure": ("performedDateTime", "performedPeriod.start"),
    "Immunization": ("occurrenceDateTime",), "MedicationRequest": ("authoredOn",),
    "DiagnosticReport": ("effectiveDateTime", "effectivePeriod.start", "issued"),
    "Claim": ("created",), "ExplanationOfBenefit": ("created",), "CarePlan": ("period.start",),
    "Goal": ("startDate",),
}


def parse_language(value: str | None) -> Language:
    """`fr` (default) or `en`; INVALID naming any other."""
    if value in (None, "fr"):
        return "fr"
    if value == "en":
        return "en"
    raise fail(Kind.INVALID, "not-supported", f"Language '{value}' is not offered: fr or en.",
               expression="language")


def _get(resource: Any, path: str) -> Any:
    for step in path.split("."):
        if isinstance(resource, list):
            resource = resource[0] if resource else None
        if not isinstance(resource, dict):
            return None
        resource = resource.get(step)
    return resource


def clinical_date(resource: dict[str, Any]) -> str:
    """The date a reader knows a resource by (DATES), else its last update; '' if none."""
    for path in DATES.get(resource["resourceType"], ()):
        value = _get(resource, path)
        if isinstance(value, str):
            return value
    return str((resource.get("meta") or {}).get("lastUpdated", ""))


def concept(value: Any) -> str:
    """A CodeableConcept (or Coding) as a reader would say it: its text, else a display, else a code."""
    if not isinstance(value, dict):
        return ""
    if value.get("text"):
        return str(value["text"])
    codings = value.get("coding", [value])
    return next((str(c[k]) for k in ("display", "code") for c in codings if c.get(k)), "")


def quantity(value: dict[str, Any]) -> str:
    """A Quantity for a reader: two decimals at most (the CSV export keeps every digit)."""
    number = value.get("value", "")
    if isinstance(number, float):
        number = f"{round(number, 2):g}"
    return f"{number} {value.get('unit') or value.get('code') or ''}".strip()


def observed(resource: dict[str, Any]) -> str:
    """An Observation's value (or its components' values)."""
    for key, show in (("valueQuantity", quantity), ("valueCodeableConcept", concept)):
        if key in resource:
            return show(resource[key])
    for key in ("valueString", "valueBoolean", "valueInteger", "valueDateTime"):
        if key in resource:
            return str(resource[key])
    parts = [f"{concept(c.get('code'))}: {observed(c)}" for c in resource.get("component", [])]
    return "; ".join(parts)


def _day(moment: str) -> str:
    return moment[:10]


def _reference(value: Any) -> str:
    return str(value.get("display") or value.get("reference") or "") if isinstance(value, dict) else ""


def _category(resource: dict[str, Any], code: str) -> bool:
    return any(c.get("system") == MESSAGE_SYSTEM and c.get("code") == code
               for cat in resource.get("category", []) for c in cat.get("coding", []))


def referral_rows(messages: Iterable[dict[str, Any]]) -> list[Row]:
    """Per referral among `messages` (newest first): patient, sent, trial, sender, status, and
    its answers among `messages` (date: outcome)."""
    messages = list(messages)
    answers: dict[str, list[str]] = defaultdict(list)
    for a in sorted((m for m in messages if _category(m, ANSWER)), key=clinical_date):
        for asked in a.get("inResponseTo", []):
            answers[str(asked.get("reference", ""))].append(
                f"{_day(clinical_date(a))}: {', '.join(concept(r) for r in a.get('reasonCode', []))}")
    return [(_reference(r.get("subject")), _day(clinical_date(r)),
             ", ".join(_reference(a) for a in r.get("about", [])), _reference(r.get("sender")),
             concept(r.get("statusReason")) or str(r.get("status", "")),
             "; ".join(answers.get(f"Communication/{r['id']}", [])))
            for r in sorted((m for m in messages if _category(m, REFERRAL)), key=clinical_date, reverse=True)]


@dataclass(frozen=True, slots=True)
class Record:
    """A patient's record as `$everything` gave it: the Patient, and the resources by type."""

    patient: dict[str, Any]
    by_type: dict[str, list[dict[str, Any]]]

    @classmethod
    def of(cls, patient_id: str, resources: Iterable[dict[str, Any]]) -> Record:
        by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for resource in resources:
            by_type[resource["resourceType"]].append(resource)
        patient = next((p for p in by_type.get("Patient", []) if p["id"] == patient_id), None)
        if patient is None:  # $everything always starts with the Patient the caller may read
            raise fail(Kind.NOT_FOUND, "not-found", f"Patient/{patient_id} is not known.")
        return cls(patient, dict(by_type))

    def of_type(self, resource_type: str) -> list[dict[str, Any]]:
        return sorted(self.by_type.get(resource_type, []), key=clinical_date, reverse=True)

    def name(self) -> str:
        for name in self.patient.get("name", []):
            if name.get("text"):
                return str(name["text"])
            return " ".join([*name.get("given", []), name.get("family", "")]).strip()
        return f"Patient/{self.patient['id']}"

    def conditions(self) -> list[Row]:
        """Onset, description, clinical status."""
        return [(_day(clinical_date(c)), concept(c.get("code")), concept(c.get("clinicalStatus")))
                for c in self.of_type("Condition")]

    def observations(self) -> list[tuple[str, list[Row]]]:
        """By day, newest first: (day, [(description, value)])."""
        days: dict[str, list[Row]] = defaultdict(list)
        for o in self.of_type("Observation"):
            days[_day(clinical_date(o))].append((concept(o.get("code")), observed(o)))
        return list(days.items())

    def consents(self, language: Language) -> list[Row]:
        """Date, scope, decision, period, the people named."""
        rows: list[Row] = []
        for c in self.of_type("Consent"):
            provision = c.get("provision") or {}
            period = provision.get("period") or {}
            decision = DECISIONS.get(provision.get("type", ""), {}).get(language, "")
            actors = ", ".join(_reference(a.get("reference")) for a in provision.get("actor", []))
            rows.append((_day(clinical_date(c)), concept(c.get("scope")), decision,
                         f"{period.get('start', '')} – {period.get('end', '')}".strip(" –"), actors))
        return rows

    def referrals(self) -> list[Row]:
        """Sent, trial, sender, status, the answers (date: outcome)."""
        return [row[1:] for row in referral_rows(self.by_type.get("Communication", []))]

    def accesses(self, language: Language) -> list[Row]:
        """When, who, what they did (the patient's access history, docs/audit.md)."""
        rows: list[Row] = []
        for event in self.of_type("AuditEvent"):
            who = ", ".join(_reference(a.get("who")) or concept(a.get("type")) for a in event.get("agent", [])
                            if a.get("requestor", True))
            action = ACTIONS.get(event.get("action", ""), {}).get(language, "")
            subtype = ", ".join(concept(s) for s in event.get("subtype", []))
            rows.append((clinical_date(event)[:16].replace("T", " "), who,
                         f"{action} ({subtype})" if subtype else action))
        return rows

    def counts(self) -> list[Row]:
        """The other types of the record and how many of each."""
        shown = {"Patient", "Condition", "Observation", "Consent", "Communication", "AuditEvent"}
        return [(t, str(len(rs))) for t, rs in sorted(self.by_type.items()) if t not in shown]
