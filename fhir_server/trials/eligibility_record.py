"""A patient's record as eligibility reads it: the Patient, the Conditions, the Observations
by code, the treatments (procedures and medications), each with the reference that evidence
cites (pinned to its version: `Observation/x/_history/3`). Records that do not count (a refuted
Condition, a cancelled Observation, a medication not taken) are left out here, once."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from ..frozen import fast_init
from ..model.types import is_valid_id
from .diagnosis_maps import place
from .eligibility_codes import ICD10, ICDO3, LOINC
from .eligibility_format import Coding

if TYPE_CHECKING:
    from .eligibility_rules import Finding

CONDITION_IGNORED = frozenset({"refuted", "entered-in-error"})
OBSERVATION_STATUSES = frozenset({"final", "amended", "corrected"})
TREATMENT_STATUSES = {
    "Procedure": frozenset({"completed", "in-progress"}),
    "MedicationStatement": frozenset({"active", "completed", "stopped", "on-hold"}),
    "MedicationRequest": frozenset({"active", "completed", "stopped", "on-hold"}),
    "MedicationAdministration": frozenset({"completed", "in-progress", "stopped"}),
}
TYPES = ("Patient", "Condition", "Observation", "Medication", *TREATMENT_STATUSES)
_WHEN = ("effectiveDateTime", "effectiveInstant", "issued", "performedDateTime",
         "authoredOn", "recordedDate", "onsetDateTime", "dateAsserted")
_PERIODS = ("effectivePeriod", "performedPeriod")


@fast_init
@dataclass(frozen=True, slots=True)
class Entry:
    """One resource of the record, with the reference its evidence cites."""

    reference: str
    resource: dict[str, Any]
    codings: tuple[Coding, ...]  # its code (a medication's; a Condition's bodySite in ICD-O-3)
    when: str  # its clinical date, "" if none (sorts oldest)
    # A Condition without ICD-10 placed in it by a ConceptMap: the maps (`url|version`) that
    # evidence cites beside it; the ICD-10 codes it only overlaps when no map places it.
    maps: tuple[str, ...] = ()
    unplaced: tuple[str, ...] = ()


@dataclass(slots=True)
class Record:
    """What eligibility reads of one patient, at one date."""

    today: date
    patient: Entry | None = None
    conditions: list[Entry] = field(default_factory=list)
    observations: dict[Coding, list[Entry]] = field(default_factory=dict)  # newest first
    treatments: list[Entry] = field(default_factory=list)
    # What the engine has judged of this record, by criterion `rule` (eligibility_format.py):
    # a criterion shared by many trials is judged once per patient. Filled by eligibility.py.
    findings: dict[str, Finding] = field(default_factory=dict, repr=False, compare=False)
    verdicts: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def icd10_codes(self) -> set[str]:
        """The ICD-10 codes of the patient's Conditions."""
        return {code for entry in self.conditions for system, code in entry.codings
                if system in ICD10}

    def observed(self, code: Coding) -> list[Entry]:
        return self.observations.get(code, [])


def pinned(resource: dict[str, Any]) -> str:
    """`Type/id/_history/version` (or `Type/id` when the resource carries no version)."""
    version = (resource.get("meta") or {}).get("versionId")
    reference = f"{resource.get('resourceType')}/{resource.get('id')}"
    return f"{reference}/_history/{version}" if version else reference


def _codings(concept: Any) -> tuple[Coding, ...]:
    if not isinstance(concept, dict):
        return ()
    return tuple((c["system"], c["code"]) for c in concept.get("coding", [])
                 if isinstance(c, dict) and isinstance(c.get("system"), str)
                 and isinstance(c.get("code"), str))


def when(resource: dict[str, Any]) -> str:
    for name in _WHEN:
        if isinstance(resource.get(name), str):
            return str(resource[name])
    for name in _PERIODS:
        start = (resource.get(name) or {}).get("start")
        if isinstance(start, str):
            return start
    return ""


