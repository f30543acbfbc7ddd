"""Reading a trial's computable eligibility: a definitional Group (profile
`eligibility-criteria`, docs/matching.md) becomes a tuple of `Criterion`, once per trial.

One `characteristic` is one criterion: its type is the `code` coding of our
`eligibility-criterion` system, its wording `code.text`, what it asks for the `value[x]`,
`exclude` true for an exclusion. `at-least` criteria hold a contained Group of members and a
minimum (extension `eligibility-minimum`, 1 = any of). A criterion this module cannot read
keeps its `problem`: it is evaluated as unknown with a warning, never as met.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .eligibility_codes import (COMPARATOR_URL, CRITERION_SYSTEM, ECOG, LOINC, MINIMUM_URL,
                                ONLY_IF_URL, PROFILE, TNM, Interval, unit_factor)

KINDS = ("age", "sex", "condition", "morphology", "topography", "metastasis", "tnm-t", "tnm-n",
         "tnm-m", "stage", "biomarker", "gene", "ecog", "prior-treatment", "treatment-lines",
         "at-least", "free-text")
COMPARATORS = ("eq", "lt", "le", "gt", "ge")
MAX_DEPTH = 4  # nesting of at-least groups and only-if conditions
Coding = tuple[str, str]  # (system, code)


@dataclass(frozen=True, slots=True)
class Criterion:
    """One criterion, read: what the engine compares the record with."""

    key: str  # its place: "3", or "3.2" for the second member of the third
    kind: str  # a KINDS code, or "unsupported"
    text: str
    exclude: bool = False
    codes: tuple[Coding, ...] = ()  # value codings
    measured: tuple[Coding, ...] = ()  # what is measured (LOINC code of the Observation)
    interval: Interval | None = None  # a numeric expectation, in `unit`
    unit: str | None = None
    comparator: str = "eq"  # for ordered codes (TNM, stage)
    flag: bool | None = None  # valueBoolean
    members: tuple[Criterion, ...] = ()
    minimum: int = 1
    only_if: tuple[Criterion, ...] = ()
    problem: str | None = None  # why it cannot be evaluated
    # Every field but `key` and `text`, nested criteria by their own `rule`: what decides the
    # verdict. Criteria of one `rule` have one verdict for a given record, so the engine judges
    # it once per patient however many trials share it (eligibility.py). A string, so that its
    # hash is computed once.
    rule: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = [tuple(c.rule for c in getattr(self, name)) if name in ("members", "only_if")
                 else getattr(self, name) for name in _RULE_FIELDS]
        object.__setattr__(self, "rule", repr(tuple(parts)))


_RULE_FIELDS = tuple(f.name for f in dataclasses.fields(Criterion) if f.name not in ("key", "text", "rule"))


@dataclass(frozen=True, slots=True)
class Trial:
    """A trial's criteria, read from its eligibility Groups."""

    study: str  # ResearchStudy id
    criteria: tuple[Criterion, ...]
    groups: tuple[str, ...] = ()  # the Groups read, `Group/<id>/_history/<version>`


def is_eligibility_group(group: dict[str, Any]) -> bool:
    return PROFILE in (group.get("meta") or {}).get("profile", [])


def read_trial(study: str, groups: list[dict[str, Any]]) -> Trial:
    """The criteria of ResearchStudy/`study` from its eligibility Groups (in order)."""
    criteria: list[Criterion] = []
    names = []
    for group in groups:
        offset = len(criteria)
        contained = {c.get("id"): c for c in group.get("contained", []) if isinstance(c, dict)}
        for n, characteristic in enumerate(group.get("characteristic", []), start=offset + 1):
            criteria.append(read_criterion(characteristic, str(n), contained, 0))
        version = (group.get("meta") or {}).get("versionId")
        names.append(f"Group/{group.get('id')}" + (f"/_history/{version}" if version else ""))
    return Trial(study, tuple(criteria), tuple(names))


def _extension(element: dict[str, Any], url: str) -> dict[str, Any] | None:
    return next((e for e in element.get("extension", []) if e.get("url") == url), None)


def _codings(concept: dict[str, Any]) -> tuple[Coding, ...]:
    return tuple((c["system"], c["code"]) for c in concept.get("coding", [])
                 if isinstance(c.get("system"), str) and isinstance(c.get("code"), str))


def _quantity(quantity: dict[str, Any]) -> tuple[Interval, str | None]:
    unit = quantity.get("code") or quantity.get("unit")
    return Interval.compared(quantity.get("comparator"), float(quantity["value"])), unit


def _range(value: dict[str, Any]) -> tuple[Interval, str | None] | str:
    low, high = value.get("low") or {}, value.get("high") or {}
    units = {q.get("code") or q.get("unit") for q in (low, high) if "value" in q}
    if len(units) > 1:
        return "its range has two different units"
    interval = Interval(float(low["value"]) if "value" in low else Interval().low,
                        float(high["value"]) if "value" in high else Interval().high)
    return interval, next(iter(units), None)


