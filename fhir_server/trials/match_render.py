"""How `$match` answers: a `searchset` Bundle of ResearchStudy, best first, as `Patient/$match`
answers with Patient (R4 patient-operation-match): each entry's `search` has `mode` `match`,
`score`, the extension `eligibility-match-result` carrying the verdict, the nearest
recruiting site with its distance and status date, and every criterion's explanation, then
R4's `match-grade` (MATCH_GRADE). An `outcome` entry holds the warnings and the counts
(docs/matching.md)."""

from __future__ import annotations

from typing import Any

from ..model.platform_codes import concepts
from .eligibility import ELIGIBLE, INELIGIBLE, UNDETERMINED, CriterionResult, TrialResult
from .eligibility_codes import CRITERION_SYSTEM, OURS, UCUM, VERDICT_SYSTEM
from .match_sites import Site

RESULT_URL = f"{OURS}/StructureDefinition/eligibility-match-result"
MATCH_GRADE_URL = "http://hl7.org/fhir/StructureDefinition/match-grade"
# R4 match-grade by verdict. Never `certain` ("automatically considered a full match"): an
# eligible trial still awaits a physician's review of the record (docs/matching.md).
MATCH_GRADE = {ELIGIBLE: "probable", UNDETERMINED: "possible", INELIGIBLE: "certainly-not"}


def coding(system: str, code: str) -> dict[str, Any]:
    found = concepts(system).get(code)
    return {"system": system, "code": code, **({"display": found["display"]} if found else {})}


def _criterion(result: CriterionResult, name: str = "criterion") -> dict[str, Any]:
    parts: list[dict[str, Any]] = [
        {"url": "key", "valueString": result.key},
        {"url": "text", "valueString": result.text},
        {"url": "type", "valueCoding": coding(CRITERION_SYSTEM, result.kind)
         if result.kind in concepts(CRITERION_SYSTEM) else {"code": result.kind}},
        {"url": "exclude", "valueBoolean": result.exclude},
        {"url": "verdict", "valueCoding": coding(VERDICT_SYSTEM, result.verdict)},
        *({"url": "evidence", "valueReference": {"reference": e}} for e in result.evidence),
    ]
    if result.missing:
        parts.append({"url": "missing", "valueString": result.missing})
    if result.warning:
        parts.append({"url": "warning", "valueString": result.warning})
    parts += [_criterion(m, "member") for m in result.members]
    return {"url": name, "extension": parts}


def result_extension(result: TrialResult, groups: tuple[str, ...], site: Site | None,
                     distance: float | None) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"url": "verdict", "valueCoding": coding(VERDICT_SYSTEM, result.verdict)}]
    parts += [{"url": "criteria", "valueReference": {"reference": g}} for g in groups]
    if site is not None:
        parts.append({"url": "site", "valueReference": {"reference": site.location}})
        if distance is not None:
            parts.append({"url": "distance", "valueQuantity": {
                "value": distance, "unit": "km", "system": UCUM, "code": "km"}})
        if site.confirmed:
            parts.append({"url": "siteStatusDate", "valueDateTime": site.confirmed})
    parts += [_criterion(c) for c in result.criteria]
    return {"url": RESULT_URL, "extension": parts}


def entry(base_url: str, study: dict[str, Any], result: TrialResult, groups: tuple[str, ...],
          site: Site | None, distance: float | None) -> dict[str, Any]:
    return {
        "fullUrl": f"{base_url}/ResearchStudy/{study['id']}",
        "resource": study,
        "search": {"extension": [result_extension(result, groups, site, distance),
                                 {"url": MATCH_GRADE_URL, "valueCode": MATCH_GRADE[result.verdict]}],
                   "mode": "match", "score": result.score},
    }
