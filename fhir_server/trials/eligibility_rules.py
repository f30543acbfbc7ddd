"""Whether what a criterion describes holds for a patient, one function per criterion type.

Each answers a `Finding`: True, False, or None (unknown) with the evidence read and, when
unknown, the element that is missing. A datum the record lacks is None, never False; a
criterion the server cannot evaluate (a code system it holds no rule for, an unreadable
value) is None with a warning. The one closed-world rule: an inclusion diagnosis
(`condition`) is False when the record holds ICD-10 diagnoses and none is covered, since the
recorded diagnoses are the patient's diagnoses (an exclusion is never proven absent this way).
A diagnosis without ICD-10 is read in the ICD-10 codes a ConceptMap places it in
(diagnosis_maps.py), and the map is cited as evidence.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from datetime import date
from typing import Any

from ..frozen import fast_init
from .eligibility_codes import (ABSENT, ECOG, ECOG_ANSWERS, ECOG_SYSTEM, GENDER, GENE_STUDIED,
                                HGNC, ICD10, ICDO3, LINE_CLASSES, ATC, LOINC, PRESENT, TNM,
                                Interval, Rank, behaviour, covers, holds, icd10_covers, rank_compare,
                                same_system, stage_rank, tnm_rank, unit_factor)
from .eligibility_format import Coding, Criterion
from .eligibility_record import Entry, Record


@fast_init
@dataclass(frozen=True, slots=True)
class Finding:
    holds: bool | None
    evidence: tuple[str, ...] = ()
    missing: str | None = None
    warning: str | None = None


def unknown(missing: str | None = None, warning: str | None = None,
            evidence: tuple[str, ...] = ()) -> Finding:
    return Finding(None, evidence, missing, warning)


def _refs(entries: list[Entry]) -> tuple[str, ...]:
    """The entries' references, then the ConceptMaps that placed a diagnosis in ICD-10."""
    return (*sorted({e.reference for e in entries}), *sorted({m for e in entries for m in e.maps}))


# -- the patient ----------------------------------------------------------------------------