def _members(reference: dict[str, Any] | None, contained: dict[str, Any], key: str,
             depth: int) -> tuple[Criterion, ...] | str:
    target = (reference or {}).get("reference", "")
    group = contained.get(target[1:]) if target.startswith("#") else None
    if group is None or group.get("resourceType") != "Group":
        return "its members are not a contained Group (valueReference '#id')"
    if depth >= MAX_DEPTH:
        return f"groups nest deeper than {MAX_DEPTH} levels"
    return tuple(read_criterion(c, f"{key}.{n}", contained, depth + 1)
                 for n, c in enumerate(group.get("characteristic", []), start=1))


def read_criterion(characteristic: dict[str, Any], key: str, contained: dict[str, Any],
                   depth: int) -> Criterion:
    """One characteristic, read; an unreadable one keeps its `problem`."""
    code = characteristic.get("code") or {}
    kinds = [c for s, c in _codings(code) if s == CRITERION_SYSTEM]
    kind = kinds[0] if len(kinds) == 1 and kinds[0] in KINDS else "unsupported"
    text = code.get("text") or (kinds[0] if kinds else "criterion without a type")
    base = Criterion(key, kind, text, bool(characteristic.get("exclude")),
                     measured=tuple(c for c in _codings(code) if c[0] != CRITERION_SYSTEM))
    if kind == "unsupported":
        return _broken(base, f"criterion type {kinds or 'missing'} is not one the server evaluates")
    try:
        found = _read_value(base, characteristic, contained, depth)
    except (KeyError, TypeError, ValueError):  # a Quantity without value, a comparator `ad`
        found = "its value cannot be read"
    if isinstance(found, str):  # its only-if still holds: one that does not apply is not-applicable
        found = _broken(base, found)
    only_if = _extension(characteristic, ONLY_IF_URL)
    if only_if is not None:
        condition = _members(only_if.get("valueReference"), contained, f"{key}.if", depth)
        if isinstance(condition, str):
            return found if found.problem else _broken(found, f"its only-if condition: {condition}")
        found = _with(found, only_if=condition)
    return found


def _with(criterion: Criterion, **changes: Any) -> Criterion:
    return dataclasses.replace(criterion, **changes)


def _broken(criterion: Criterion, problem: str) -> Criterion:
    return _with(criterion, problem=problem)


def _read_value(base: Criterion, characteristic: dict[str, Any], contained: dict[str, Any],
                depth: int) -> Criterion | str:
    kind = base.kind
    if kind == "free-text":
        return base
    if kind == "at-least":
        members = _members(characteristic.get("valueReference"), contained, base.key, depth)
        if isinstance(members, str):
            return members
        minimum = (_extension(characteristic, MINIMUM_URL) or {}).get("valuePositiveInt", 1)
        if not isinstance(minimum, int) or minimum < 1:
            return "its minimum is not a positive integer"
        return _with(base, members=members, minimum=minimum)
    if kind == "metastasis":
        if not isinstance(characteristic.get("valueBoolean"), bool):
            return "a metastasis criterion has valueBoolean"
        return _with(base, flag=characteristic["valueBoolean"])
    if "valueCodeableConcept" in characteristic:
        codes = _codings(characteristic["valueCodeableConcept"])
        text = characteristic["valueCodeableConcept"].get("text")
        if not codes and not text:
            return "its valueCodeableConcept has no coding"
        comparator = (_extension(characteristic, COMPARATOR_URL) or {}).get("valueCode", "eq")
        if comparator not in COMPARATORS:
            return f"comparator '{comparator}' is not one of {', '.join(COMPARATORS)}"
        if not codes:  # an ordered category given as text (`T2`)
            codes = (("", text),)
        return _checked(_with(base, codes=codes, comparator=comparator))
    numeric: tuple[Interval, str | None] | str | None = None
    if "valueQuantity" in characteristic:
        numeric = _quantity(characteristic["valueQuantity"])
    elif "valueRange" in characteristic:
        numeric = _range(characteristic["valueRange"])
    if isinstance(numeric, str):
        return numeric
    if numeric is None:
        return "its value[x] is not one this criterion type takes"
    interval, unit = numeric
    if kind == "age":
        factor = unit_factor(unit or "a", "a") if unit in (None, "a", "mo", "wk", "d") else None
        if factor is None:
            return f"an age is in years ('a'), not '{unit}'"
        return _with(base, interval=interval.scaled(factor), unit="a")
    return _checked(_with(base, interval=interval, unit=unit))


def _checked(criterion: Criterion) -> Criterion | str:
    """What each type needs besides its value."""
    kind = criterion.kind
    if kind == "biomarker" and not any(s == LOINC for s, _ in criterion.measured):
        return "a biomarker criterion names its LOINC test in code"
    if kind == "ecog" and criterion.measured and (LOINC, ECOG) not in criterion.measured:
        return f"an ECOG criterion measures LOINC {ECOG}"
    if kind in TNM and criterion.interval is not None:
        return f"a {kind} criterion takes a category (valueCodeableConcept)"
    if kind in ("sex", "condition", "morphology", "topography", "gene", "prior-treatment") and not criterion.codes:
        return f"a {kind} criterion takes a valueCodeableConcept"
    if kind in ("age", "treatment-lines") and criterion.interval is None:
        return f"a {kind} criterion takes a valueQuantity or valueRange"
    return criterion
