"""The code knowledge eligibility needs, written from public facts (no WHO or LOINC content
is shipped: only the structure of the codes and the handful of LOINC codes named in
docs/matching.md): code systems, hierarchies (ICD-10, ICD-O-3, ATC), the order of TNM
categories and stage groups, ECOG grades, numeric intervals and UCUM unit conversions."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

OURS = "https://oncotrials.example.org/fhir"
CRITERION_SYSTEM = f"{OURS}/CodeSystem/eligibility-criterion"
VERDICT_SYSTEM = f"{OURS}/CodeSystem/match-verdict"
PROFILE = f"{OURS}/StructureDefinition/eligibility-criteria"
COMPARATOR_URL = f"{OURS}/StructureDefinition/eligibility-comparator"
MINIMUM_URL = f"{OURS}/StructureDefinition/eligibility-minimum"
ONLY_IF_URL = f"{OURS}/StructureDefinition/eligibility-only-if"
ECOG_SYSTEM = f"{OURS}/CodeSystem/ecog-performance-status"

ICD10 = frozenset({"http://hl7.org/fhir/sid/icd-10", "http://hl7.org/fhir/sid/icd-10-cm"})
ICDO3 = "http://terminology.hl7.org/CodeSystem/icd-o-3"
LOINC = "http://loinc.org"
HGNC = frozenset({"http://www.genenames.org/geneId", "http://www.genenames.org"})
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"
GENDER = "http://hl7.org/fhir/administrative-gender"
# Systems compared code for code (no hierarchy is held for them).
FLAT = frozenset({"http://snomed.info/sct", "http://www.nlm.nih.gov/research/umls/rxnorm",
                  "https://mos.esante.gouv.fr/NOS/TRE_R256-CCAM/FHIR/TRE-R256-CCAM"})

ECOG = "89247-1"
# LOINC codes of TNM categories and stage groups, clinical then pathological.
TNM = {
    "tnm-t": ("21905-5", "21899-0"), "tnm-n": ("21906-3", "21900-6"),
    "tnm-m": ("21907-1", "21901-4"), "stage": ("21908-9", "21902-2", "21914-7"),
}
GENE_STUDIED = "48018-6"
VARIANT_ASSESSMENT = "69548-6"
PRESENT, ABSENT = "LA9633-4", "LA9634-2"
# LOINC answers of the ECOG scale, grade by grade.
ECOG_ANSWERS = {"LA9622-7": 0, "LA9623-5": 1, "LA9624-3": 2, "LA9625-0": 3, "LA9626-8": 4,
                "LA9627-6": 5}
# Antineoplastic (L01) and endocrine (L02) therapy: what a line of treatment is made of.
LINE_CLASSES = ("L01", "L02")


def _compact(code: str) -> str:
    return code.upper().replace(".", "").replace(" ", "")


# The code functions are pure and called for every (criterion, recorded code) pair: caching
# them makes one patient against thousands of trials mostly dictionary look-ups.
@lru_cache(maxsize=65_536)
def icd10_keys(code: str) -> tuple[str, ...]:
    """The codes, from the 3-character category down, that cover an ICD-10 code: C50.4 is
    under C50 and C504."""
    compact = _compact(code)
    return tuple(compact[:n] for n in range(3, len(compact) + 1))


@lru_cache(maxsize=65_536)
def icd10_categories(code: str) -> tuple[str, ...]:
    """The codes a criterion's ICD-10 code names, compacted: a category or subcategory as
    itself, a block (`C00-C14`) as each of its 3-character categories."""
    if "-" not in code:
        return (_compact(code),)
    first, _, last = (_compact(part)[:3] for part in code.partition("-"))
    if len(first) < 3 or len(last) < 3 or first[0] != last[0] or not (
            first[1:].isdigit() and last[1:].isdigit()):
        return ()
    return tuple(f"{first[0]}{n:02d}" for n in range(int(first[1:]), int(last[1:]) + 1))


def icd10_covers(criterion: str, code: str) -> bool:
    """Whether the criterion's ICD-10 code (category, subcategory or block) covers `code`."""
    keys = set(icd10_keys(code))
    return any(c in keys for c in icd10_categories(criterion))


