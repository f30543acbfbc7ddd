"""One patient against 10,000 synthetic trials, with explanations for the top 50 (issue 17
target: p95 <= 200 ms), and the pairs the index pruned vs evaluated.

What is timed, per patient: reading the patient's record (eligibility_record), then `$match`'s
ranking (trials/match.py `rank`: the index's candidates, the verdict and score of every
candidate, each criterion judged once per patient; the filters of every trial, pruned ones
included; the ineligible ranked after the others, the pruned last), explaining the top 50
(eligibility.evaluate; a pruned trial only if the 50 reach it) and rendering them
(match_render) — the work `$match` does once its catalogue is kept in memory
(trials/match_catalogue.py reads the store again only after a catalogue write).
HTTP, access and audit are not in it. Wall-clock p50/p95/p99 and process CPU per patient are
printed (the machine is shared: CPU time is the steadier figure).

    .venv/bin/python -m bench.matching [--trials 10000] [--patients 300] [--seed 7]
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import date
from typing import Any

from bench.common import machine, percentile
from fhir_server.access import Decision
from fhir_server.trials.eligibility import TrialIndex, pinned, read_record, read_trial
from fhir_server.trials.eligibility_codes import COMPARATOR_URL, CRITERION_SYSTEM, LOINC, PROFILE, UCUM
from fhir_server.trials.match import rank
from fhir_server.trials.match_catalogue import Catalogue
from fhir_server.trials.match_parameters import MatchRequest
from fhir_server.trials.match_render import entry

ICD10 = "http://hl7.org/fhir/sid/icd-10"
ATC = "http://www.whocc.no/atc"
TODAY = date(2026, 12, 6)
# Cancer sites of the synthetic catalogue, weighted roughly as trials are (breast, lung,
# colorectal, prostate, blood... first).
SITES = ["C50", "C34", "C18", "C61", "C25", "C16", "C64", "C67", "C56", "C53", "C71", "C43",
         "C22", "C15", "C32", "C73", "C83", "C90", "C91", "C92", "C49", "C40", "C62", "C54"]
WEIGHTS = [30, 22, 12, 10, 6, 5, 4, 4, 4, 3, 3, 3, 3, 2, 2, 2, 3, 3, 2, 2, 1, 1, 1, 2]
BIOMARKERS = ["48676-1", "85319-2", "85337-4", "40557-1"]
POSITIVE, NEGATIVE = "LA6576-8", "LA6577-6"


def _criterion(kind: str, text: str, value: dict[str, Any], exclude: bool = False,
               measured: str | None = None, **extension: str) -> dict[str, Any]:
    coding = [{"system": CRITERION_SYSTEM, "code": kind}]
    if measured:
        coding.append({"system": LOINC, "code": measured})
    body = {"code": {"coding": coding, "text": text}, **value, "exclude": exclude}
    if extension:
        body["extension"] = [{"url": COMPARATOR_URL, "valueCode": extension["comparator"]}]
    return body


def synthetic_group(rng: random.Random, n: int) -> dict[str, Any]:
    """A trial's eligibility Group: a diagnosis (sometimes a subcategory or two sites), age,
    often sex, ECOG, a biomarker, a stage, brain metastases excluded, prior treatment, free text."""
    site = rng.choices(SITES, WEIGHTS)[0]
    codes = [site if rng.random() < 0.8 else f"{site}.{rng.randint(0, 9)}"]
    if rng.random() < 0.1:
        codes.append(rng.choices(SITES, WEIGHTS)[0])
    criteria = [
        _criterion("condition", "Diagnosis", {"valueCodeableConcept": {"coding": [
            {"system": ICD10, "code": c} for c in codes[:1]]}}),
        _criterion("age", "Adult", {"valueRange": {"low": {"value": 18, "system": UCUM, "code": "a"},
                                                   **({"high": {"value": rng.choice([70, 75, 80]), "system": UCUM, "code": "a"}}
                                                      if rng.random() < 0.4 else {})}}),
        _criterion("ecog", "ECOG", {"valueRange": {"low": {"value": 0}, "high": {"value": rng.choice([1, 2])}}},
                   measured="89247-1"),
        _criterion("condition", "Brain metastases", {"valueCodeableConcept": {"coding": [
            {"system": ICD10, "code": "C79.3"}]}}, exclude=True),
        _criterion("free-text", "Adequate organ function", {"valueBoolean": True}),
    ]
    if rng.random() < 0.5:
        criteria.append(_criterion("biomarker", "Biomarker", {"valueCodeableConcept": {"coding": [
            {"system": LOINC, "code": rng.choice([POSITIVE, NEGATIVE])}]}}, measured=rng.choice(BIOMARKERS)))
    if rng.random() < 0.5:
        criteria.append(_criterion("stage", "Stage", {"valueCodeableConcept": {"text": rng.choice(["II", "III", "IV"])}},
                                   comparator=rng.choice(["ge", "le", "eq"])))
    if rng.random() < 0.3:
        criteria.append(_criterion("prior-treatment", "Prior platinum", {"valueCodeableConcept": {"coding": [
            {"system": ATC, "code": "L01XA"}]}}, exclude=rng.random() < 0.5))
    if site in ("C50", "C56", "C53", "C54") or rng.random() < 0.05:
        criteria.append(_criterion("sex", "Women", {"valueCodeableConcept": {"coding": [
            {"system": "http://hl7.org/fhir/administrative-gender", "code": "female"}]}}))
    return {"resourceType": "Group", "id": f"g{n}", "meta": {"versionId": "1", "profile": [PROFILE]},
            "type": "person", "actual": False, "characteristic": criteria}


def synthetic_patient(rng: random.Random, n: int) -> list[dict[str, Any]]:
    subject = {"reference": f"Patient/p{n}"}
    site = rng.choices(SITES, WEIGHTS)[0]
    resources: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": f"p{n}", "meta": {"versionId": "1"},
         "gender": "female" if site in ("C50", "C56", "C53", "C54") else rng.choice(["female", "male"]),
         "birthDate": f"{rng.randint(1935, 2000)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}"},
        {"resourceType": "Condition", "id": f"c{n}", "meta": {"versionId": "2"}, "subject": subject,
         "code": {"coding": [{"system": ICD10, "code": f"{site}.{rng.randint(0, 9)}"}]}},
    ]
    observations = [("89247-1", {"valueInteger": rng.randint(0, 3)}),
                    ("21908-9", {"valueCodeableConcept": {"text": rng.choice(["I", "IIA", "IIIB", "IV"])}}),
                    *((code, {"valueCodeableConcept": {"coding": [{"system": LOINC, "code": rng.choice([POSITIVE, NEGATIVE])}]}})
                      for code in rng.sample(BIOMARKERS, 2))]
    for k, (code, value) in enumerate(observations):
        if rng.random() < 0.8:
            resources.append({"resourceType": "Observation", "id": f"o{n}-{k}", "meta": {"versionId": "1"},
                              "status": "final", "subject": subject, "effectiveDateTime": "2026-11-01",
                              "code": {"coding": [{"system": LOINC, "code": code}]}, **value})
    return resources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--top", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    started = time.process_time()
    studies = {f"s{n:05d}": {"resourceType": "ResearchStudy", "id": f"s{n:05d}", "status": "active"}
               for n in range(args.trials)}
    index = TrialIndex(read_trial(id, [synthetic_group(rng, n)]) for n, id in enumerate(studies))
    # No sites: every trial is listed without one (the sites' cost is bench/match_server.py's).
    catalogue = Catalogue(studies, {t.study: t for t in index.trials}, index, {id: () for id in studies}, 90)
    print(f"index of {args.trials} trials built in {time.process_time() - started:.2f} s CPU")
    patients = [synthetic_patient(rng, n) for n in range(args.patients)]
    request = MatchRequest(None, None, None, None, frozenset(), True, args.top)

    wall, cpu, evaluated, pruned, listed, ineligible = [], [], 0, 0, 0, 0
    for resources in patients:
        t0, c0 = time.perf_counter(), time.process_time()
        record = read_record([(pinned(r), r) for r in resources], TODAY)
        page = rank(request, record, catalogue, Decision(()), None, args.top)
        rendered = [entry("http://bench/fhir", studies[f.trial.study], result, f.trial.groups, None, None)
                    for f, result in page.listed]
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
        evaluated += page.counts.evaluated
        pruned += page.counts.pruned
        listed += len(rendered)
        ineligible += sum(result.verdict == "ineligible" for _, result in page.listed)

    pairs = evaluated + pruned
    print(f"machine: {machine()}")
    print(f"{args.patients} patients x {args.trials} trials = {pairs} pairs: "
          f"{pruned} pruned by the index ({100 * pruned / pairs:.1f}%), {evaluated} evaluated; "
          f"{listed / args.patients:.1f} results explained per patient (top {args.top}), "
          f"{ineligible / args.patients:.1f} of them ineligible")
    for name, values in (("wall ms", sorted(wall)), ("CPU ms", sorted(cpu))):
        print(f"{name:8} p50 {percentile(values, 50):7.1f}  p95 {percentile(values, 95):7.1f}  "
              f"p99 {percentile(values, 99):7.1f}  max {max(values):7.1f}")


if __name__ == "__main__":
    main()
