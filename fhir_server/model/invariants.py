"""Invariants: an ElementDefinition's `constraint` expressions, compiled FHIRPath (conformance-rules.html).

Each expression is compiled once by fhirpathpy and evaluated with the element's value as focus,
typed (its data type, or its element path for a backbone element, so that choice elements such
as `value` resolve), `%resource` and `%rootResource` the resource being checked. fhirpathpy lacks `hasValue()` (given
here: one primitive value) and prints `trace()` (silenced). The invariants found on nearly
every element or resource are evaluated in Python, with the same meaning, since a FHIRPath
evaluation costs 30–100 µs: `ele-1` (an element has a value or children), `ext-1` (an
extension has a value or nested extensions, not both), `ref-1` (a local reference names a
contained resource), `cpt-2` (a contact point value has a system), and the DomainResource rules
on `contained` (`dom-2` to `dom-5`), which hold at once when there is nothing contained;
and, on every resource of a catalogue import, `dom-6` (a narrative) and `grp-1` (members
only in an actual Group).

An expression fhirpathpy cannot compile or evaluate is reported as a warning naming the
invariant: never a silent pass, never a refusal for our shortcoming.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

import fhirpathpy
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models

from .errors import Issue

_BEST_PRACTICE: Final = "http://hl7.org/fhir/StructureDefinition/elementdefinition-bestpractice"

Evaluator = Callable[[Any, dict[str, Any]], list[Any]]


@dataclass(frozen=True, slots=True)
class Invariant:
    """One `constraint` of an ElementDefinition."""

    key: str
    severity: str  # error | warning
    human: str
    expression: str
    best_practice: bool = False  # a recommendation (elementdefinition-bestpractice): a warning at most


def of(element: dict[str, Any]) -> tuple[Invariant, ...]:
    """The invariants a snapshot element declares (those with an expression)."""
    return tuple(
        Invariant(c["key"], c.get("severity", "error"), c.get("human", ""), c["expression"],
                  any(e.get("url") == _BEST_PRACTICE and e.get("valueBoolean") is True
                      for e in c.get("extension", [])))
        for c in element.get("constraint", []) if isinstance(c.get("expression"), str))


def check(invariants: tuple[Invariant, ...], value: Any, resource: dict[str, Any], at: str,
          type_: str | Callable[[], str] = "") -> list[Issue]:
    """The issues of the invariants `value` (of FHIR type or element path `type_`, at FHIRPath
    `at` in `resource`) breaks. `type_` may be given as a function, called only when an
    expression is evaluated by FHIRPath (the Python ones below need no type)."""
    found = []
    for invariant in invariants:
        try:
            holds = _evaluate(invariant.expression, value, resource, type_)
        except Exception as error:  # fhirpathpy raises bare Exceptions for what it lacks
            found.append(Issue(code="not-supported", severity="warning", expression=(at,) if at else (),
                               diagnostics=f"Invariant {invariant.key} was not evaluated: "
                               f"{type(error).__name__} {str(error)[:80]}"))
            continue
        if not holds:
            error = invariant.severity == "error" and not invariant.best_practice
            note = " (best practice)" if invariant.best_practice else ""
            found.append(Issue(code="invariant", severity="error" if error else "warning",
                               diagnostics=f"Invariant {invariant.key} failed: {invariant.human}{note}",
                               expression=(at,) if at else ()))
    return found


def _evaluate(expression: str, value: Any, resource: dict[str, Any], type_: str | Callable[[], str]) -> bool:
    native = _NATIVE.get(expression)
    if native is not None:
        holds = native(value, resource)
        if holds is not None:
            return holds
    if callable(type_):
        type_ = type_()
    focus = ResourceNode.create_node(value, type_) if type_ else value
    result = _compiled(expression)(focus, {"resource": resource, "rootResource": resource})
    # An invariant holds when it evaluates to true; an empty result is not a failure
    # (FHIRPath's three-valued logic: nothing to test).
    return result != [False]


def _has_value(value: Any) -> bool:
    return value is not None and not isinstance(value, (dict, list))


def _present(value: Any, name: str) -> bool:
    """FHIRPath `name.exists()` on an object: a value, or a primitive's extensions (`_name`)."""
    return isinstance(value, dict) and (value.get(name) not in (None, [], {}) or f"_{name}" in value)


