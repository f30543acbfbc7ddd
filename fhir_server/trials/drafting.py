"""A rule-based drafter of computable eligibility (docs/matching.md, "Drafting criteria"):
free-text criteria, as ECLAIRE publishes them, become characteristics of a *draft*
eligibility Group (eligibility_format.py's format), each with the sentence it came from and a
confidence. Pure: no I/O, no network, no model; French and English wording.

What it recognises, per sentence: age (`18 years or older`, `âgé de 18 à 70 ans`), sex, a
diagnosis among a small dictionary of cancers (ICD-10), brain metastases, metastatic disease,
stage (I to IV, with `or more`), ECOG, HER2 status, activating mutations of EGFR, ALK, BRAF,
KRAS (HGNC), prior lines of therapy, prior treatments named by a drug or drug class of the
lexicon drafting-drugs.json (ATC). A sentence it cannot read becomes a `free-text`
criterion (never evaluated). A sentence under an exclusion heading, or one the drafter reads
as an exclusion (`no brain metastases`), is `exclude`.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from .eligibility_codes import ATC, COMPARATOR_URL, CRITERION_SYSTEM, LOINC, OURS, UCUM

CONFIDENCE_URL = f"{OURS}/StructureDefinition/eligibility-draft-confidence"
GENDER = "http://hl7.org/fhir/administrative-gender"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
HGNC = "http://www.genenames.org/geneId"
HER2, POSITIVE, NEGATIVE = "48676-1", "LA6576-8", "LA6577-6"
ECOG = "89247-1"
# (pattern on the folded sentence, ICD-10 code or block): the first that matches wins, so the
# more specific come first.
DIAGNOSES: tuple[tuple[str, str], ...] = (
    (r"brain metasta|metastases? cerebrales?|metastases? cerebrale", "C79.3"),
    (r"non[- ]small[- ]cell lung|nsclc|cbnpc|lung|poumon|pulmonaire|bronch", "C34"),
    (r"breast|sein|mammaire", "C50"),
    (r"colorectal|colorectum|colo-?rectal", "C18-C20"),
    (r"colon\b|du colon", "C18"),
    (r"prostat", "C61"),
    (r"pancrea", "C25"),
    (r"melanom", "C43"),
    (r"ovar", "C56"),
    (r"gastric|stomach|estomac|gastrique", "C16"),
    (r"renal cell|kidney|rein\b|renal\b", "C64"),
    (r"bladder|urothelial|vessie", "C67"),
    (r"glioblastom|gliom", "C71"),
    (r"myelom", "C90"),
    (r"diffuse large b-?cell|dlbcl|lymphome diffus a grandes cellules b", "C83.3"),
    (r"lymphom", "C85"),
    (r"cervical cancer|cervix|col de l'uterus|col uterin", "C53"),
    (r"endometri", "C54"),
    (r"hepatocellular|liver|foie|hepatocarcinom", "C22"),
    (r"oesophag|esophag", "C15"),
    (r"thyro", "C73"),
    (r"solid tumou?r|tumeur solide", "C00-C80"),
)
GENES = {"egfr": "HGNC:3236", "alk": "HGNC:427", "braf": "HGNC:1097", "kras": "HGNC:6407"}
NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "un": 1, "une": 1, "deux": 2, "trois": 3}
_EXCLUSION_HEADING = re.compile(r"^\s*(exclusion|non[- ]inclusion|criteres? d'exclusion|criteres? de non[- ]inclusion)\b")
_INCLUSION_HEADING = re.compile(r"^\s*(inclusion|criteres? d'inclusion)\b")
_DRUGS = Path(__file__).with_name("drafting-drugs.json")
# A drug named outside these words (an allergy, an eligibility for it) is no prior treatment.
_TREATED = re.compile(r"\b(prior|previous(ly)?|received|treated|treatments?|therapy|progress(ion|ed)|refractory|"
                      r"traitements?|traitee?s?|anterieure?s?|prealables?|recue?s?|refractaires?)\b")
_NEGATED = re.compile(r"^\s*(no|without|absence of|pas de|sans|absence de)\b")


@dataclass(frozen=True, slots=True)
class Drafted:
    """One drafted criterion: its type, value[x] (as a dict), whether it excludes, the
    sentence it came from and how sure the drafter is (0 to 1)."""

    kind: str
    value: dict[str, Any]
    exclude: bool
    sentence: str
    confidence: float
    measured: str | None = None  # the LOINC code of what is measured, if any


def fold(text: str) -> str:
    """Lower case, without accents, whitespace collapsed (what the patterns read)."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).split())


