"""A reference evaluator of computable eligibility, written from the documentation alone
(docs/matching.md §1-§2, profiles/StructureDefinition-eligibility-*.json, terminology/) and
sharing no code with the engine (`fhir_server/trials/eligibility*.py`): the brute-force side
of tests/trials/test_match_reference.py. It reads the ConceptMaps of terminology/ as data.

It evaluates what the documentation decides; the generator of that test keeps to those
cases. Verdicts are from the eligibility point of view: an exclusion is `met` when what it
excludes is shown absent. A missing datum gives `unknown`, never `not-met`."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

OURS = "https://oncotrials.example.org/fhir"
CRITERION_SYSTEM = f"{OURS}/CodeSystem/eligibility-criterion"
ECOG_SYSTEM = f"{OURS}/CodeSystem/ecog-performance-status"
COMPARATOR_URL = f"{OURS}/StructureDefinition/eligibility-comparator"
MINIMUM_URL = f"{OURS}/StructureDefinition/eligibility-minimum"
ONLY_IF_URL = f"{OURS}/StructureDefinition/eligibility-only-if"
ICD10 = ("http://hl7.org/fhir/sid/icd-10", "http://hl7.org/fhir/sid/icd-10-cm")
ICDO3 = "http://terminology.hl7.org/CodeSystem/icd-o-3"
LOINC = "http://loinc.org"
HGNC = "http://www.genenames.org/geneId"
ATC = "http://www.whocc.no/atc"
GENDER = "http://hl7.org/fhir/administrative-gender"
SNOMED = "http://snomed.info/sct"
CANCER_TYPE = f"{OURS}/CodeSystem/cancer-type"

MET, NOT_MET, UNKNOWN, NOT_APPLICABLE = "met", "not-met", "unknown", "not-applicable"
FLIP = {MET: NOT_MET, NOT_MET: MET, UNKNOWN: UNKNOWN}

# LOINC codes of the TNM categories and stage groups (docs/matching.md §1).
TNM_CODES = {"tnm-t": ("21905-5", "21899-0"), "tnm-n": ("21906-3", "21900-6"),
             "tnm-m": ("21907-1", "21901-4"), "stage": ("21908-9", "21902-2", "21914-7")}
ECOG_LOINC = "89247-1"
ECOG_ANSWERS = {f"LA96{n}": grade for grade, n in enumerate(("22-7", "23-5", "24-3", "25-0", "26-8", "27-6"))}
GENE_STUDIED, PRESENT, ABSENT = "48018-6", "LA9633-4", "LA9634-2"
FINAL = ("final", "amended", "corrected")

# The orders of docs/matching.md §1, each category with its main step.
T_ORDER = ["T0", "Tis", "T1", "T1mi", "T1a", "T1b", "T1c", "T2", "T2a", "T2b", "T2c", "T3", "T3a",
           "T3b", "T3c", "T3d", "T4", "T4a", "T4b", "T4c", "T4d"]
N_ORDER = ["N0", "N1", "N1mi", "N1a", "N1b", "N1c", "N2", "N2a", "N2b", "N2c", "N3", "N3a", "N3b", "N3c"]
M_ORDER = ["M0", "M1", "M1a", "M1b", "M1c", "M1d"]
STAGE_ORDER = ["0", "I", "IA", "IB", "IC", "II", "IIA", "IIB", "IIC", "III", "IIIA", "IIIB", "IIIC",
               "IV", "IVA", "IVB", "IVC"]
ORDERS = {"tnm-t": T_ORDER, "tnm-n": N_ORDER, "tnm-m": M_ORDER, "stage": STAGE_ORDER}
ROMAN = {"1": "I", "2": "II", "3": "III", "4": "IV", "0": "0"}

# Units by dimension, as factors of one unit of it (docs/matching.md §1, `biomarker`).
UNITS = {"g/L": ("mass", Decimal(1)), "mg/L": ("mass", Decimal("0.001")),
         "mg/dL": ("mass", Decimal("0.01")), "g/dL": ("mass", Decimal(10)),
         "%": ("ratio", Decimal("0.01")), "1": ("ratio", Decimal(1)),
         "10*9/L": ("count", Decimal(1)), "/uL": ("count", Decimal("0.001")),
         "a": ("time", Decimal(12)), "mo": ("time", Decimal(1))}
COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b, "lt": lambda a, b: a < b, "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b}
QUANTITY_COMPARATORS = {"<": "lt", "<=": "le", ">": "gt", ">=": "ge"}


@dataclass(frozen=True)
class Finding:
    """One criterion's verdict; `members` are an at-least criterion's, in order."""
    verdict: str
    members: tuple[Finding, ...] = ()


@dataclass(frozen=True)
class Verdict:
    verdict: str  # eligible | ineligible | undetermined
    score: float
    criteria: tuple[Finding, ...]

    def by_key(self) -> dict[str, str]:
        """Every criterion's verdict by its key as $match numbers them (`3`, members `3.1`)."""
        out: dict[str, str] = {}

        def walk(prefix: str, findings: tuple[Finding, ...]) -> None:
            for n, found in enumerate(findings, 1):
                key = f"{prefix}{n}"
                out[key] = found.verdict
                walk(f"{key}.", found.members)

        walk("", self.criteria)
        return out