def _counts(resource: dict[str, Any]) -> bool:
    kind = resource.get("resourceType")
    status = resource.get("status")
    if kind == "Condition":
        verification = {c for _, c in _codings(resource.get("verificationStatus"))}
        return not verification & CONDITION_IGNORED
    if kind == "Observation":
        return status in OBSERVATION_STATUSES
    if kind == "MedicationRequest" and resource.get("intent") in ("proposal", "plan"):
        return False
    return kind in TREATMENT_STATUSES and status in TREATMENT_STATUSES[kind]


def _medication_codes(resource: dict[str, Any], medications: dict[str, tuple[Coding, ...]]) -> tuple[Coding, ...]:
    if "medicationCodeableConcept" in resource:
        return _codings(resource["medicationCodeableConcept"])
    return medications.get(medication_named(resource) or "", ())


def medication_named(resource: dict[str, Any]) -> str | None:
    """The `Medication/<id>` (or other target) a treatment's `medicationReference` names,
    without its version; None when it names none."""
    target = (resource.get("medicationReference") or {}).get("reference")
    return target.split("/_history/")[0] if isinstance(target, str) and target else None


def medication_id(resource: dict[str, Any]) -> str | None:
    """The id of the Medication of this server a treatment's `medicationReference` names
    (relative); None for another target, or a string that is no id (a comma in it would
    name several to an `_id` search)."""
    target = medication_named(resource) or ""
    id = target.removeprefix("Medication/")
    return id if target.startswith("Medication/") and is_valid_id(id) else None


def _condition(reference: str, resource: dict[str, Any], codings: tuple[Coding, ...]) -> Entry:
    """A Condition's entry: ICD-O-3 topography may sit in bodySite; without an ICD-10 code, the
    ICD-10 codes the ConceptMaps place it in (when it has one, ICD-10 alone is read)."""
    codings += tuple(c for site in resource.get("bodySite", []) for c in _codings(site) if c[0] == ICDO3)
    if any(system in ICD10 for system, _ in codings):
        return Entry(reference, resource, codings, when(resource))
    placed, unplaced, maps = place(codings)
    return Entry(reference, resource, codings + placed, when(resource), maps, unplaced)


def read_record(entries: Iterable[tuple[str, dict[str, Any]]], today: date) -> Record:
    """The record of one patient from (reference, resource) pairs of that patient (the caller
    has checked they are about one patient)."""
    entries = list(entries)
    record = Record(today)
    # A Medication is named by its id, or by its entry's reference (a Bundle's fullUrl).
    medications = {name: _codings(r.get("code")) for reference, r in entries
                   if r.get("resourceType") == "Medication"
                   for name in (f"Medication/{r.get('id')}", reference.split("/_history/")[0])}
    medications.update({f"#{c.get('id')}": _codings(c.get("code")) for _, r in entries
                        for c in r.get("contained", []) if isinstance(c, dict)
                        and c.get("resourceType") == "Medication"})
    observed: dict[Coding, list[Entry]] = defaultdict(list)
    for reference, resource in entries:
        kind = resource.get("resourceType")
        if kind == "Patient":
            record.patient = Entry(reference, resource, (), "")
        elif kind in ("Condition", "Observation", *TREATMENT_STATUSES) and _counts(resource):
            codings = (_medication_codes(resource, medications) if kind.startswith("Medication")
                       else _codings(resource.get("code")))
            if kind == "Condition":
                record.conditions.append(_condition(reference, resource, codings))
                continue
            entry = Entry(reference, resource, codings, when(resource))
            if kind == "Observation":
                keys = set(codings) | {c for part in resource.get("component", [])
                                       if isinstance(part, dict)
                                       for c in _codings(part.get("code")) if c[0] == LOINC}
                for key in keys:
                    observed[key].append(entry)
            else:
                record.treatments.append(entry)
    record.observations = {k: sorted(v, key=lambda e: (e.when, e.reference), reverse=True)
                           for k, v in observed.items()}
    record.conditions.sort(key=lambda e: e.reference)
    record.treatments.sort(key=lambda e: e.reference)
    return record