def is_morphology(code: str) -> bool:
    """ICD-O-3 morphology (`8500/3`, or a criterion's `850` / `8500`) rather than topography."""
    return bool(re.fullmatch(r"\d{3,4}(/\d)?", code.strip()))


def icdo3_covers(criterion: str, code: str) -> bool:
    """ICD-O-3: `8500/3` covers itself, `8500` any behaviour, `850` its four-digit codes;
    topography `C50` covers `C50.9`."""
    if is_morphology(criterion) != is_morphology(code):
        return False
    if is_morphology(criterion):
        return code.strip().startswith(criterion.strip())
    return _compact(code).startswith(_compact(criterion))


def behaviour(code: str) -> str | None:
    """The behaviour digit of an ICD-O-3 morphology code (`6`: metastatic)."""
    found = re.fullmatch(r"\d{4}/(\d)", code.strip())
    return found.group(1) if found else None


def atc_covers(criterion: str, code: str) -> bool:
    """ATC is hierarchical by prefix: L01XE covers L01XE03."""
    return code.strip().upper().startswith(criterion.strip().upper())


@lru_cache(maxsize=65_536)
def covers(system: str, criterion: str, code: str) -> bool | None:
    """Whether a criterion's code covers a recorded code of the same system; None when the
    server holds no rule for that system."""
    if system in ICD10:
        return icd10_covers(criterion, code)
    if system == ICDO3:
        return icdo3_covers(criterion, code)
    if system == ATC:
        return atc_covers(criterion, code)
    if system in FLAT or system == LOINC or system in HGNC or system == GENDER:
        return criterion == code
    return None


def same_system(a: str, b: str) -> bool:
    return a == b or (a in ICD10 and b in ICD10) or (a in HGNC and b in HGNC)


# -- ordered categories -------------------------------------------------------------------

@dataclass(frozen=True, slots=True, order=True)
class Rank:
    """A TNM category or stage group: its major step and its subdivision (0 when none)."""

    major: float
    minor: float = 0
    has_minor: bool = False


_LETTERS = {"mi": 0.5, "a": 1, "b": 2, "c": 3, "d": 4}
_ROMAN = {"0": 0, "I": 1, "II": 2, "III": 3, "IV": 4, "1": 1, "2": 2, "3": 3, "4": 4}


@lru_cache(maxsize=4096)
def tnm_rank(kind: str, text: str) -> Rank | None:
    """The rank of a T, N or M category (`pT2a`, `cN1`, `M1b`, `T0`, `Tis`); None when it
    cannot be read or is `X` (not assessed)."""
    letter = {"tnm-t": "T", "tnm-n": "N", "tnm-m": "M"}[kind]
    found = re.search(rf"(?:^|[^A-Z])(?:y?[cpra])?{letter}(is|[0-4])(mi|[a-d])?", text.strip(),
                      re.IGNORECASE)
    if found is None:
        return None
    major, minor = found.group(1).lower(), (found.group(2) or "").lower()
    # T0 < Tis < T1: carcinoma in situ sits between no tumour and T1.
    value = 0.5 if major == "is" else float(major)
    return Rank(value, _LETTERS.get(minor, 0), bool(minor))


@lru_cache(maxsize=4096)
def stage_rank(text: str) -> Rank | None:
    """The rank of a stage group (`IIIA`, `Stage 3A`, `IV`, `0`); None if unreadable."""
    found = re.search(r"(?:^|stage\s*|\s)(IV|III|II|I|[0-4])(is)?([ABC])?([123])?\b",
                      text.strip(), re.IGNORECASE)
    if found is None:
        return None
    major = _ROMAN[found.group(1).upper()]
    minor = found.group(3)
    return Rank(float(major), _LETTERS[minor.lower()] if minor else 0, bool(minor))


def rank_compare(patient: Rank, threshold: Rank) -> int:
    """-1, 0 or 1: the patient's rank against a threshold; a threshold without subdivision
    compares major steps only (`>= T2` holds for T2a)."""
    if not threshold.has_minor:
        return (patient.major > threshold.major) - (patient.major < threshold.major)
    a, b = (patient.major, patient.minor), (threshold.major, threshold.minor)
    return (a > b) - (a < b)