@dataclass
class Patient:
    """What the rules read of one anonymous profile's resources."""
    today: date
    resources: list[dict[str, Any]]
    person: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        [self.person] = [r for r in self.resources if r["resourceType"] == "Patient"]

    def of(self, *types: str) -> list[dict[str, Any]]:
        return [r for r in self.resources if r["resourceType"] in types]

    def by_url(self, reference: str) -> dict[str, Any] | None:
        return next((r for r in self.resources if r.get("_fullUrl") == reference), None)


# --- helpers -----------------------------------------------------------------------------

def codings(concept: dict[str, Any] | None) -> list[dict[str, Any]]:
    return list((concept or {}).get("coding", []))


def extension(element: dict[str, Any], url: str) -> dict[str, Any] | None:
    return next((e for e in element.get("extension", []) if e["url"] == url), None)


@cache
def concept_maps() -> dict[tuple[str, str], tuple[list[str], bool]]:
    """(system, code) -> (ICD-10 codes holding the whole concept, whether the map knows it)."""
    folder = Path(__file__).resolve().parents[2] / "terminology"
    out: dict[tuple[str, str], tuple[list[str], bool]] = {}
    for name in ("ConceptMap-snomed-to-icd-10.json", "ConceptMap-cancer-type-to-icd-10.json"):
        for group in json.loads((folder / name).read_text())["group"]:
            for element in group["element"]:
                whole = [t["code"] for t in element.get("target", []) if t["equivalence"] in ("equivalent", "wider")]
                out[(group["source"], element["code"])] = (whole, True)
    return out


def icd10(code: str) -> str:
    return code.strip().upper().replace(".", "")


def diagnoses(patient: Patient) -> tuple[list[str], bool]:
    """The record's ICD-10 codes (dotless), recorded or placed by a ConceptMap, and whether a
    diagnosis is one a map knows but cannot place."""
    codes: list[str] = []
    unplaced = False
    for found in read_conditions(patient):
        own = [icd10(c["code"]) for c in codings(found.get("code")) if c.get("system") in ICD10]
        if own:
            codes += own
            continue
        for coding in codings(found.get("code")):
            placed, known = concept_maps().get((coding.get("system", ""), coding.get("code", "")), ([], False))
            codes += [icd10(c) for c in placed]
            unplaced |= known and not placed
    return codes, unplaced


def read_conditions(patient: Patient) -> list[dict[str, Any]]:
    """Conditions neither refuted nor entered in error."""
    def kept(c: dict[str, Any]) -> bool:
        status = {x.get("code") for x in codings(c.get("verificationStatus"))}
        return not status & {"refuted", "entered-in-error"}
    return [c for c in patient.of("Condition") if kept(c)]


