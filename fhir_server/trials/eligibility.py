"""The eligibility engine: a patient's record against trials' computable criteria
(docs/matching.md). Pure: no I/O, no clock (the record carries its date), deterministic.

- `read_trial(study_id, groups)` reads a trial's eligibility Groups (eligibility_format.py);
  `read_record(entries, today)` a patient's resources (eligibility_record.py).
- `evaluate(trial, record)`: per criterion a verdict (`met | not-met | unknown |
  not-applicable`, from the eligibility point of view: an exclusion is `met` when what it
  excludes is shown absent), its evidence and what is missing; overall `eligible` (every
  criterion met or not applicable), `ineligible` (one not met), else `undetermined`.
- `verdict(trial, record)`: the same verdict and score without the explanation.
- `TrialIndex(trials).match(record)`: every trial, ranked, without evaluating the pairs the
  index proves ineligible (an inclusion diagnosis the patient's recorded diagnoses miss);
  `.verdicts(record)` the same pairs, verdicts and scores only (the bulk path); with a
  `Shared` (eligibility_shared.py), judged once for the records giving a criterion the same values.

A criterion is judged once per record whatever the number of trials sharing it (its `rule`:
everything but its position and wording); the record keeps what was judged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from ..frozen import fast_init
from .eligibility_codes import ICD10, icd10_categories, icd10_keys
from .eligibility_format import Criterion, Trial, is_eligibility_group, read_trial
from .eligibility_record import Record, pinned, read_record
from .eligibility_rules import RULES, Finding
from .eligibility_shared import Shared

__all__ = ["CriterionResult", "Match", "Shared", "TrialIndex", "TrialResult", "Verdicts", "evaluate",
           "is_eligibility_group", "pinned", "read_record", "read_trial", "verdict"]

MET, NOT_MET, UNKNOWN, NOT_APPLICABLE = "met", "not-met", "unknown", "not-applicable"
ELIGIBLE, INELIGIBLE, UNDETERMINED = "eligible", "ineligible", "undetermined"
RANK = {ELIGIBLE: 0, UNDETERMINED: 1, INELIGIBLE: 2}


@fast_init
@dataclass(frozen=True, slots=True)
class CriterionResult:
    key: str
    kind: str
    text: str
    exclude: bool
    verdict: str
    evidence: tuple[str, ...] = ()
    missing: str | None = None
    warning: str | None = None
    members: tuple[CriterionResult, ...] = ()

    def warnings(self) -> tuple[str, ...]:
        own = (f"criterion {self.key} ({self.text}): {self.warning}",) if self.warning else ()
        return own + tuple(w for m in self.members for w in m.warnings())


@dataclass(frozen=True, slots=True)
class TrialResult:
    study: str
    verdict: str
    score: float
    criteria: tuple[CriterionResult, ...]

    @property
    def rank(self) -> tuple[int, float, str]:
        return RANK[self.verdict], -self.score, self.study


@dataclass(frozen=True, slots=True)
class Match:
    """One patient against the index: the results ranked, and which pairs were pruned."""

    results: tuple[TrialResult, ...]
    pruned: tuple[str, ...]  # studies proven ineligible without evaluation

    @property
    def evaluated(self) -> int:
        return len(self.results)


def _verdict(holds: bool | None, exclude: bool) -> str:
    if holds is None:
        return UNKNOWN
    return MET if holds != exclude else NOT_MET


def _at_least(criterion: Criterion, members: tuple[CriterionResult, ...]) -> bool | None:
    """Three-valued "at least `minimum` members met"."""
    met = sum(m.verdict == MET for m in members)
    open_ = sum(m.verdict == UNKNOWN for m in members)
    if met >= criterion.minimum:
        return True
    return False if met + open_ < criterion.minimum else None


def judge(criterion: Criterion, record: Record) -> CriterionResult:
    """One criterion's verdict for the record."""
    conditions = tuple(judge(c, record) for c in criterion.only_if) if criterion.only_if else ()
    if conditions and any(c.verdict == NOT_MET for c in conditions):
        return CriterionResult(criterion.key, criterion.kind, criterion.text, criterion.exclude,
                               NOT_APPLICABLE, members=conditions)
    members: tuple[CriterionResult, ...] = ()
    if criterion.problem is not None:
        finding = Finding(None, warning=f"{criterion.problem}; not evaluated")
    elif criterion.kind == "at-least":
        members = tuple(judge(m, record) for m in criterion.members)
        met = _at_least(criterion, members)
        finding = Finding(met, missing=None if met is not None else
                          f"at least {criterion.minimum} of {len(members)} members met")
    else:
        finding = record.findings.get(criterion.rule)
        if finding is None:
            finding = record.findings[criterion.rule] = RULES[criterion.kind](criterion, record)
    verdict = _verdict(finding.holds, criterion.exclude)
    missing = finding.missing
    if conditions and verdict != MET and any(c.verdict == UNKNOWN for c in conditions):
        verdict, missing = UNKNOWN, missing or "whether the criterion applies (its only-if condition)"
    return CriterionResult(criterion.key, criterion.kind, criterion.text, criterion.exclude, verdict,
                           finding.evidence, missing if verdict == UNKNOWN else None,
                           finding.warning, members + conditions)