@lru_cache(maxsize=4096)
def _age_bounds(birth: str, today: date) -> Interval | None:
    """The ages (whole years) a birth date of any precision allows today."""
    found = re.fullmatch(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?", birth[:10])
    if found is None:
        return None
    year = int(found.group(1))
    month = int(found.group(2)) if found.group(2) else None
    day = int(found.group(3)) if found.group(3) else None

    def age(m: int, d: int) -> int:
        return today.year - year - ((today.month, today.day) < (m, d))

    # Born on the last possible day: youngest; on the first: oldest.
    return Interval(age(month or 12, day or 31), age(month or 1, day or 1))


def born_later(birth: str, today: date) -> bool:
    """Whether a birth date (of any precision, readable) lies wholly after `today`."""
    bounds = _age_bounds(birth, today)
    return bounds is not None and bounds.high < 0


def age(criterion: Criterion, record: Record) -> Finding:
    patient = record.patient
    birth = patient.resource.get("birthDate") if patient else None
    if not isinstance(birth, str) or patient is None:
        return unknown("Patient.birthDate")
    bounds = _age_bounds(birth, record.today)
    if bounds is None:
        return unknown("Patient.birthDate", f"birth date '{birth}' cannot be read")
    if born_later(birth, record.today):  # a wrong datum, not an age: unknown, never not-met
        return unknown("Patient.birthDate", f"birth date '{birth}' is in the future")
    assert criterion.interval is not None
    # Whole years: a criterion `< 18.5 a` is about ages up to 18.
    holds = criterion.interval.test(bounds)
    if holds is None:  # a partial date allows ages on both sides of the criterion
        return unknown(f"Patient.birthDate to the day (recorded: {birth})", evidence=(patient.reference,))
    return Finding(holds, (patient.reference,))


def sex(criterion: Criterion, record: Record) -> Finding:
    patient = record.patient
    gender = patient.resource.get("gender") if patient else None
    if patient is None or gender not in ("male", "female", "other"):
        return unknown("Patient.gender")
    wanted = {c for s, c in criterion.codes if s == GENDER}
    if not wanted:
        return unknown(warning="a sex criterion codes administrative-gender")
    return Finding(gender in wanted, (patient.reference,))


# -- diagnoses ----------------------------------------------------------------------------

def _covered(criterion: Criterion, entries: list[Entry], systems: Callable[[str], bool]) -> tuple[list[Entry], list[Entry], list[str]]:
    """(entries with a code the criterion covers, entries coded in the criterion's systems,
    criterion systems without a rule)."""
    hits, coded, unheld = [], [], []
    for system, code in criterion.codes:
        if covers(system, code, code) is None:
            unheld.append(system)
    for entry in entries:
        relevant = [c for c in entry.codings if systems(c[0])]
        if relevant:
            coded.append(entry)
        if any(same_system(s, rs) and covers(s, c, rc)
               for s, c in criterion.codes for rs, rc in relevant):
            hits.append(entry)
    return hits, coded, unheld


def condition(criterion: Criterion, record: Record) -> Finding:
    hits, coded, unheld = _covered(criterion, record.conditions, lambda s: s in ICD10 or s == ICDO3)
    if hits:
        return Finding(True, _refs(hits))
    if unheld:  # an alternative in a system we cannot read may be the one the patient has
        return unknown(warning=f"no rule for code system {unheld[0]}: the criterion is not evaluated")
    icd10 = [e for e in coded if any(s in ICD10 for s, _ in e.codings)]
    # A recorded C50 neither shows nor refutes a required C50.4: it is less precise.
    vaguer = [e for e in icd10 if any(s in ICD10 and cs in ICD10 and "-" not in c and icd10_covers(rc, c)
                                      for cs, c in criterion.codes for s, rc in e.codings)]
    if vaguer:
        return unknown("a more precise Condition.code than " + ", ".join(
            sorted({c for e in vaguer for s, c in e.codings if s in ICD10})), evidence=_refs(vaguer))
    if not criterion.exclude and icd10 and any(s in ICD10 for s, _ in criterion.codes):
        # A diagnosis a map cannot place (kidney: C64 or C65) may be the one required.
        unplaced = [e for e in record.conditions if e.unplaced]
        if unplaced:
            return unknown("an ICD-10 code for " + ", ".join(e.reference for e in unplaced),
                           evidence=_refs(unplaced))
        return Finding(False, _refs(icd10))
    return unknown("Condition.code (" + ", ".join(c for _, c in criterion.codes) + ")")


def _icdo3(part: str) -> Callable[[Criterion, Record], Finding]:
    def evaluate(criterion: Criterion, record: Record) -> Finding:
        if any(s != ICDO3 for s, _ in criterion.codes):
            return unknown(warning=f"a {part} criterion codes ICD-O-3 ({ICDO3})")
        hits, _, _ = _covered(criterion, record.conditions, lambda s: s == ICDO3)
        if hits:
            return Finding(True, _refs(hits))
        return unknown(f"Condition ICD-O-3 {part}")
    return evaluate


def _staging(kind: str, record: Record) -> list[Entry]:
    return [e for code in TNM[kind] for e in record.observed((LOINC, code))]


def _latest(entries: list[Entry]) -> Entry | None:
    return max(entries, key=lambda e: (e.when, e.reference), default=None)


def _category_text(entry: Entry) -> str:
    value = entry.resource.get("valueCodeableConcept") or {}
    texts = [c.get("code", "") for c in value.get("coding", []) if isinstance(c, dict)]
    texts += [c.get("display", "") for c in value.get("coding", []) if isinstance(c, dict)]
    return " ".join(t for t in [value.get("text"), entry.resource.get("valueString"), *texts]
                    if isinstance(t, str) and t)


def _rank_of(kind: str, text: str) -> Rank | None:
    return stage_rank(text) if kind == "stage" else tnm_rank(kind, text)


def metastasis(criterion: Criterion, record: Record) -> Finding:
    distant = [e for e in record.conditions
               if any((s in ICD10 and c.upper().replace(".", "")[:3] in ("C78", "C79"))
                      or (s == ICDO3 and behaviour(c) == "6") for s, c in e.codings)]
    m = _latest(_staging("tnm-m", record))
    m_rank = tnm_rank("tnm-m", _category_text(m)) if m else None
    stage = _latest(_staging("stage", record))
    stage_value = stage_rank(_category_text(stage)) if stage else None
    if distant or (m_rank and m_rank.major >= 1) or (stage_value and stage_value.major >= 4):
        found = distant + [e for e, r in ((m, m_rank), (stage, stage_value))
                           if e and r and r.major >= (1 if e is m else 4)]
        return Finding(criterion.flag is True, _refs(found))
    if m and m_rank is not None:  # M0 recorded, no sign of spread
        return Finding(criterion.flag is False, (m.reference,))
    return unknown("Observation TNM M category (LOINC 21907-1 / 21901-4) or a Condition of secondary neoplasm")


def _ordered(kind: str) -> Callable[[Criterion, Record], Finding]:
    def evaluate(criterion: Criterion, record: Record) -> Finding:
        thresholds = [_rank_of(kind, code) for _, code in criterion.codes]
        threshold = next((t for t in thresholds if t is not None), None)
        if threshold is None:
            return unknown(warning=f"the {kind} criterion's category cannot be read")
        entry = _latest(_staging(kind, record))
        if entry is None:
            return unknown(f"Observation {kind} (LOINC {' / '.join(TNM[kind])})")
        rank = _rank_of(kind, _category_text(entry))
        if rank is None:
            return unknown(f"a readable {kind} value", evidence=(entry.reference,))
        if threshold.has_minor and not rank.has_minor and rank.major == threshold.major:
            # A recorded T2 may be T2a or T2b: it is too coarse to place against a T2a threshold.
            return unknown(f"a more precise {kind} than {_category_text(entry)}", evidence=(entry.reference,))
        return Finding(holds(rank_compare(rank, threshold), criterion.comparator), (entry.reference,))
    return evaluate


# -- observations -------------------------------------------------------------------------

def _observed_value(entry: Entry, code: Coding) -> dict[str, Any]:
    """The value of the Observation or of its component coded `code`."""
    resource = entry.resource
    for part in resource.get("component", []):
        if isinstance(part, dict) and code in {(c.get("system"), c.get("code"))
                                               for c in (part.get("code") or {}).get("coding", [])}:
            return part
    return resource


def compare_value(criterion: Criterion, holder: dict[str, Any]) -> tuple[bool | None, str | None]:
    """The criterion's value against an observed value[x]: (holds, warning)."""
    if criterion.codes:
        concept = holder.get("valueCodeableConcept")
        if not isinstance(concept, dict):
            return None, "the result is not coded"
        seen = {(c.get("system"), c.get("code")) for c in concept.get("coding", []) if isinstance(c, dict)}
        held = {(s, c) for s, c in criterion.codes if covers(s, c, c) is not None}
        if seen & held:
            return True, None
        unheld = sorted({s for s, _ in criterion.codes} - {s for s, _ in held})
        if unheld:  # code-for-code equality in a system we hold no rule for proves nothing
            return None, f"no rule for code system {unheld[0]}: the criterion is not evaluated"
        systems = {s for s, _ in held}
        if not any(s in systems for s, _ in seen):  # text only, or another system's code
            return None, "the result is not coded in " + ", ".join(sorted(systems))
        return False, None
    assert criterion.interval is not None
    quantity = holder.get("valueQuantity")
    if isinstance(holder.get("valueInteger"), int):
        quantity = {"value": holder["valueInteger"], "code": criterion.unit}
    if not isinstance(quantity, dict) or not isinstance(quantity.get("value"), (int, float)):
        return None, "the result is not a quantity"
    unit = quantity.get("code") or quantity.get("unit")
    factor = unit_factor(unit, criterion.unit) if unit and criterion.unit else (
        1.0 if unit == criterion.unit else None)
    if factor is None:
        return None, f"unit '{unit}' cannot be compared with '{criterion.unit}'"
    try:
        value = Interval.compared(quantity.get("comparator"), float(quantity["value"])).scaled(factor)
    except ValueError as exc:
        return None, f"the result's {exc} cannot be read"
    return criterion.interval.test(value), None


def biomarker(criterion: Criterion, record: Record) -> Finding:
    tests = [c for c in criterion.measured if c[0] == LOINC]
    entries = [e for c in tests for e in record.observed(c)]
    entry = _latest(entries)
    if entry is None:
        return unknown("Observation " + ", ".join(f"LOINC {c}" for _, c in tests))
    code = next(c for c in tests if entry in record.observed(c))
    result, warning = compare_value(criterion, _observed_value(entry, code))
    return Finding(result, (entry.reference,), None if result is not None else "a comparable result", warning)


def _ecog_grade(resource: dict[str, Any]) -> int | None:
    if isinstance(resource.get("valueInteger"), int):
        return int(resource["valueInteger"])
    quantity = resource.get("valueQuantity") or {}
    if isinstance(quantity.get("value"), (int, float)):
        return int(quantity["value"])
    for coding in (resource.get("valueCodeableConcept") or {}).get("coding", []):
        code = coding.get("code") if isinstance(coding, dict) else None
        if code in ECOG_ANSWERS:
            return ECOG_ANSWERS[code]
        if coding.get("system") == ECOG_SYSTEM and code in ("0", "1", "2", "3", "4", "5"):
            return int(code)
    return None


def ecog(criterion: Criterion, record: Record) -> Finding:
    entry = _latest(record.observed((LOINC, ECOG)))
    if entry is None:
        return unknown(f"Observation ECOG performance status (LOINC {ECOG})")
    grade = _ecog_grade(entry.resource)
    if grade is None:
        return unknown("a readable ECOG grade", evidence=(entry.reference,))
    if criterion.interval is not None:
        return Finding(criterion.interval.test(Interval.point(grade)), (entry.reference,))
    wanted = {ECOG_ANSWERS.get(c, int(c) if s == ECOG_SYSTEM and c.isdigit() else None)
              for s, c in criterion.codes}
    if wanted == {None}:
        return unknown(warning="the ECOG criterion's grade cannot be read")
    return Finding(grade in wanted, (entry.reference,))


def gene(criterion: Criterion, record: Record) -> Finding:
    genes = {c for s, c in criterion.codes if s in HGNC}
    if not genes:
        return unknown(warning="a gene criterion codes HGNC")
    latest: dict[str, Entry] = {}
    for entry in record.observed((LOINC, GENE_STUDIED)):
        studied = {c.get("code") for part in entry.resource.get("component", [])
                   if isinstance(part, dict) and (LOINC, GENE_STUDIED) in {
                       (c.get("system"), c.get("code")) for c in (part.get("code") or {}).get("coding", [])}
                   for c in (part.get("valueCodeableConcept") or {}).get("coding", [])
                   if isinstance(c, dict) and c.get("system") in HGNC}
        for name in studied & genes:
            if name not in latest:  # observations are newest first
                latest[name] = entry
    answers = {name: {c.get("code") for c in (e.resource.get("valueCodeableConcept") or {}).get("coding", [])}
               for name, e in latest.items()}
    present = [latest[n] for n, a in answers.items() if PRESENT in a]
    if present:
        return Finding(True, _refs(present))
    if latest and len(latest) == len(genes) and all(ABSENT in a for a in answers.values()):
        return Finding(False, _refs(list(latest.values())))
    return unknown(f"Observation variant assessment of {', '.join(sorted(genes - set(present)))} "
                   f"(LOINC {GENE_STUDIED} with {PRESENT} / {ABSENT})",
                   evidence=_refs(list(latest.values())))


# -- treatments ---------------------------------------------------------------------------

def prior_treatment(criterion: Criterion, record: Record) -> Finding:
    unheld = [s for s, c in criterion.codes if covers(s, c, c) is None]
    if unheld and len(unheld) == len(criterion.codes):
        return unknown(warning=f"no rule for code system {unheld[0]}: the criterion is not evaluated")
    hits = [e for e in record.treatments
            if any(same_system(s, rs) and covers(s, c, rc) for s, c in criterion.codes
                   for rs, rc in e.codings)]
    if hits:
        return Finding(True, _refs(hits))
    # A treatment not recorded may still have been given: never proven absent.
    return unknown("Procedure or Medication* (" + ", ".join(c for _, c in criterion.codes) + ")")


def treatment_lines(criterion: Criterion, record: Record) -> Finding:
    lines = [e for e in record.treatments if e.resource.get("resourceType", "").startswith("Medication")
             and any(s == ATC and c.upper().startswith(LINE_CLASSES) for s, c in e.codings)]
    starts = {e.when[:10] for e in lines if e.when}
    assert criterion.interval is not None
    # The record gives a lower bound: lines not recorded may have been given.
    count = Interval(low=len(starts))
    result = criterion.interval.test(count)
    if result is None:
        return unknown(f"complete treatment history ({len(starts)} line(s) recorded: ATC "
                       f"{'/'.join(LINE_CLASSES)} by start date)", evidence=_refs(lines))
    return Finding(result, _refs(lines))


def free_text(criterion: Criterion, record: Record) -> Finding:
    return unknown("a person's assessment (free-text criterion, never evaluated automatically)")


RULES: dict[str, Callable[[Criterion, Record], Finding]] = {
    "age": age, "sex": sex, "condition": condition, "morphology": _icdo3("morphology"),
    "topography": _icdo3("topography"), "metastasis": metastasis,
    **{kind: _ordered(kind) for kind in TNM}, "biomarker": biomarker, "gene": gene,
    "ecog": ecog, "prior-treatment": prior_treatment, "treatment-lines": treatment_lines,
    "free-text": free_text,
}
