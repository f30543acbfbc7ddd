"""FHIR R4 rules the published JSON schema does not state, added to it as JSON Schema.

The R4 schema leaves out four rules that the StructureDefinitions hold; without them only the
fhir.resources models caught these faults. Here they become schema keywords, so the compiled
schema (jsonschema_rs, in Rust) checks them at nearly no cost:

- required elements (min >= 1), at every depth: the schema marks only required complex
  elements. A primitive is present when `x` or `_x` is (json.html#primitive), so it becomes
  `anyOf [required x, required _x]`; a required choice, `anyOf` over its JSON names;
- one value per choice element (formats.html#choice): each JSON name of a choice element
  forbids the names of its other types (`dependencies`);
- `modifierExtension` only where R4 defines it: the schema allows it in every nested element,
  R4 not in elements of type Element (`Timing.repeat`, `Dosage.doseAndRate`, ...);
- real calendar dates (datatypes.html#date, "Dates SHALL be valid dates"): the patterns of
  date, dateTime and instant are rewritten to accept only days that exist.

The first three come from `data/r4-rules.json`, derived from the R4 definitions by
tests/model/test_rules.py; the date patterns are spelled out below.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterable
from functools import cache
from pathlib import Path
from typing import Any, Final

import orjson

_RULES_FILE: Final = Path(__file__).parent / "data" / "r4-rules.json"

# --- Calendar dates ---------------------------------------------------------------------------

_YEAR: Final = "([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"  # R4's: 0001-9999
# Leap years (Gregorian): divisible by 4, centuries only when divisible by 400; not 0000.
_LEAP_YEAR: Final = "([0-9]{2}(0[48]|[2468][048]|[13579][26])|(0[48]|[2468][048]|[13579][26])00)"
_TIME: Final = (
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
    r"(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
)
_DAYS: Final = {  # month -> its days; February 29 only in a leap year (below)
    "(0[13578]|1[02])": "(0[1-9]|[12][0-9]|3[01])",
    "(0[469]|11)": "(0[1-9]|[12][0-9]|30)",
    "02": "(0[1-9]|1[0-9]|2[0-8])",
}


def _calendar(after_day: str, *, partial: bool) -> str:
    """A pattern for a year, month and day that exist, then `after_day`; with `partial`, a
    year alone or a year and month are accepted too (date, dateTime)."""
    if partial:
        months = "|".join(f"{m}(-{d}{after_day})?" for m, d in _DAYS.items())
        return f"^({_YEAR}(-({months}))?|{_LEAP_YEAR}-02-29{after_day})$"
    months = "|".join(f"{m}-{d}" for m, d in _DAYS.items())
    return f"^({_YEAR}-({months}){after_day}|{_LEAP_YEAR}-02-29{after_day})$"


# The R4 patterns (they allow 2019-02-30), and the calendar-exact pattern replacing each.
R4_DATE_PATTERNS: Final = {
    "date": (
        "^([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])"
        "(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?$"
    ),
    "dateTime": (
        "^([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])"
        "(-(0[1-9]|[1-2][0-9]|3[0-1])(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)"
        "(\\.[0-9]+)?(Z|(\\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?)?)?$"
    ),
    "instant": (
        "^([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)-(0[1-9]|1[0-2])"
        "-(0[1-9]|[1-2][0-9]|3[0-1])T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)"
        "(\\.[0-9]+)?(Z|(\\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))$"
    ),
}
CALENDAR_PATTERNS: Final = {
    R4_DATE_PATTERNS["date"]: _calendar("", partial=True),
    R4_DATE_PATTERNS["dateTime"]: _calendar(f"({_TIME})?", partial=True),
    R4_DATE_PATTERNS["instant"]: _calendar(_TIME, partial=False),
}


@cache
def _r4_format(pattern: str) -> re.Pattern[str] | None:
    """The R4 pattern that calendar `pattern` replaced, compiled (None for other patterns)."""
    for old, new in CALENDAR_PATTERNS.items():
        if new == pattern:
            return re.compile(old)
    return None


def impossible_day(pattern: str, value: object) -> str | None:
    """"2019-02 has no day 30" when `value` broke calendar `pattern` only by naming a day that
    does not exist (it has R4's date format); None when its format is wrong."""
    r4_format = _r4_format(pattern)
    if r4_format is None or not isinstance(value, str) or r4_format.fullmatch(value) is None:
        return None
    return f"{value[:7]} has no day {value[8:10]}"


# --- The table-driven rules ---------------------------------------------------------------------


@cache
def rules() -> dict[str, Any]:
    """The shipped table (data/r4-rules.json, 40 KB)."""
    return orjson.loads(_RULES_FILE.read_bytes())  # type: ignore[no-any-return]


def choice_names(base: str, codes: Iterable[str], among: Container[str]) -> list[str]:
    """The JSON names of choice element `base`[x] with types `codes` that are `among` a
    definition's properties or an object's names: valueString, _valueString, valueQuantity."""
    names = []
    for code in codes:
        name = base + code[0].upper() + code[1:]
        names += [n for n in (name, f"_{name}") if n in among]
    return names


@cache
def choice_bases() -> dict[str, str]:
    """The choice element of each JSON name of one (`valueString` and `_valueString`: value).
    The same name always belongs to an element of the same name (tests/model/test_rules.py)."""
    bases: dict[str, str] = {}
    for groups in rules()["choices"].values():
        for base, codes in groups.items():
            for code in codes:
                name = base + code[0].upper() + code[1:]
                bases[name] = bases[f"_{name}"] = base
    return bases


def add_rules(defs: dict[str, Any]) -> None:
    """Add the table's rules, in place, to the (corrected) schema `definitions`."""
    table = rules()
    for name, elements in table["required"].items():
        values = table["value_required"].get(name, [])
        _add_required(defs[name], elements, values, table["choices"].get(name, {}))
    for name, groups in table["choices"].items():
        defs[name]["anyOf"] = _one_value_per_choice(groups, defs[name]["properties"])
    for name in table["no_modifier_extension"]:
        del defs[name]["properties"]["modifierExtension"]


def _one_value_per_choice(
    groups: dict[str, list[str]], properties: dict[str, Any]
) -> list[dict[str, Any]]:
    """`anyOf` [cannot conflict, does not conflict] for the choice elements of a definition.

    When a JSON name of a choice element is present (`valueString`), the object may have none
    of the names of the element's other types (`dependencies`, then `propertyNames`).
    jsonschema_rs looks up every `dependencies` name in the object, ~100 for Extension.value[x];
    the first branch spares that for the objects too small to conflict, such as nearly every
    Extension: at most two elements, one of which is no choice.
    """
    dependencies: dict[str, Any] = {}
    names_of_choices: list[str] = []
    for base, codes in groups.items():
        names = choice_names(base, codes, properties)
        names_of_choices += names
        for name in names:
            others = [n for n in names if n.lstrip("_") != name.lstrip("_")]
            other_names = set(others)
            allowed = [p for p in properties if p not in other_names]
            # The shorter list (Extension: its 6 names; ElementDefinition: the ~100 others).
            check = {"enum": allowed} if len(allowed) <= len(others) else {"not": {"enum": others}}
            dependencies[name] = {"propertyNames": check}
    return [
        {"maxProperties": 2, "not": {"propertyNames": {"enum": names_of_choices}}},
        {"dependencies": dependencies},
    ]


def _add_required(
    definition: dict[str, Any],
    elements: list[str],
    values: list[str],
    choices: dict[str, list[str]],
) -> None:
    """`required` for what must be there itself; `anyOf` of `required` for a primitive
    (`x` or `_x`) and a choice (any of its names). Extension.url is the one `values`: R4 types
    it as an XML attribute, with no `_url`, though the schema accepts one."""
    properties = definition["properties"]
    required: list[str] = definition.setdefault("required", [])
    any_of_names = []
    for element in elements:
        if element.endswith("[x]"):
            any_of_names.append(choice_names(element[:-3], choices[element[:-3]], properties))
        elif f"_{element}" in properties and element not in values:
            any_of_names.append([element, f"_{element}"])
            if element in required:  # the schema requires some canonicals, `_x` forgotten
                required.remove(element)
        elif element not in required:
            required.append(element)
    if any_of_names:
        definition["allOf"] = [{"anyOf": [{"required": [n]} for n in ns]} for ns in any_of_names]