def _ele_1(value: Any, resource: dict[str, Any]) -> bool:
    # hasValue() or (children().count() > id.count()): run on every value a profile walks
    if isinstance(value, dict):
        return len(value) > 1 or (len(value) == 1 and "id" not in value)
    return _has_value(value)


def _ext_1(value: Any, resource: dict[str, Any]) -> bool:
    # extension.exists() != value.exists()
    if not isinstance(value, dict):
        return True
    has_value = False
    for key in value:  # a loop, not any(): this runs on every extension, twice
        if key.startswith("value") and (len(key) == 5 or key[5].isupper()):
            has_value = True
            break
    return bool(value.get("extension")) != has_value


def _ref_1(value: Any, resource: dict[str, Any]) -> bool:
    # reference.startsWith('#').not() or (reference.substring(1) in %rootResource.contained.id)
    reference = value.get("reference") if isinstance(value, dict) else None
    if not isinstance(reference, str) or not reference.startswith("#"):
        return True
    contained = resource.get("contained")
    return isinstance(contained, list) and any(
        isinstance(c, dict) and c.get("id") == reference[1:] for c in contained)


def _cpt_2(value: Any, resource: dict[str, Any]) -> bool:
    # value.empty() or system.exists()
    return not _present(value, "value") or _present(value, "system")


def _nothing_contained(value: Any, resource: dict[str, Any]) -> bool | None:
    """True when the resource contains nothing (the `contained.…` rules then hold); None to
    let FHIRPath decide."""
    return True if not _present(value, "contained") else None


def _dom_6(value: Any, resource: dict[str, Any]) -> bool:
    # text.`div`.exists(): a resource should have a narrative (best practice)
    return isinstance(value, dict) and _present(value.get("text"), "div")


def _grp_1(value: Any, resource: dict[str, Any]) -> bool:
    # member.empty() or (actual = true): an empty `actual` leaves the rule empty, which holds
    return not _present(value, "member") or value.get("actual") is not False


Test = Callable[[Any, dict[str, Any]], bool]

_DECIDING: Final[dict[str, Test]] = {  # always a true or false answer
    "text.`div`.exists()": _dom_6,
    "member.empty() or (actual = true)": _grp_1,
    "hasValue() or (children().count() > id.count())": _ele_1,
    "extension.exists() != value.exists()": _ext_1,
    "reference.startsWith('#').not() or (reference.substring(1).trace('url') in "
    "%rootResource.contained.id.trace('ids'))": _ref_1,
    "value.empty() or system.exists()": _cpt_2,
}
_NATIVE: Final[dict[str, Callable[[Any, dict[str, Any]], bool | None]]] = {
    **_DECIDING,
    "contained.contained.empty()": _nothing_contained,
    "contained.meta.versionId.empty() and contained.meta.lastUpdated.empty()": _nothing_contained,
    "contained.meta.security.empty()": _nothing_contained,
    "contained.where((('#'+id in (%resource.descendants().reference | %resource.descendants()"
    ".as(canonical) | %resource.descendants().as(uri) | %resource.descendants().as(url))) or "
    "descendants().where(reference = '#').exists() or descendants().where(as(canonical) = '#')"
    ".exists() or descendants().where(as(canonical) = '#').exists()).not()).trace('unmatched', "
    "id).empty()": _nothing_contained,
}


def quick_test(invariants: tuple[Invariant, ...]) -> Test | None:
    """A test that every one of `invariants` holds on a value, when each is evaluated in
    Python and always decides (an element's `ele-1`, an extension's `ext-1`): checked at
    every value, without building issues; `check` then says which failed. None when one
    needs FHIRPath."""
    tests: list[Test] = []
    for invariant in invariants:
        deciding = _DECIDING.get(invariant.expression)
        if deciding is None:
            return None
        tests.append(deciding)
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:  # ele-1 and one more, as on every extension
        first, second = tests
        return lambda value, resource: first(value, resource) and second(value, resource)
    return lambda value, resource: all(test(value, resource) for test in tests)


_FUNCTIONS: Final = {
    "hasValue": {"fn": lambda inputs: [len(inputs) == 1 and _has_value(inputs[0])], "arity": {0: []}},
}


@cache
def _compiled(expression: str) -> Evaluator:
    compiled: Evaluator = fhirpathpy.compile(expression, models["r4"], {
        "userInvocationTable": _FUNCTIONS, "traceFn": lambda label, value: None})
    return compiled
