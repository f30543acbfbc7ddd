"""The quality harness behind `fhir-server eval DIR` (docs/matching.md, "Evaluation").

DIR holds `patients/*.json` (one Bundle per patient: the topic is the Patient's id),
`trials/*.json` (one Bundle per trial: a ResearchStudy, the document, and its eligibility
Groups), `qrels.txt` (TREC judgments `topic 0 doc rel`: 0 not relevant, 1 excluded,
2 eligible) and optionally `criteria.txt` (`topic study key met|not-met`, the key as the
engine numbers criteria). The engine is called directly (no store, no HTTP); BM25 over the
trials' text is the baseline, scored by the same code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from .bm25 import BM25
from .eligibility import (ELIGIBLE, INELIGIBLE, NOT_APPLICABLE, NOT_MET, UNKNOWN, CriterionResult, TrialIndex,
                          TrialResult,
                          evaluate, is_eligibility_group, pinned, read_record, read_trial)
from .eligibility_record import Record

CUTOFF = 10
ELIGIBLE_GRADE = 2
Qrels = dict[str, dict[str, int]]


class EvalError(ValueError):
    """The evaluation set is unreadable (the message says which file and line)."""


@dataclass(frozen=True)
class Study:
    resource: dict[str, Any]
    groups: list[dict[str, Any]]


@dataclass
class Dataset:
    patients: dict[str, list[dict[str, Any]]]
    studies: dict[str, Study]
    qrels: Qrels
    labels: dict[tuple[str, str, str], str] = field(default_factory=dict)


def _bundle(path: Path) -> list[dict[str, Any]]:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise EvalError(f"{path}: not a readable JSON file ({error})") from None
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise EvalError(f"{path}: not a Bundle")
    entries = [e for e in body.get("entry", []) if isinstance(e, dict)]
    return [e["resource"] for e in entries if isinstance(e.get("resource"), dict)]


def _only(resources: list[dict[str, Any]], kind: str, path: Path) -> dict[str, Any]:
    found = [r for r in resources if r.get("resourceType") == kind]
    if len(found) != 1 or not found[0].get("id"):
        raise EvalError(f"{path}: expected exactly one {kind} with an id, found {len(found)}")
    return found[0]


def _study(resources: list[dict[str, Any]], path: Path) -> Study:
    study = _only(resources, "ResearchStudy", path)
    groups = {f"Group/{r.get('id')}": r for r in resources if r.get("resourceType") == "Group"}
    references = [e.get("reference") for e in study.get("enrollment", []) if isinstance(e, dict)]
    enrolled = [groups[r] for r in references if r in groups]
    return Study(study, [g for g in enrolled if is_eligibility_group(g)])


def _lines(path: Path) -> Iterable[tuple[int, list[str]]]:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            yield number, line.split()


def read_qrels(path: Path) -> Qrels:
    """TREC qrels: `topic iteration doc relevance`, relevance 0, 1 or 2."""
    qrels: Qrels = {}
    for number, fields in _lines(path):
        if len(fields) != 4 or fields[3] not in ("0", "1", "2"):
            raise EvalError(f"{path.name} line {number}: expected 'topic 0 doc relevance' with "
                            f"relevance 0, 1 or 2, got {' '.join(fields)!r}")
        qrels.setdefault(fields[0], {})[fields[2]] = int(fields[3])
    return qrels


def read_labels(path: Path) -> dict[tuple[str, str, str], str]:
    """Criterion labels: `topic study key met|not-met`."""
    labels = {}
    for number, fields in _lines(path):
        if len(fields) != 4 or fields[3] not in ("met", "not-met"):
            raise EvalError(f"{path.name} line {number}: expected 'topic study key met|not-met', "
                            f"got {' '.join(fields)!r}")
        labels[(fields[0], fields[1], fields[2])] = fields[3]
    return labels


def load(directory: Path) -> Dataset:
    """The evaluation set in `directory`; every judgment must name a known patient and trial."""
    patients, studies = {}, {}
    for path in sorted((directory / "patients").glob("*.json")):
        resources = _bundle(path)
        patients[_only(resources, "Patient", path)["id"]] = resources
    for path in sorted((directory / "trials").glob("*.json")):
        study = _study(_bundle(path), path)
        studies[study.resource["id"]] = study
    if not patients or not studies:
        raise EvalError(f"{directory}: needs patients/*.json and trials/*.json Bundles")
    if not (directory / "qrels.txt").is_file():
        raise EvalError(f"{directory}: no qrels.txt")
    qrels = read_qrels(directory / "qrels.txt")
    labels = read_labels(directory / "criteria.txt") if (directory / "criteria.txt").is_file() else {}
    for topic, doc in [(t, d) for t, docs in qrels.items() for d in docs] + [(t, s) for t, s, _ in labels]:
        if topic not in patients or doc not in studies:
            raise EvalError(f"judgment on {topic} / {doc}: no such patient or trial in {directory}")
    return Dataset(patients, studies, qrels, labels)


def ndcg(ranking: list[str], judged: Mapping[str, int], k: int = CUTOFF) -> float:
    """NDCG@k as trec_eval's ndcg_cut computes it: gain = the judged grade, discount
    log2(rank + 1), the ideal from every judged document of the topic."""
    dcg = sum(judged.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranking[:k]))
    ideal = sorted(judged.values(), reverse=True)[:k]
    best = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / best if best else 0.0


def precision(ranking: list[str], judged: Mapping[str, int], k: int = CUTOFF) -> float:
    """P@k counting eligible documents only (trec_eval -l 2); a short ranking still divides by k."""
    return sum(judged.get(doc, 0) >= ELIGIBLE_GRADE for doc in ranking[:k]) / k


def _text(concept: Any) -> list[str]:
    if not isinstance(concept, dict):
        return []
    return [concept.get("text") or ""] + [c.get("display") or "" for c in concept.get("coding", [])]


def patient_query(resources: list[dict[str, Any]]) -> str:
    """The words of a patient's conditions and observations (codes' text and displays, values)."""
    words: list[str] = []
    for r in resources:
        if r.get("resourceType") in ("Condition", "Observation"):
            words += _text(r.get("code")) + _text(r.get("valueCodeableConcept"))
            words += [r.get("valueString") or ""]
            words += [w for c in r.get("component", []) for w in _text(c.get("code"))]
    return " ".join(w for w in words if w)


def trial_text(study: Study) -> str:
    """Title, description and the eligibility criteria as worded (Groups and contained Groups)."""
    words = [study.resource.get("title") or "", study.resource.get("description") or ""]
    for group in study.groups:
        for g in [group, *group.get("contained", [])]:
            words += [(c.get("code") or {}).get("text") or "" for c in g.get("characteristic", [])]
    return " ".join(w for w in words if w)


def trec_order(ranked: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    """The order trec_eval reads a run in: score as written (4 decimals) descending, ties by
    document id descending; so the measures printed are the ones trec_eval gives."""
    by_doc = sorted(((doc, round(score, 4)) for doc, score in ranked), key=lambda p: p[0], reverse=True)
    return sorted(by_doc, key=lambda p: -p[1])


@dataclass
class Run:
    tag: str
    rankings: dict[str, list[tuple[str, float]]]  # topic -> (doc, score), best first

    def __post_init__(self) -> None:
        self.rankings = {topic: trec_order(ranked) for topic, ranked in self.rankings.items()}

    def write(self, path: Path) -> None:
        """A TREC run file: `topic Q0 doc rank score tag`."""
        path.write_text("".join(f"{topic} Q0 {doc} {rank} {score:.4f} {self.tag}\n"
                                for topic, ranked in sorted(self.rankings.items())
                                for rank, (doc, score) in enumerate(ranked, start=1)), encoding="utf-8")

    def mean(self, measure: Callable[[list[str], Mapping[str, int]], float], qrels: Qrels) -> float:
        """The measure averaged over every judged topic (trec_eval -c)."""
        values = [measure([d for d, _ in self.rankings.get(t, [])], judged) for t, judged in qrels.items()]
        return sum(values) / len(values) if values else 0.0


def _flatten(results: Iterable[CriterionResult]) -> Iterable[CriterionResult]:
    for r in results:
        yield r
        yield from _flatten(r.members)


def _ratio(part: int, whole: int) -> str:
    return f"{part / whole:.4f} ({part}/{whole})" if whole else "n/a (0/0)"


@dataclass
class Report:
    engine: Run
    bm25: Run
    qrels: Qrels
    eligible: int = 0
    not_ruled_out: int = 0
    shown_eligible: int = 0
    marked_ineligible: int = 0
    missing_data: int = 0
    criteria: int = 0
    unknown: int = 0
    labelled: int = 0
    correct: int = 0

    def lines(self) -> list[str]:
        def row(name: str, value: str) -> str:
            return f"{name:<36}all\t{value}"
        out = []
        for run in (self.engine, self.bm25):
            out += [f"# run {run.tag}",
                    row("ndcg_cut_10", f"{run.mean(ndcg, self.qrels):.4f}"),
                    row("P_10 (eligible, -l 2)", f"{run.mean(precision, self.qrels):.4f}")]
        base, ours = self.bm25.mean(ndcg, self.qrels), self.engine.mean(ndcg, self.qrels)
        out += ["# engine only",
                row("ndcg_cut_10 gain over bm25", f"{(ours / base - 1) * 100:+.1f}%" if base else "n/a"),
                row("recall_eligible (not ruled out)", _ratio(self.not_ruled_out, self.eligible)),
                row("recall_eligible (shown eligible)", _ratio(self.shown_eligible, self.eligible)),
                row("eligible_marked_ineligible", str(self.marked_ineligible)),
                row("eligible_ineligible_missing_data", str(self.missing_data)),
                row("criterion_accuracy",
                    _ratio(self.correct, self.labelled) if self.labelled else "no labels"),
                row("unknown_rate", _ratio(self.unknown, self.criteria))]
        return out


def refuted_without_evidence(result: TrialResult) -> bool:
    """Ineligible through a criterion not met with no evidence cited: a verdict drawn from
    what the record lacks (the engine should say unknown there)."""
    return result.verdict == INELIGIBLE and any(c.verdict == NOT_MET and not c.evidence
                                                for c in result.criteria)


def _records(dataset: Dataset, today: date) -> dict[str, Record]:
    return {topic: read_record([(pinned(r), r) for r in resources], today)
            for topic, resources in dataset.patients.items()}


def run_engine(dataset: Dataset, today: date) -> tuple[Run, Report]:
    """The engine's ranking per patient (ranked results, then pruned studies) and its counts."""
    trials = {sid: read_trial(sid, s.groups) for sid, s in dataset.studies.items()}
    index = TrialIndex(trials.values())
    rankings, report = {}, Report(Run("engine", {}), Run("bm25", {}), dataset.qrels)
    for topic, record in _records(dataset, today).items():
        found = index.match(record)
        order = [r.study for r in found.results] + sorted(found.pruned)
        rankings[topic] = [(doc, float(len(order) - i)) for i, doc in enumerate(order)]
        verdicts = [c.verdict for r in found.results for c in r.criteria if c.verdict != NOT_APPLICABLE]
        report.criteria += len(verdicts)
        report.unknown += verdicts.count(UNKNOWN)
        for doc, grade in dataset.qrels.get(topic, {}).items():
            if grade != ELIGIBLE_GRADE:
                continue
            result = evaluate(trials[doc], record)  # in full, even when the index pruned it
            report.eligible += 1
            report.not_ruled_out += result.verdict != INELIGIBLE
            report.shown_eligible += result.verdict == ELIGIBLE
            if result.verdict == INELIGIBLE:
                report.marked_ineligible += 1
                report.missing_data += refuted_without_evidence(result)
        results = {sid: {c.key: c.verdict for c in _flatten(evaluate(trials[sid], record).criteria)}
                   for (t, sid, _) in dataset.labels if t == topic}
        for (t, sid, key), label in dataset.labels.items():
            if t == topic:
                report.labelled += 1
                report.correct += results[sid].get(key) == label
    report.engine = Run("engine", rankings)
    return report.engine, report


def run_bm25(dataset: Dataset) -> Run:
    index = BM25({sid: trial_text(s) for sid, s in dataset.studies.items()})
    return Run("bm25", {topic: index.rank(patient_query(resources))
                        for topic, resources in dataset.patients.items()})


def evaluate_set(directory: Path, today: date, runs: Path) -> Report:
    """Load, run the engine and BM25, write both TREC run files under `runs`, report."""
    dataset = load(directory)
    _, report = run_engine(dataset, today)
    report.bm25 = run_bm25(dataset)
    runs.mkdir(parents=True, exist_ok=True)
    report.engine.write(runs / "engine.run")
    report.bm25.write(runs / "bm25.run")
    return report