def evaluate(trial: Trial, record: Record) -> TrialResult:
    """Every criterion of `trial` for `record`, the overall verdict and the score (the share
    of applicable criteria met; 0 when ineligible). A trial without computable criteria is
    undetermined with score 0, never eligible."""
    if not trial.criteria:  # no computable criteria: nothing is known either way
        return TrialResult(trial.study, UNDETERMINED, 0.0, ())
    results = tuple(judge(c, record) for c in trial.criteria)
    return TrialResult(trial.study, *_overall([r.verdict for r in results]), results)


def _overall(verdicts: list[str]) -> tuple[str, float]:
    """A trial's verdict and score from its criteria's verdicts."""
    applicable = [v for v in verdicts if v != NOT_APPLICABLE]
    if NOT_MET in applicable:
        return INELIGIBLE, 0.0
    score = round(applicable.count(MET) / len(applicable), 4) if applicable else 1.0
    return UNDETERMINED if UNKNOWN in applicable else ELIGIBLE, score


def verdict(trial: Trial, record: Record, shared: Shared | None = None) -> tuple[str, float]:
    """`evaluate(trial, record)`'s verdict and score without the explanation: each criterion
    judged once per record whatever the number of trials sharing it (its `rule`), and with
    `shared` once for every record giving it the same values; stopping at the first one not met."""
    if not trial.criteria:
        return UNDETERMINED, 0.0
    verdicts, known = [], record.verdicts
    for criterion in trial.criteria:
        found = known.get(criterion.rule) or _once(criterion, record, shared)
        if found == NOT_MET:
            return INELIGIBLE, 0.0
        verdicts.append(found)
    return _overall(verdicts)


def _once(criterion: Criterion, record: Record, shared: Shared | None = None) -> str:
    """The criterion's verdict, judged once per record and rule (`record.verdicts`), and once
    for the records giving it the same values when `shared`."""
    known = record.verdicts
    found = known.get(criterion.rule)
    if found is None:
        found = known[criterion.rule] = (_judged(criterion, record) if shared is None
                                         else shared.verdict(criterion, record, _judged))
    return found


def _judged(criterion: Criterion, record: Record) -> str:
    return judge(criterion, record).verdict


def judged(trial: Trial, record: Record) -> tuple[str, ...]:
    """Each criterion's verdict of `evaluate(trial, record)`, in order, without the
    explanation: each judged once per record and rule, as `verdict` does."""
    return tuple(_once(c, record) for c in trial.criteria)


def overall(verdicts: tuple[str, ...]) -> str:
    """`evaluate`'s verdict of a trial whose criteria have `verdicts` (none: undetermined)."""
    return _overall(list(verdicts))[0] if verdicts else UNDETERMINED


