"""Verdicts shared across patients (docs/matching.md, "Twelfth session"): a criterion's verdict
depends on a few values of a record (the ages a birth date allows, the latest ECOG grade, the
codes of the recorded diagnoses), not on whose record it is. The bulk path (`TrialIndex.verdicts`
with a `Shared`) judges a criterion once per rule and those values, for every patient who has
them, instead of once per patient.

Only verdicts are shared: evidence cites each patient's own resources, so `evaluate` (the
explained path) judges every record itself. Each rule's `reads` names the values it reads; a
value left out of its key would give one patient another's verdict
(tests/trials/test_verdicts_across_patients.py checks the keys against per-patient judging).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import orjson

from .eligibility_codes import ECOG, GENE_STUDIED, HGNC, LOINC, TNM
from .eligibility_format import Criterion
from .eligibility_record import Record
from .eligibility_rules import (_age_bounds, _category_text, _ecog_grade, _latest, _observed_value,
                                _staging)

Value = Callable[[Criterion, Record], Hashable]


def _birth(criterion: Criterion, record: Record) -> Hashable:
    """The ages the birth date allows today (`age` reads nothing else of it)."""
    birth = record.patient.resource.get("birthDate") if record.patient else None
    if not isinstance(birth, str):
        return "none"
    return _age_bounds(birth, record.today) or "unreadable"


def _gender(criterion: Criterion, record: Record) -> Hashable:
    gender = record.patient.resource.get("gender") if record.patient else None
    return gender if gender in ("male", "female", "other") else None


def _conditions(criterion: Criterion, record: Record) -> Hashable:
    """Each diagnosis's codes (ICD-10 placed by a map included) and whether a map could not
    place it; its reference and the maps are evidence only."""
    return tuple(sorted((e.codings, bool(e.unplaced)) for e in record.conditions))


def _staged(kind: str) -> Value:
    def value(criterion: Criterion, record: Record) -> Hashable:
        entry = _latest(_staging(kind, record))
        return None if entry is None else ("text", _category_text(entry))
    return value


def _ecog(criterion: Criterion, record: Record) -> Hashable:
    entry = _latest(record.observed((LOINC, ECOG)))
    return None if entry is None else ("grade", _ecog_grade(entry.resource))


def _measured(criterion: Criterion, record: Record) -> Hashable:
    """The latest result among the criterion's tests: which test, and its value[x]."""
    tests = [c for c in criterion.measured if c[0] == LOINC]
    entry = _latest([e for c in tests for e in record.observed(c)])
    if entry is None:
        return None
    code = next(c for c in tests if entry in record.observed(c))
    holder = _observed_value(entry, code)
    values = [holder.get(name) for name in ("valueCodeableConcept", "valueQuantity", "valueInteger")]
    return code, orjson.dumps(values, option=orjson.OPT_SORT_KEYS)


def _variants(criterion: Criterion, record: Record) -> Hashable:
    """The variant assessments of the criterion's genes, newest first (`gene` keeps the newest
    of each gene)."""
    genes = {c for s, c in criterion.codes if s in HGNC}
    return tuple(orjson.dumps([e.resource.get("component"), e.resource.get("valueCodeableConcept")],
                              option=orjson.OPT_SORT_KEYS)
                 for e in record.observed((LOINC, GENE_STUDIED))) if genes else ()


def _treatments(criterion: Criterion, record: Record) -> Hashable:
    """Each treatment's type, codes and start day (lines are counted by start day)."""
    return tuple(sorted((str(e.resource.get("resourceType", "")), e.codings, e.when[:10])
                        for e in record.treatments))


def _nothing(criterion: Criterion, record: Record) -> Hashable:
    return ()


# What each rule of eligibility_rules.RULES reads of a record. A rule missing here fails at once
# (KeyError) rather than being shared on a key that leaves its values out.
READS: dict[str, tuple[Value, ...]] = {
    "age": (_birth,), "sex": (_gender,), "condition": (_conditions,),
    "morphology": (_conditions,), "topography": (_conditions,),
    "metastasis": (_conditions, _staged("tnm-m"), _staged("stage")),
    **{kind: (_staged(kind),) for kind in TNM}, "biomarker": (_measured,), "gene": (_variants,),
    "ecog": (_ecog,), "prior-treatment": (_treatments,), "treatment-lines": (_treatments,),
    "free-text": (_nothing,),
}


_UNREAD = object()
# Values that depend on the criterion reading them (its tests, its genes): kept per rule.
_OWN = frozenset({_measured, _variants})
Read = tuple[Value, Criterion, Hashable]  # a value, the criterion reading it, its place in `Shared._values`


def _read(criterion: Criterion) -> tuple[Read, ...]:
    """What judging the criterion reads: its rule's values, and those of its members and
    only-if conditions, each with the criterion that reads it (a criterion that cannot be
    evaluated reads nothing)."""
    own = () if criterion.problem is not None or criterion.kind == "at-least" else READS[criterion.kind]
    return (*((value, criterion, (value, criterion.rule) if value in _OWN else value) for value in own),
            *(read for c in (*criterion.members, *criterion.only_if) for read in _read(c)))


class Shared:
    """Criteria's verdicts by rule and the values of a record they read, for many records:
    one per pass of the re-match job (keys hold no patient, and age bounds carry their date)."""

    def __init__(self) -> None:
        self._reads: dict[str, tuple[Read, ...]] = {}
        self._verdicts: dict[tuple[str, tuple[Hashable, ...]], str] = {}
        self._record: Record | None = None
        self._values: dict[Hashable, Hashable] = {}  # of `_record`: each value read once a record

    def verdict(self, criterion: Criterion, record: Record, judge: Callable[[Criterion, Record], str]) -> str:
        """The criterion's verdict for the record: shared with every record that gave the
        same values, else `judge`d."""
        reads = self._reads.get(criterion.rule)
        if reads is None:
            reads = self._reads[criterion.rule] = _read(criterion)
        if record is not self._record:
            self._record, self._values = record, {}
        values, parts = self._values, []
        for value, reader, place in reads:
            found = values.get(place, _UNREAD)
            if found is _UNREAD:
                found = values[place] = value(reader, record)
            parts.append(found)
        key = (criterion.rule, tuple(parts))
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._verdicts[key] = judge(criterion, record)
        return verdict