def sentences(text: str) -> list[tuple[str, bool]]:
    """(sentence, under an exclusion heading) of a criteria text: one per line or bullet, and
    per `;`. A line that is only a heading switches inclusion / exclusion."""
    found, excluding = [], False
    for line in re.split(r"[\n\r]+|(?:^|\s)[•\-\*]\s+|;", text):
        line = line.strip(" .:\t").lstrip("-•*· ").strip()
        if not line:
            continue
        folded = fold(line)
        if _EXCLUSION_HEADING.match(folded) and len(folded) < 40:
            excluding = True
            continue
        if _INCLUSION_HEADING.match(folded) and len(folded) < 40:
            excluding = False
            continue
        found.append((line, excluding))
    return found


def _number(word: str) -> int | None:
    return int(word) if word.isdigit() else NUMBERS.get(word)


def _quantity(value: float, unit: str, comparator: str | None = None) -> dict[str, Any]:
    q: dict[str, Any] = {"value": value, "system": UCUM, "code": unit}
    if comparator:
        q["comparator"] = comparator
    return {"valueQuantity": q}


def _range(low: float, high: float, unit: str) -> dict[str, Any]:
    return {"valueRange": {"low": {"value": low, "system": UCUM, "code": unit},
                           "high": {"value": high, "system": UCUM, "code": unit}}}


def _coded(system: str, code: str) -> dict[str, Any]:
    return {"valueCodeableConcept": {"coding": [{"system": system, "code": code}]}}


def _age(s: str) -> tuple[dict[str, Any], float] | None:
    if m := re.search(r"(\d{1,3})\s*(?:-|to|a|et)\s*(\d{1,3})\s*(?:years|ans|y\b)", s) or \
            re.search(r"(?:aged?|age|agee?s?)\s*(?:de\s*)?(\d{1,3})\s*(?:-|to|a|et)\s*(\d{1,3})", s):
        return _range(int(m[1]), int(m[2]), "a"), 0.9
    if m := re.search(r"(\d{1,3})\s*(?:years|ans)?\s*(?:or|and|ou|et)\s*(?:older|over|plus)", s) or \
            re.search(r"(?:>=|≥|at least|au moins|plus de)\s*(\d{1,3})\s*(?:years|ans)", s):
        return _quantity(int(m[1]), "a", ">="), 0.9
    if m := re.search(r"(\d{1,3})\s*(?:years|ans)?\s*(?:or|ou)\s*(?:younger|less|moins)", s):
        return _quantity(int(m[1]), "a", "<="), 0.85
    if re.search(r"\b(adults?|adultes?|majeure?s?)\b", s):
        return _quantity(18, "a", ">="), 0.7
    return None


@cache
def _drug_names() -> tuple[tuple[re.Pattern[str], str], ...]:
    """(a name as a whole word, plural too; its ATC code) of the lexicon."""
    table: dict[str, list[str]] = json.loads(_DRUGS.read_text(encoding="utf-8"))["drugs"]
    return tuple((re.compile(rf"(?<![\w-]){re.escape(name)}s?(?!\w)"), code)
                 for code, names in table.items() for name in names)


def _drugs(s: str) -> list[str]:
    """The ATC codes of the treatments `s` names as received, in order of mention; a class
    named beside one of its members (`platinum-based chemotherapy`) gives the member only."""
    if not _TREATED.search(s):
        return []
    found = sorted((m.start(), code) for pattern, code in _drug_names() if (m := pattern.search(s)))
    codes = list(dict.fromkeys(code for _, code in found))
    return [c for c in codes if not any(o != c and o.startswith(c) for o in codes)]


def _drug_confidence(code: str) -> float:
    """A substance is named exactly; a class less so; L01 and L02 (`chemotherapy`, `hormone
    therapy`) are wider than the words (L01 holds antibodies and kinase inhibitors too)."""
    return 0.85 if len(code) == 7 else 0.5 if len(code) == 3 else 0.75