def _keyed(criterion: Criterion) -> bool:
    """An inclusion diagnosis in ICD-10 only: the record proves it not met when none of its
    recorded ICD-10 diagnoses falls under it (eligibility_rules.condition)."""
    return (criterion.kind == "condition" and not criterion.exclude and criterion.problem is None
            and not criterion.only_if and bool(criterion.codes)
            and all(s in ICD10 and icd10_categories(c) for s, c in criterion.codes))


@dataclass(frozen=True, slots=True)
class Verdicts:
    """One patient against the index without explanations: (study, verdict, score) of each
    trial evaluated, in study order, and how many trials were pruned."""

    found: tuple[tuple[str, str, float], ...]
    pruned: int


class TrialIndex:
    """Trials indexed by the ICD-10 codes their inclusion diagnoses require."""

    def __init__(self, trials: Iterable[Trial]) -> None:
        self.trials = tuple(sorted(trials, key=lambda t: t.study))
        # 3-character category -> criterion code (compacted) -> (trial, criterion) positions
        self._keys: dict[str, dict[str, list[tuple[int, int]]]] = defaultdict(lambda: defaultdict(list))
        self._required = [0] * len(self.trials)
        for position, trial in enumerate(self.trials):
            for number, criterion in enumerate(trial.criteria):
                if _keyed(criterion):
                    self._required[position] += 1
                    for _, code in criterion.codes:
                        for key in icd10_categories(code):
                            self._keys[key[:3]][key].append((position, number))

        self._unkeyed = [p for p, n in enumerate(self._required) if not n]  # never pruned

    def _kept(self, record: Record) -> list[int] | None:
        """The positions of the trials to evaluate, ascending (None: every trial). It costs
        what the patient's diagnoses select, not the size of the catalogue."""
        codes = record.icd10_codes()  # translated ones too (eligibility_record._condition)
        # No recorded diagnosis, or one a map cannot place in ICD-10: nothing is proven.
        if not codes or any(e.unplaced for e in record.conditions):
            return None
        satisfied: dict[int, set[int]] = defaultdict(set)
        for code in {icd10_keys(code)[-1] for code in codes if len(icd10_keys(code))}:
            # A criterion code covering the recorded one is met; one the recorded code covers
            # (C50.4 required, C50 recorded) is open: neither is proven not met.
            for key, positions in self._keys.get(code[:3], {}).items():
                if code.startswith(key) or key.startswith(code):
                    for position, number in positions:
                        satisfied[position].add(number)
        required = self._required
        return sorted(self._unkeyed + [p for p, numbers in satisfied.items() if len(numbers) == required[p]])

    def kept(self, record: Record) -> list[Trial]:
        """The trials to evaluate, in study order; the others are proven ineligible. It costs
        what the patient's diagnoses select, not the size of the catalogue."""
        kept = self._kept(record)
        return list(self.trials) if kept is None else [self.trials[p] for p in kept]

    def candidates(self, record: Record) -> tuple[list[Trial], list[str]]:
        """(trials to evaluate, ids of studies proven ineligible by the index)."""
        kept = self._kept(record)
        if kept is None or len(kept) == len(self.trials):
            return list(self.trials), []
        chosen = set(kept)
        return [self.trials[p] for p in kept], [t.study for p, t in enumerate(self.trials) if p not in chosen]

    def verdicts(self, record: Record, shared: Shared | None = None) -> Verdicts:
        """Every trial the index does not prune, its verdict and score as `evaluate` gives
        them but without explanations (`verdict`): the bulk path, for re-matching many
        patients (`shared` by all of them)."""
        chosen = self.kept(record)
        return Verdicts(tuple((t.study, *verdict(t, record, shared)) for t in chosen),
                        len(self.trials) - len(chosen))

    def match(self, record: Record) -> Match:
        """The candidates evaluated and ranked (eligible, undetermined, ineligible; by score,
        then study id), and the pruned studies."""
        keep, pruned = self.candidates(record)
        results = sorted((evaluate(t, record) for t in keep), key=lambda r: r.rank)
        return Match(tuple(results), tuple(pruned))
