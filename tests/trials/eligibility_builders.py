"""Builders of eligibility Groups (docs/matching.md) and patient records for the eligibility
and $match tests."""

from __future__ import annotations

from datetime import date
from typing import Any

from fhir_server.trials.eligibility import pinned, read_record
from fhir_server.trials.eligibility_codes import (COMPARATOR_URL, CRITERION_SYSTEM, ICDO3, LOINC,
                                                  MINIMUM_URL, ONLY_IF_URL, PROFILE, UCUM)
from fhir_server.trials.eligibility_record import Record

ICD10 = "http://hl7.org/fhir/sid/icd-10"
ATC = "http://www.whocc.no/atc"
HGNC = "http://www.genenames.org/geneId"
TODAY = date(2026, 12, 6)


def coded(system: str, code: str) -> dict[str, Any]:
    return {"valueCodeableConcept": {"coding": [{"system": system, "code": code}]}}


def quantity(value: float, comparator: str | None = None, unit: str = "1") -> dict[str, Any]:
    q: dict[str, Any] = {"value": value, "system": UCUM, "code": unit}
    if comparator:
        q["comparator"] = comparator
    return {"valueQuantity": q}


def between(low: float | None, high: float | None, unit: str = "1") -> dict[str, Any]:
    r: dict[str, Any] = {}
    if low is not None:
        r["low"] = {"value": low, "system": UCUM, "code": unit}
    if high is not None:
        r["high"] = {"value": high, "system": UCUM, "code": unit}
    return {"valueRange": r}


def criterion(kind: str, value: dict[str, Any], *, exclude: bool = False, text: str | None = None,
              measured: str | None = None, comparator: str | None = None,
              minimum: int | None = None, only_if: str | None = None) -> dict[str, Any]:
    coding = [{"system": CRITERION_SYSTEM, "code": kind}]
    if measured:
        coding.append({"system": LOINC, "code": measured})
    extensions = []
    if comparator:
        extensions.append({"url": COMPARATOR_URL, "valueCode": comparator})
    if minimum:
        extensions.append({"url": MINIMUM_URL, "valuePositiveInt": minimum})
    if only_if:
        extensions.append({"url": ONLY_IF_URL, "valueReference": {"reference": f"#{only_if}"}})
    return {**({"extension": extensions} if extensions else {}),
            "code": {"coding": coding, "text": text or kind}, **value, "exclude": exclude}


def group(id: str, *characteristics: dict[str, Any], contained: tuple[dict[str, Any], ...] = (),
          version: str | None = "1") -> dict[str, Any]:
    meta: dict[str, Any] = {"profile": [PROFILE]}
    if version:
        meta["versionId"] = version
    return {"resourceType": "Group", "id": id, "meta": meta,
            **({"contained": list(contained)} if contained else {}),
            "type": "person", "actual": False, "characteristic": list(characteristics)}


def members(id: str, *characteristics: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Group", "id": id, "type": "person", "actual": False,
            "characteristic": list(characteristics)}


def patient(birth: str | None = "1970-06-15", gender: str | None = "female", id: str = "p") -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Patient", "id": id, "meta": {"versionId": "1"}}
    if birth:
        body["birthDate"] = birth
    if gender:
        body["gender"] = gender
    return body


def condition(code: str, system: str = ICD10, id: str = "c1", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": id, "meta": {"versionId": "2"},
            "code": {"coding": [{"system": system, "code": code}]},
            "subject": {"reference": "Patient/p"}, **extra}


def observation(loinc: str, value: dict[str, Any], id: str = "o1", when: str = "2026-11-01",
                status: str = "final", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": id, "meta": {"versionId": "3"}, "status": status,
            "code": {"coding": [{"system": LOINC, "code": loinc}]},
            "subject": {"reference": "Patient/p"}, "effectiveDateTime": when, **value, **extra}


def variant(hgnc: str, present: bool, id: str = "v1", when: str = "2026-10-01") -> dict[str, Any]:
    return observation("69548-6", coded(LOINC, "LA9633-4" if present else "LA9634-2"), id=id,
                       when=when, component=[{"code": {"coding": [{"system": LOINC, "code": "48018-6"}]},
                                              **coded(HGNC, hgnc)}])


def medication(atc: str, start: str, id: str = "m1", status: str = "completed") -> dict[str, Any]:
    return {"resourceType": "MedicationStatement", "id": id, "meta": {"versionId": "1"},
            "status": status, "medicationCodeableConcept": {"coding": [{"system": ATC, "code": atc}]},
            "subject": {"reference": "Patient/p"}, "effectivePeriod": {"start": start}}


def procedure(system: str, code: str, id: str = "pr1") -> dict[str, Any]:
    return {"resourceType": "Procedure", "id": id, "meta": {"versionId": "1"}, "status": "completed",
            "code": {"coding": [{"system": system, "code": code}]}, "subject": {"reference": "Patient/p"}}


def record(*resources: dict[str, Any], today: date = TODAY) -> Record:
    return read_record([(pinned(r), r) for r in resources], today)


__all__ = ["ATC", "HGNC", "ICD10", "ICDO3", "LOINC", "between", "coded", "condition", "criterion",
           "group", "medication", "members", "observation", "patient", "procedure", "quantity",
           "record", "variant"]