def _rules(s: str, excluded: bool) -> list[Drafted]:
    """The criteria read in one folded sentence `s` (the original kept by the caller)."""
    found: list[Drafted] = []
    negated = bool(_NEGATED.match(s))
    drugs = _drugs(s)
    if (age := _age(s)) is not None and re.search(r"\b(age|aged|agee?s?|years|ans|adults?|adultes?|older|younger)\b", s):
        found.append(Drafted("age", age[0], excluded, "", age[1]))
    if re.search(r"\b(women|female|femmes?)\b", s):
        found.append(Drafted("sex", _coded(GENDER, "female"), excluded, "", 0.8))
    elif re.search(r"\b(men|male|hommes?)\b", s):
        found.append(Drafted("sex", _coded(GENDER, "male"), excluded, "", 0.8))
    if m := re.search(r"ecog[^0-9]{0,30}(\d)\s*(?:-|to|or|a|ou|–)\s*(\d)", s):
        found.append(Drafted("ecog", _range(int(m[1]), int(m[2]), "1"), excluded, "", 0.9, ECOG))
    elif m := re.search(r"ecog[^0-9]{0,30}(?:<=|≤|of at most|at most)\s*(\d)", s):
        found.append(Drafted("ecog", _range(0, int(m[1]), "1"), excluded, "", 0.85, ECOG))
    if m := re.search(r"\bher2\b[^.]{0,20}?\b(positi|negati|\+|-)", s):
        code = POSITIVE if m[1] in ("positi", "+") else NEGATIVE
        found.append(Drafted("biomarker", _coded(LOINC, code), excluded, "", 0.85, HER2))
    for gene, hgnc in GENES.items():
        if re.search(rf"\b{gene}\b[^.]{{0,40}}(mutat|rearrang|fusion|alteration|v600)|(mutat|rearrang)[^.]{{0,30}}\b{gene}\b", s):
            found.append(Drafted("gene", _coded(HGNC, hgnc), excluded != negated, "", 0.8))
    if m := re.search(r"\b(?:stage|stade)\s*(iv|iii|ii|i)[abc]?\b(\s*(?:or|ou)\s*(?:more|higher|plus|iv)|\s*(?:-|to|a)\s*iv)?", s):
        stage = {"valueCodeableConcept": {"text": m[1].upper()}}
        comparator = "ge" if m[2] or m[1] == "iv" else "eq"  # nothing lies above IV
        found.append(Drafted("stage", {**stage, "comparator": comparator}, excluded, "", 0.85))
    if m := re.search(r"(?:at least|>=|≥|au moins)\s*(\w+)\s*(?:prior|previous|line|lignes?|anterieures?)", s) or \
            re.search(r"(\w+)\s*(?:or more|ou plus)\s*(?:prior|previous)?\s*lines?", s):
        if (count := _number(m[1])) is not None:
            found.append(Drafted("treatment-lines", _quantity(count, "{lines}", ">="), excluded, "", 0.75))
    elif not drugs and re.search(r"\b(no prior|without prior|treatment[- ]naive|naifs? de|sans traitement anterieur)\b", s):
        found.append(Drafted("treatment-lines", _quantity(0, "{lines}", "<="), excluded, "", 0.7))
    found += [Drafted("prior-treatment", _coded(ATC, atc), excluded != negated, "", _drug_confidence(atc))
              for atc in drugs]
    code = next((code for pattern, code in DIAGNOSES if re.search(pattern, s)), None)
    if code is not None:
        # "no brain metastases" among inclusions is an exclusion of them
        exclude = excluded != (negated and code == "C79.3")
        found.append(Drafted("condition", _coded(ICD10, code), exclude, "", 0.8 if "-" in code else 0.85))
    if code != "C79.3" and re.search(r"\bmetasta", s):
        found.append(Drafted("metastasis", {"valueBoolean": True}, excluded != negated, "", 0.75))
    return found


def draft(text: str) -> list[Drafted]:
    """Every criterion drafted from a criteria text, in order; a sentence read as nothing is
    a free-text criterion."""
    out: list[Drafted] = []
    for sentence, excluded in sentences(text):
        found = _rules(fold(sentence), excluded)
        if not found:
            found = [Drafted("free-text", {"valueBoolean": True}, excluded, "", 1.0)]
        out += [Drafted(d.kind, d.value, d.exclude, sentence, d.confidence, d.measured) for d in found]
    return out


def characteristic(drafted: Drafted) -> dict[str, Any]:
    """A characteristic of the eligibility format, with its source sentence (`code.text`)
    and confidence (extension CONFIDENCE_URL)."""
    coding = [{"system": CRITERION_SYSTEM, "code": drafted.kind}]
    if drafted.measured:
        coding.append({"system": LOINC, "code": drafted.measured})
    value = dict(drafted.value)
    comparator = value.pop("comparator", None)
    extensions = [{"url": CONFIDENCE_URL, "valueDecimal": drafted.confidence}]
    if comparator and comparator != "eq":
        extensions.append({"url": COMPARATOR_URL, "valueCode": comparator})
    return {"extension": extensions, "code": {"coding": coding, "text": drafted.sentence},
            **value, "exclude": drafted.exclude}