def latest(observations: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The latest final Observation, by effective date then reference."""
    kept = [o for o in observations if o.get("status") in FINAL]
    return max(kept, key=lambda o: (o.get("effectiveDateTime", ""), o.get("_fullUrl", "")), default=None)


def observed(patient: Patient, codes: Iterable[str]) -> list[dict[str, Any]]:
    wanted = set(codes)
    return [o for o in patient.of("Observation")
            if any(c.get("system") == LOINC and c.get("code") in wanted for c in codings(o.get("code")))]


# --- ordered quantities: an interval a recorded value may lie in --------------------------

@dataclass(frozen=True)
class Interval:
    low: Decimal | None
    low_open: bool
    high: Decimal | None
    high_open: bool

    def contains(self, x: Decimal) -> bool:
        if self.low is not None and (x < self.low or (x == self.low and self.low_open)):
            return False
        return not (self.high is not None and (x > self.high or (x == self.high and self.high_open)))

    def within(self, other: Interval) -> bool:
        """Every point of self lies in other."""
        if other.low is not None:
            if self.low is None or self.low < other.low or (self.low == other.low and other.low_open and not self.low_open):
                return False
        if other.high is not None:
            if self.high is None or self.high > other.high or (self.high == other.high and other.high_open and not self.high_open):
                return False
        return True

    def meets(self, other: Interval) -> bool:
        """Some point lies in both."""
        low = max((b for b in (self.low, other.low) if b is not None), default=None)
        high = min((b for b in (self.high, other.high) if b is not None), default=None)
        if low is None or high is None or low < high:
            return True
        if low > high:
            return False
        return self.contains(low) and other.contains(low)


def interval(comparator: str, value: Decimal) -> Interval:
    return {"eq": Interval(value, False, value, False), "lt": Interval(None, True, value, True),
            "le": Interval(None, True, value, False), "gt": Interval(value, True, None, True),
            "ge": Interval(value, False, None, True)}[comparator]


def in_unit(quantity: dict[str, Any]) -> tuple[Decimal, str]:
    """(value in its dimension's unit, dimension); a unit not in the table is its own
    dimension."""
    code = quantity.get("code", quantity.get("unit", ""))
    dimension, factor = UNITS.get(code, (f"unit:{code}", Decimal(1)))
    return Decimal(str(quantity["value"])) * factor, dimension


def compare(recorded: Interval, wanted: Interval) -> str:
    if recorded.within(wanted):
        return MET
    return UNKNOWN if recorded.meets(wanted) else NOT_MET


def asked(characteristic: dict[str, Any], unit_of: Callable[[dict[str, Any]], tuple[Decimal, str] | None]
          ) -> tuple[Interval, str] | None:
    """The interval a valueQuantity (with comparator) or valueRange asks, and its dimension."""
    if "valueQuantity" in characteristic:
        q = characteristic["valueQuantity"]
        found = unit_of(q)
        if found is None:
            return None
        return interval(QUANTITY_COMPARATORS.get(q.get("comparator", ""), "eq"), found[0]), found[1]
    if "valueRange" in characteristic:
        r = characteristic["valueRange"]
        low = unit_of(r["low"]) if "low" in r else None
        high = unit_of(r["high"]) if "high" in r else None
        dims = {b[1] for b in (low, high) if b is not None}
        if len(dims) != 1:
            return None
        return Interval(low and low[0], False, high and high[0], False), dims.pop()
    return None


# --- the rules, one per type: each says whether what the criterion describes holds -------
# (met / not-met / unknown for the described fact; exclusions are flipped by `leaf`.)

def age_rule(c: dict[str, Any], patient: Patient) -> str:
    wanted = asked(c, lambda q: in_unit(q) if q.get("code", q.get("unit")) in ("a", "mo") else None)
    if wanted is None or wanted[1] != "time":
        return UNKNOWN
    birth = patient.person.get("birthDate")
    if not birth:
        return UNKNOWN
    parts = [int(p) for p in birth.split("-")]
    earliest = date(parts[0], parts[1] if len(parts) > 1 else 1, parts[2] if len(parts) > 2 else 1)
    if len(parts) == 3:
        last = earliest
    elif len(parts) == 2:
        following = date(parts[0] + (parts[1] == 12), parts[1] % 12 + 1, 1)
        last = date.fromordinal(following.toordinal() - 1)
    else:
        last = date(parts[0], 12, 31)

    def years(born: date) -> int:
        return patient.today.year - born.year - ((patient.today.month, patient.today.day) < (born.month, born.day))

    ages = range(years(last), years(earliest) + 1)  # in months, as the table's unit
    verdicts = {compare(Interval(Decimal(a * 12), False, Decimal(a * 12), False), wanted[0]) for a in ages}
    return verdicts.pop() if len(verdicts) == 1 else UNKNOWN


def sex_rule(c: dict[str, Any], patient: Patient) -> str:
    wanted = {x["code"] for x in codings(c.get("valueCodeableConcept")) if x.get("system") == GENDER}
    gender = patient.person.get("gender")
    if not wanted or gender in (None, "unknown"):
        return UNKNOWN
    return MET if gender in wanted else NOT_MET


def covers(wanted: str, recorded: str) -> bool:
    if "-" in wanted:  # a block of categories
        first, last = (icd10(x)[:3] for x in wanted.split("-"))
        return first <= recorded[:3] <= last
    return recorded.startswith(icd10(wanted))


def less_precise(wanted: str, recorded: str) -> bool:
    return "-" not in wanted and icd10(wanted).startswith(recorded) and icd10(wanted) != recorded


def condition_rule(c: dict[str, Any], patient: Patient) -> str:
    wanted = [x["code"] for x in codings(c.get("valueCodeableConcept")) if x.get("system") in ICD10]
    elsewhere = [x for x in codings(c.get("valueCodeableConcept")) if x.get("system") not in (*ICD10, ICDO3)]
    if not wanted:
        return UNKNOWN
    codes, unplaced = diagnoses(patient)
    if any(covers(w, r) for w in wanted for r in codes):
        return MET
    if elsewhere:  # a code without a rule may be the patient's: nothing is refuted
        return UNKNOWN
    if c.get("exclude") or not codes or unplaced or any(less_precise(w, r) for w in wanted for r in codes):
        return UNKNOWN
    return NOT_MET  # the closed-world rule of inclusion diagnoses


def icdo3_codes(patient: Patient, elements: tuple[str, ...]) -> list[str]:
    out = []
    for found in read_conditions(patient):
        for name in elements:
            value = found.get(name)
            for concept in value if isinstance(value, list) else [value]:
                out += [x["code"] for x in codings(concept) if x.get("system") == ICDO3]
    return out


def morphology_rule(c: dict[str, Any], patient: Patient) -> str:
    wanted = [x["code"] for x in codings(c.get("valueCodeableConcept")) if x.get("system") == ICDO3]
    if not wanted:
        return UNKNOWN
    recorded = [r for r in icdo3_codes(patient, ("code",)) if re.fullmatch(r"\d{4}/\d", r)]

    def holds(w: str, r: str) -> bool:
        return r == w if "/" in w else r.startswith(w)

    return MET if any(holds(w, r) for w in wanted for r in recorded) else UNKNOWN


def topography_rule(c: dict[str, Any], patient: Patient) -> str:
    wanted = [x["code"] for x in codings(c.get("valueCodeableConcept")) if x.get("system") == ICDO3]
    if not wanted:
        return UNKNOWN
    recorded = [icd10(r) for r in icdo3_codes(patient, ("code", "bodySite")) if r.upper().startswith("C")]
    return MET if any(r.startswith(icd10(w)) for w in wanted for r in recorded) else UNKNOWN


def category(kind: str, concept: dict[str, Any] | None) -> str | None:
    """The TNM category or stage group a value names, by its code, display or text."""
    texts = [x.get(k) for x in codings(concept) for k in ("code", "display")] + [(concept or {}).get("text")]
    for text in texts:
        if text and (found := parse_category(kind, text)):
            return found
    return None


def parse_category(kind: str, text: str) -> str | None:
    text = re.sub(r"\(.*\)$", "", text.strip())
    if kind == "stage":
        text = re.sub(r"(?i)^stage\s*", "", text).upper()
        text = re.sub(r"^([0-4])", lambda m: ROMAN[m.group(1)], text)
        return text if text in STAGE_ORDER else None
    letter = kind[-1].upper()
    found = re.fullmatch(rf"(?:c|p|yp|y|r|a)?({letter}.*)", text)
    return found.group(1) if found and found.group(1) in ORDERS[kind] else None


def main_step(kind: str, name: str) -> str:
    if kind == "stage":
        return next(m for m in ("IV", "III", "II", "I", "0") if name.startswith(m))
    return re.match(r"[TNM](is|\d)", name).group(0)  # type: ignore[union-attr]


def is_main(kind: str, name: str) -> bool:
    return main_step(kind, name) == name


def staged(kind: str, patient: Patient) -> str | None:
    found = latest(observed(patient, TNM_CODES[kind]))
    return category(kind, found.get("valueCodeableConcept")) if found else None


def ordered_rule(kind: str) -> Callable[[dict[str, Any], Patient], str]:
    def rule(c: dict[str, Any], patient: Patient) -> str:
        threshold = category(kind, c.get("valueCodeableConcept"))
        ext = extension(c, COMPARATOR_URL)
        comparator = ext["valueCode"] if ext else "eq"
        recorded = staged(kind, patient)
        if threshold is None or recorded is None:
            return UNKNOWN
        order = ORDERS[kind]
        if is_main(kind, recorded) and not is_main(kind, threshold) \
                and main_step(kind, recorded) == main_step(kind, threshold):
            return UNKNOWN  # T2 recorded, T2a asked: the record is less precise than the rule
        if is_main(kind, threshold):
            mains = [m for m in order if is_main(kind, m)]
            return MET if COMPARE[comparator](mains.index(main_step(kind, recorded)), mains.index(threshold)) else NOT_MET
        return MET if COMPARE[comparator](order.index(recorded), order.index(threshold)) else NOT_MET
    return rule


def metastasis_rule(c: dict[str, Any], patient: Patient) -> str:
    if not isinstance(c.get("valueBoolean"), bool):
        return UNKNOWN
    codes, _ = diagnoses(patient)
    m = staged("tnm-m", patient)
    stage = staged("stage", patient)
    behaviour = any(re.fullmatch(r"\d{4}/6", r) for r in icdo3_codes(patient, ("code",)))
    if any(r[:3] in ("C78", "C79") for r in codes) or behaviour or (m or "").startswith("M1") \
            or (stage or "").startswith("IV"):
        metastatic: bool | None = True
    elif m == "M0":
        metastatic = False
    else:
        return UNKNOWN
    return MET if metastatic == c["valueBoolean"] else NOT_MET


def loinc_of(c: dict[str, Any]) -> str | None:
    return next((x["code"] for x in codings(c.get("code")) if x.get("system") == LOINC), None)


def biomarker_rule(c: dict[str, Any], patient: Patient) -> str:
    code = loinc_of(c)
    if code is None:
        return UNKNOWN
    readings = []
    for o in patient.of("Observation"):
        if any(x.get("system") == LOINC and x.get("code") == code for x in codings(o.get("code"))):
            readings.append(o)
        for part in o.get("component", []):
            if any(x.get("system") == LOINC and x.get("code") == code for x in codings(part.get("code"))):
                readings.append({**part, "status": o.get("status"), "effectiveDateTime": o.get("effectiveDateTime"),
                                 "_fullUrl": o.get("_fullUrl")})
    found = latest(readings)
    if found is None:
        return UNKNOWN
    if "valueCodeableConcept" in c:  # LOINC answers: other systems have no rule
        wanted = {x.get("code") for x in codings(c["valueCodeableConcept"]) if x.get("system") == LOINC}
        got = {x.get("code") for x in codings(found.get("valueCodeableConcept")) if x.get("system") == LOINC}
        if not wanted or not got:
            return UNKNOWN
        return MET if wanted & got else NOT_MET
    wanted_interval = asked(c, lambda q: in_unit(q))
    value = found.get("valueQuantity")
    if wanted_interval is None or not value or "value" not in value:
        return UNKNOWN
    recorded = in_unit(value)
    if recorded[1] != wanted_interval[1]:
        return UNKNOWN
    return compare(interval(QUANTITY_COMPARATORS.get(value.get("comparator", ""), "eq"), recorded[0]),
                   wanted_interval[0])


def gene_rule(c: dict[str, Any], patient: Patient) -> str:
    genes = {x["code"] for x in codings(c.get("valueCodeableConcept")) if x.get("system") == HGNC}
    if not genes:
        return UNKNOWN
    studied = [o for o in patient.of("Observation") if o.get("status") in FINAL and any(
        any(x.get("system") == LOINC and x.get("code") == GENE_STUDIED for x in codings(part.get("code")))
        and any(x.get("system") == HGNC and x.get("code") in genes for x in codings(part.get("valueCodeableConcept")))
        for part in o.get("component", []))]

    def answer(o: dict[str, Any]) -> set[str]:
        return {x.get("code") for x in codings(o.get("valueCodeableConcept")) if x.get("system") == LOINC}

    if any(PRESENT in answer(o) for o in studied):
        return MET
    last = latest(studied)
    return NOT_MET if last is not None and ABSENT in answer(last) else UNKNOWN


def ecog_grade(o: dict[str, Any]) -> int | None:
    if "valueInteger" in o:
        return int(o["valueInteger"])
    if "valueQuantity" in o:
        return int(o["valueQuantity"]["value"])
    for x in codings(o.get("valueCodeableConcept")):
        if x.get("system") == LOINC and x.get("code") in ECOG_ANSWERS:
            return ECOG_ANSWERS[x["code"]]
        if x.get("system") == ECOG_SYSTEM and x.get("code", "").isdigit():
            return int(x["code"])
    return None


def ecog_rule(c: dict[str, Any], patient: Patient) -> str:
    if "valueCodeableConcept" in c:
        grade = ecog_grade(c)
        wanted = None if grade is None else interval("eq", Decimal(grade))
    else:
        found = asked(c, lambda q: (Decimal(str(q["value"])), "grade"))
        wanted = found[0] if found else None
    last = latest(observed(patient, (ECOG_LOINC,)))
    recorded = ecog_grade(last) if last else None
    if wanted is None or recorded is None:
        return UNKNOWN
    return compare(interval("eq", Decimal(recorded)), wanted)


MEDICATIONS = ("MedicationStatement", "MedicationRequest", "MedicationAdministration")


def treatments(patient: Patient) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """(record, its codings) of every treatment given or ordered."""
    out = []
    for p in patient.of("Procedure"):
        if p.get("status") in ("completed", "in-progress"):
            out.append((p, codings(p.get("code"))))
    for m in patient.of(*MEDICATIONS):
        if m.get("status") in ("entered-in-error", "not-taken") or m.get("intent") == "proposal":
            continue
        concept = m.get("medicationCodeableConcept")
        if "medicationReference" in m:
            medication = patient.by_url(m["medicationReference"]["reference"])
            concept = (medication or {}).get("code")
        out.append((m, codings(concept)))
    return out


def prior_treatment_rule(c: dict[str, Any], patient: Patient) -> str:
    wanted = codings(c.get("valueCodeableConcept"))
    if not wanted:
        return UNKNOWN

    def holds(w: dict[str, Any], r: dict[str, Any]) -> bool:
        if w.get("system") != r.get("system"):
            return False
        return r.get("code", "").startswith(w["code"]) if w.get("system") == ATC else r.get("code") == w.get("code")

    return MET if any(holds(w, r) for _, recorded in treatments(patient) for r in recorded for w in wanted) else UNKNOWN


def start_of(record: dict[str, Any]) -> str | None:
    return (record.get("effectivePeriod", {}).get("start") or record.get("effectiveDateTime")
            or record.get("authoredOn"))


def lines_rule(c: dict[str, Any], patient: Patient) -> str:
    wanted = asked(c, lambda q: (Decimal(str(q["value"])), "lines"))
    if wanted is None:
        return UNKNOWN
    starts = {start_of(record)[:10] for record, recorded in treatments(patient)
              if record["resourceType"] in MEDICATIONS and start_of(record)
              and any(r.get("system") == ATC and r.get("code", "")[:3] in ("L01", "L02") for r in recorded)}
    known = Interval(Decimal(len(starts)), False, None, True)  # a lower bound
    return compare(known, wanted[0])


RULES: dict[str, Callable[[dict[str, Any], Patient], str]] = {
    "age": age_rule, "sex": sex_rule, "condition": condition_rule, "morphology": morphology_rule,
    "topography": topography_rule, "metastasis": metastasis_rule, "biomarker": biomarker_rule,
    "gene": gene_rule, "ecog": ecog_rule, "prior-treatment": prior_treatment_rule,
    "treatment-lines": lines_rule, **{k: ordered_rule(k) for k in ORDERS},
}


def criterion_type(c: dict[str, Any]) -> str | None:
    return next((x.get("code") for x in codings(c.get("code")) if x.get("system") == CRITERION_SYSTEM), None)


def contained(group: dict[str, Any], reference: dict[str, Any] | None) -> dict[str, Any] | None:
    target = (reference or {}).get("reference", "")
    return next((g for g in group.get("contained", []) if f"#{g.get('id')}" == target), None)


def judge(c: dict[str, Any], group: dict[str, Any], patient: Patient) -> Finding:
    """One characteristic's finding, its only-if condition applied."""
    found = plain(c, group, patient)
    ext = extension(c, ONLY_IF_URL)
    if ext is None:
        return found
    condition = contained(group, ext.get("valueReference"))
    if condition is None:
        return Finding(UNKNOWN, found.members)
    verdicts = [judge(x, group, patient).verdict for x in condition.get("characteristic", [])]
    if NOT_MET in verdicts:
        return Finding(NOT_APPLICABLE, found.members)
    if all(v == MET for v in verdicts):
        return found
    return found if found.verdict == MET else Finding(UNKNOWN, found.members)


def plain(c: dict[str, Any], group: dict[str, Any], patient: Patient) -> Finding:
    kind = criterion_type(c)
    if kind == "at-least":
        members_group = contained(group, c.get("valueReference"))
        if members_group is None:
            return Finding(UNKNOWN)
        members = tuple(judge(m, group, patient) for m in members_group.get("characteristic", []))
        ext = extension(c, MINIMUM_URL)
        need = ext["valuePositiveInt"] if ext else 1
        met = sum(m.verdict == MET for m in members)
        open_ = sum(m.verdict == UNKNOWN for m in members)
        verdict = MET if met >= need else NOT_MET if met + open_ < need else UNKNOWN
        return Finding(verdict, members)
    rule = RULES.get(kind or "")
    if rule is None:  # free-text, and every type the engine does not know
        return Finding(UNKNOWN)
    described = rule(c, patient)
    return Finding(FLIP[described] if c.get("exclude") else described)


def evaluate(groups: list[dict[str, Any]], resources: list[dict[str, Any]], today: date) -> Verdict:
    """A trial's verdict, score and findings for one profile: `resources` are the Bundle's
    resources, each with its fullUrl under `_fullUrl`."""
    patient = Patient(today, resources)
    findings = tuple(judge(c, g, patient) for g in groups for c in g.get("characteristic", []))
    applicable = [f.verdict for f in findings if f.verdict != NOT_APPLICABLE]
    if not findings:
        return Verdict("undetermined", 0.0, findings)
    if NOT_MET in applicable:
        return Verdict("ineligible", 0.0, findings)
    if all(v == MET for v in applicable):
        return Verdict("eligible", 1.0, findings)
    return Verdict("undetermined", applicable.count(MET) / len(applicable), findings)
