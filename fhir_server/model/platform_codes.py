"""The codes this server defines (terminology/ holds the CodeSystems, profiles/ the
SearchParameters), read once from the shipped definitions."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

CANONICAL = "https://oncotrials.example.org/fhir"
MESSAGE_SYSTEM = f"{CANONICAL}/CodeSystem/referral-message"
OUTCOME_SYSTEM = f"{CANONICAL}/CodeSystem/referral-outcome"
RIGHT_SYSTEM = f"{CANONICAL}/CodeSystem/data-subject-right"  # Task.code of rights requests
# Task.code of the operator's other registers (privacy/breaches.py, disclosures.py)
REGISTER_SYSTEM = f"{CANONICAL}/CodeSystem/privacy-register"
BREACH, DISCLOSURE = "breach", "disclosure"
PATIENT_VISIBLE = "patient-visible"  # meta.tag of a disclosure the law lets the patient see
# A drafted eligibility Group's review (trials/criteria_review.py): written by the server alone.
ELIGIBILITY_REVIEW = f"{CANONICAL}/StructureDefinition/eligibility-review"
# A trial site's recruiting status, on its ResearchStudy.site reference (trials/catalogue_sites.py).
SITE_RECRUITMENT = f"{CANONICAL}/StructureDefinition/site-recruitment-status"
REFERRAL_IDENTIFIER = f"{CANONICAL}/referral"  # ResearchSubject.identifier: the referral's id
TERMINOLOGY_DIR = Path(__file__).resolve().parents[1] / "terminology"
PROFILES_DIR = Path(__file__).resolve().parents[1] / "profiles"

REFERRAL = "referral"
ANSWER = "answer"
SUGGESTION = "trial-suggestion"
SNAPSHOT = "snapshot"
# message kinds only the server writes (the thread's: trials/thread.py)
SERVER_MADE = frozenset({REFERRAL, ANSWER, "question", "reply", "record-update", "referral-request"})
RECIPIENT_TYPES = ("PractitionerRole", "CareTeam", "Group")  # who referrals are sent to


def coding(system: str, code: str) -> dict[str, str]:
    """A Coding of one of our CodeSystems, with its display."""
    return {"system": system, "code": code, "display": concepts(system)[code]["display"]}


@cache
def definitions() -> tuple[dict[str, Any], ...]:
    """Every conformance resource we publish (CodeSystems, ValueSets, ConceptMaps,
    SearchParameters, OperationDefinitions)."""
    files = [*sorted(TERMINOLOGY_DIR.glob("*-*.json")), *sorted(PROFILES_DIR.glob("*-*.json"))]
    return tuple(json.loads(path.read_text()) for path in files)


@cache
def concepts(system: str) -> dict[str, dict[str, Any]]:
    """The concepts of our CodeSystem `system` by code, their properties flattened."""
    [code_system] = [d for d in definitions() if d.get("url") == system]
    out = {}
    for concept in code_system["concept"]:
        properties = {p["code"]: next(v for k, v in p.items() if k.startswith("value"))
                      for p in concept.get("property", [])}
        out[concept["code"]] = {"display": concept["display"], **properties}
    return out


def has_code(codeable: Any, system: str, code: str | None = None) -> bool:
    """Whether a CodeableConcept (or a list of them) holds a coding of `system` (`code`)."""
    items = codeable if isinstance(codeable, list) else [codeable]
    return any(c.get("system") == system and (code is None or c.get("code") == code)
               for item in items if isinstance(item, dict) for c in item.get("coding", []))


def codes_of(codeable: Any, system: str) -> list[str]:
    """The codes of `system` in a CodeableConcept (or a list of them)."""
    items = codeable if isinstance(codeable, list) else [codeable]
    return [c["code"] for item in items if isinstance(item, dict) for c in item.get("coding", [])
            if c.get("system") == system and isinstance(c.get("code"), str)]