def holds(comparison: int, comparator: str) -> bool:
    return {"eq": comparison == 0, "lt": comparison < 0, "le": comparison <= 0,
            "gt": comparison > 0, "ge": comparison >= 0}[comparator]


# -- numbers ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Interval:
    """A set of reals: [low, high] with open or closed ends (infinite ends open)."""

    low: float = -math.inf
    high: float = math.inf
    low_closed: bool = True
    high_closed: bool = True

    @staticmethod
    def point(value: float) -> Interval:
        return Interval(value, value)

    @staticmethod
    def compared(comparator: str | None, value: float) -> Interval:
        """The values `comparator value` admits (FHIR Quantity.comparator; none: equal).
        ValueError for another comparator."""
        found = {None: Interval(value, value), "<": Interval(high=value, high_closed=False),
                 "<=": Interval(high=value), ">": Interval(low=value, low_closed=False),
                 ">=": Interval(low=value)}.get(comparator)
        if found is None:
            raise ValueError(f"comparator {comparator!r}")
        return found

    def scaled(self, factor: float) -> Interval:
        return Interval(self.low * factor, self.high * factor, self.low_closed, self.high_closed)

    def _above_low(self, x: float) -> bool:
        return x > self.low or (x == self.low and self.low_closed)

    def _below_high(self, x: float) -> bool:
        return x < self.high or (x == self.high and self.high_closed)

    def contains(self, other: Interval) -> bool:
        low_ok = other.low > self.low or (other.low == self.low and (self.low_closed or not other.low_closed))
        high_ok = other.high < self.high or (other.high == self.high and (self.high_closed or not other.high_closed))
        return low_ok and high_ok

    def disjoint(self, other: Interval) -> bool:
        lo = max(self.low, other.low)
        hi = min(self.high, other.high)
        if lo > hi:
            return True
        if lo < hi:
            return False
        return not (self._above_low(lo) and self._below_high(lo)
                    and other._above_low(lo) and other._below_high(lo))

    def test(self, value: Interval) -> bool | None:
        """True when every value of `value` lies in this interval, False when none does,
        None when some may (a recorded `< 5` against `<= 2`)."""
        if self.contains(value):
            return True
        if self.disjoint(value):
            return False
        return None


# UCUM units in one dimension, as factors to a base unit of that dimension.
_UNITS: dict[str, tuple[str, float]] = {
    "%": ("fraction", 0.01), "1": ("fraction", 1.0), "{ratio}": ("fraction", 1.0),
    "g/L": ("mass/volume", 1.0), "g/dL": ("mass/volume", 10.0), "mg/dL": ("mass/volume", 0.01),
    "mg/L": ("mass/volume", 1e-3), "ug/mL": ("mass/volume", 1e-3), "ug/L": ("mass/volume", 1e-6),
    "ng/mL": ("mass/volume", 1e-6), "ng/L": ("mass/volume", 1e-9), "pg/mL": ("mass/volume", 1e-9),
    "10*9/L": ("count/volume", 1.0), "10*3/uL": ("count/volume", 1.0),
    "/uL": ("count/volume", 1e-3), "/mm3": ("count/volume", 1e-3), "10*12/L": ("count/volume", 1e3),
    "mmol/L": ("substance/volume", 1.0), "umol/L": ("substance/volume", 1e-3),
    "a": ("time", 365.25), "mo": ("time", 30.4375), "wk": ("time", 7.0), "d": ("time", 1.0),
    "mL/min": ("flow", 1.0), "mL/min/{1.73_m2}": ("flow-bsa", 1.0),
    "[IU]/L": ("iu/volume", 1.0), "U/L": ("u/volume", 1.0), "kU/L": ("u/volume", 1e3),
    "{mutations}/{Mb}": ("tmb", 1.0), "/[Mb]": ("tmb", 1.0),
}


def unit_factor(from_unit: str, to_unit: str) -> float | None:
    """The factor turning a value in `from_unit` into `to_unit` (UCUM codes); None when they
    are not of one dimension the server knows."""
    if from_unit == to_unit:
        return 1.0
    a, b = _UNITS.get(from_unit), _UNITS.get(to_unit)
    if a is None or b is None or a[0] != b[0]:
        return None
    return a[1] / b[1]
