"""The R4 rules the fast layer adds to the JSON schema, and the proof that it now catches
everything the fhir.resources models catch.

1. `data/r4-rules.json` is derived here from the official R4 StructureDefinitions
   (profiles-resources.json, profiles-types.json) and the definition names of the R4 JSON
   schema; the test fails when the shipped file drifts. Rewrite it with
   `.venv/bin/python -m tests.model.test_rules` and review the diff.
2. The four rules (required elements at any depth, one value per choice element, real
   calendar dates, modifierExtension only where R4 defines one), each with a precise issue.
3. Completeness: on the 607 official examples, the 1,660 Synthea resources, 659 synthetic
   resources (one around each schema definition) and 3,416 mutations of them (every rule of
   the table broken at its place, up to three times, plus hypothesis-chosen combinations of
   several faults), the schema layer alone reports every (code, expression) the R4B models
   report, and exactly the faults that were made.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fhir_server.model import schema_rules, validation
from fhir_server.model.types import RESOURCE_TYPES
from fhir_server.model.validation import Validator

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
R4 = SHARED / "fhir-r4"
DATA = Path(__file__).resolve().parents[2] / "fhir_server" / "model" / "data"
RULES_FILE = DATA / "r4-rules.json"
FAST, BOTH = Validator(use_models=False), Validator(use_models=True)

# --- 1. The table, derived from the official definitions ------------------------------------


@cache
def schema_definitions() -> dict[str, Any]:
    """The published schema's definitions (names and properties only are used)."""
    schema = orjson.loads((R4 / "fhir.schema.json").read_bytes())
    return schema["definitions"]  # type: ignore[no-any-return]


@cache
def structure_definitions() -> dict[str, dict[str, Any]]:
    """The R4 StructureDefinitions that have a definition of the same name in the schema:
    every resource and complex type, and the Quantity profiles SimpleQuantity, MoneyQuantity."""
    defs = schema_definitions()
    found = {}
    for bundle in ("profiles-resources.json", "profiles-types.json"):
        for entry in orjson.loads((R4 / bundle).read_bytes())["entry"]:
            resource = entry["resource"]
            if resource["resourceType"] != "StructureDefinition":
                continue
            name = resource["id"]
            if name in defs and "properties" in defs[name]:
                found[name] = resource
    return found


def _ref(node: dict[str, Any]) -> str:
    item = node.get("items", node)
    return str(item.get("$ref", "")).removeprefix("#/definitions/")


@cache
def definition_paths() -> dict[str, tuple[str, str]]:
    """Each schema definition with properties -> (StructureDefinition id, element path).

    `Questionnaire_Item` is `Questionnaire.item`; a backbone element reached through a
    contentReference (`Questionnaire.item.item`) is the definition it refers to.
    """
    defs, sds = schema_definitions(), structure_definitions()
    paths: dict[str, tuple[str, str]] = {}
    for sd_id, sd in sds.items():
        elements = {e["path"]: e for e in sd["snapshot"]["element"]}
        todo = [(sd_id, str(sd["type"]))]
        while todo:
            name, path = todo.pop()
            if name in paths:
                assert paths[name] == (sd_id, path), f"{name} at two places"
                continue
            paths[name] = (sd_id, path)
            for prop, node in defs[name]["properties"].items():
                target = _ref(node)
                if "_" in target and not prop.startswith("_"):  # a backbone element
                    element = elements[f"{path}.{prop}"]
                    reference = element.get("contentReference")
                    todo.append((target, reference[1:] if reference else f"{path}.{prop}"))
    return paths


def children(name: str) -> Iterator[dict[str, Any]]:
    """The element definitions directly inside schema definition `name`."""
    sd_id, path = definition_paths()[name]
    for element in structure_definitions()[sd_id]["snapshot"]["element"]:
        rest = element["path"].removeprefix(path + ".")
        if rest != element["path"] and "." not in rest:
            yield element


@cache
def derive_rules() -> dict[str, Any]:
    required: dict[str, list[str]] = {}
    value_required: dict[str, list[str]] = {}
    choices: dict[str, dict[str, list[str]]] = {}
    no_modifier_extension = []
    defs = schema_definitions()
    for name in sorted(definition_paths()):
        elements = list(children(name))
        names = {e["path"].rsplit(".", 1)[1] for e in elements}
        for element in elements:
            element_name = element["path"].rsplit(".", 1)[1]
            if element["min"] >= 1:
                required.setdefault(name, []).append(element_name)
                codes = [t["code"] for t in element.get("type", [])]
                if codes and all(c.startswith("http://hl7.org/fhirpath/System.") for c in codes):
                    value_required.setdefault(name, []).append(element_name)
            if element_name.endswith("[x]"):
                codes = [t["code"] for t in element["type"]]
                choices.setdefault(name, {})[element_name[:-3]] = codes
        if "modifierExtension" in defs[name]["properties"] and "modifierExtension" not in names:
            no_modifier_extension.append(name)
    return {
        "about": (
            "FHIR R4 4.0.1 rules the JSON schema does not state, by schema definition; derived "
            "by tests/model/test_rules.py from profiles-resources.json and profiles-types.json. "
            "required: elements with min >= 1 ('x[x]': a choice); value_required: those of "
            "them typed as a FHIRPath System type (an XML attribute), so that `_x` without x "
            "does not count; choices: type codes of each choice element; "
            "no_modifier_extension: definitions where the schema allows modifierExtension and "
            "R4 defines none."
        ),
        "required": {n: sorted(r) for n, r in required.items()},
        "value_required": value_required,
        "choices": choices,
        "no_modifier_extension": no_modifier_extension,
    }


def render(rules: dict[str, Any]) -> bytes:
    """One definition per line: small, and a drift shows as a readable diff."""
    lines = ["{", f'"about": {_json(rules["about"])},']
    for key in ("required", "value_required", "choices"):
        lines.append(f'"{key}": {{')
        items = [f"{_json(n)}: {_json(v)}" for n, v in rules[key].items()]
        lines.append(",\n".join(items))
        lines.append("},")
    lines.append(f'"no_modifier_extension": {_json(rules["no_modifier_extension"])}')
    lines.append("}")
    return "\n".join(lines).encode() + b"\n"


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def test_shipped_rules_are_the_ones_derived_from_the_r4_definitions() -> None:
    assert RULES_FILE.read_bytes() == render(derive_rules()), (
        "the R4 data or the derivation changed: run `.venv/bin/python -m tests.model.test_rules`"
        " and review the diff"
    )
    assert orjson.loads(RULES_FILE.read_bytes()) == derive_rules()


def test_every_schema_definition_has_its_place_in_the_definitions() -> None:
    with_properties = {n for n, d in schema_definitions().items() if "properties" in d}
    assert set(definition_paths()) == with_properties
    assert len(with_properties) == 659  # 146 resources, 40 datatypes, 473 nested elements


def test_table_size() -> None:
    rules = derive_rules()
    required = [e for r in rules["required"].values() for e in r]
    assert len(required) == 773
    assert sum(e.endswith("[x]") for e in required) == 48
    assert sum(len(c) for c in rules["choices"].values()) == 186
    assert len(rules["no_modifier_extension"]) == 14
    assert rules["value_required"] == {"Extension": ["url"]}


def r4_json_names(name: str) -> set[str]:
    """The JSON names R4 gives the elements of definition `name` (json.html): a choice
    element by type (valueString), a primitive also with `_` (its id and extensions)."""
    primitives = {n for n, d in schema_definitions().items() if "properties" not in d}
    names = set()
    for element in children(name):
        element_name = element["path"].rsplit(".", 1)[1]
        codes = [t["code"] for t in element.get("type", [])]
        for code in codes or [""]:
            json_name = element_name
            if element_name.endswith("[x]"):
                json_name = element_name[:-3] + code[0].upper() + code[1:]
            names.add(json_name)
            if code in primitives and code != "xhtml":  # json.html: `div` has no `_div`
                names.add(f"_{json_name}")
    return names


def test_schema_elements_are_the_r4_elements() -> None:
    """The schema and R4 name the same elements but for: modifierExtension where R4 defines
    none (the table removes it); `Extension._url`, although R4 types url as a FHIRPath
    String, like `Element.id`, which has no `_id` (kept: it is accepted, but does not count as
    the required url); `_x` of canonical elements (added by the corrections); and Meta as a type
    of open choice elements, which the schema leaves out (not corrected: `valueMeta` is
    rejected although R4 allows it)."""
    defs = schema_definitions()
    no_modifier = set(derive_rules()["no_modifier_extension"])
    lacking = set()
    for name in definition_paths():
        schema_names = set(defs[name]["properties"])
        if name in structure_definitions():  # a resource's own resourceType is no element
            schema_names.discard("resourceType")
        r4_names = r4_json_names(name)
        extra = schema_names - r4_names
        expected = {"modifierExtension"} if name in no_modifier else set()
        assert extra == (expected | {"_url"} if name == "Extension" else expected), name
        for missing in r4_names - schema_names:
            element = defs[name]["properties"].get(missing.removeprefix("_"), {})
            if _ref(element) == "canonical":
                continue  # corrected in validation.py: `meta._profile` is accepted
            lacking.add(f"{name}.{missing}")
    assert lacking == {
        f"{name}.{base}Meta"
        for name, groups in derive_rules()["choices"].items()
        for base, codes in groups.items()
        if "Meta" in codes
    }


def test_each_json_name_of_a_choice_belongs_to_one_element_name() -> None:
    """`choice_bases` maps valueString to value whatever the definition: never ambiguous."""
    seen: dict[str, str] = {}
    for groups in derive_rules()["choices"].values():
        for base, codes in groups.items():
            for code in codes:
                name = base + code[0].upper() + code[1:]
                assert seen.setdefault(name, base) == base
    assert schema_rules.choice_bases()["_valueString"] == "value"


# --- 2. The four rules, one precise issue each ---------------------------------------------


def observation(**elements: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, **elements}


def questionnaire(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Questionnaire", "status": "draft", "item": items}


EXT = {"url": "http://example.org/e", "valueString": "s"}
ABSENT = {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                         "valueCode": "unknown"}]}  # fmt: skip

RULE_CASES: dict[str, tuple[dict[str, Any], list[tuple[str, str, str]]]] = {
    "missing required primitive": (
        {"resourceType": "Observation", "code": {"text": "x"}},
        [("required", "Observation.status", "Missing required element 'status'")],
    ),
    "missing required primitive in nested backbone elements": (
        questionnaire([{"linkId": "1", "type": "group", "item": [
            {"linkId": "1.1", "type": "string"}, {"linkId": "1.2", "type": "string"},
            {"type": "string", "text": "no linkId"},
        ]}]),  # fmt: skip
        [("required", "Questionnaire.item[0].item[2].linkId", "Missing required element 'linkId'")],
    ),
    "missing required primitive in a datatype (Extension.url)": (
        observation(extension=[{"valueString": "s"}]),
        [("required", "Observation.extension[0].url", "Missing required element 'url'")],
    ),
    "missing required primitive array": (
        {"resourceType": "CapabilityStatement", "status": "active", "date": "2020",
         "kind": "instance", "fhirVersion": "4.0.1"},  # fmt: skip
        [("required", "CapabilityStatement.format", "Missing required element 'format'")],
    ),
    "missing required choice element": (
        {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
         "subject": {"reference": "Patient/1"}},  # fmt: skip
        [("required", "MedicationRequest.medication", "Missing required element 'medication[x]'")],
    ),
    "missing required complex element": (
        {"resourceType": "Observation", "status": "final"},
        [("required", "Observation.code", "Missing required element 'code'")],
    ),
    "two values for one choice element": (
        observation(valueString="a", valueBoolean=True),
        [("structure", "Observation.value",
          "Only one value[x] is allowed, found valueBoolean, valueString")],
    ),  # fmt: skip
    "three values, one given by its extensions only": (
        observation(valueString="a", valueBoolean=True, _valueInteger=ABSENT),
        [("structure", "Observation.value",
          "Only one value[x] is allowed, found _valueInteger, valueBoolean, valueString")],
    ),  # fmt: skip
    "two values in an extension and in a component": (
        observation(
            extension=[{**EXT, "valueBoolean": True}],
            component=[{"code": {"text": "c"}, "valueQuantity": {"value": 1}, "valueString": "s"}],
        ),
        [
            ("structure", "Observation.extension[0].value",
             "Only one value[x] is allowed, found valueBoolean, valueString"),
            ("structure", "Observation.component[0].value",
             "Only one value[x] is allowed, found valueQuantity, valueString"),
        ],
    ),  # fmt: skip
    "two values and no url in an extension": (
        observation(extension=[{"valueString": "s", "valueBoolean": True}]),
        [
            ("required", "Observation.extension[0].url", "Missing required element 'url'"),
            ("structure", "Observation.extension[0].value",
             "Only one value[x] is allowed, found valueBoolean, valueString"),
        ],
    ),  # fmt: skip
    "two choice elements with a value each, and a look-alike element (amountType)": (
        {"resourceType": "SubstanceReferenceInformation", "target": [
            {"amountType": {"text": "t"}, "amountString": "a", "amountRange": {"id": "r"}}]},
        [("structure", "SubstanceReferenceInformation.target[0].amount",
          "Only one amount[x] is allowed, found amountRange, amountString")],
    ),  # fmt: skip
    "impossible date": (
        {"resourceType": "Patient", "birthDate": "2019-02-30"},
        [("value", "Patient.birthDate", 'Invalid date value "2019-02-30": 2019-02 has no day 30')],
    ),
    "impossible dateTime in an array": (
        observation(effectiveTiming={"event": ["2020-04-30T10:00:00Z", "2020-04-31T10:00:00Z"]}),
        [("value", "Observation.effectiveTiming.event[1]",
          'Invalid dateTime value "2020-04-31T10:00:00Z": 2020-04 has no day 31')],
    ),  # fmt: skip
    "February 29 outside a leap year (instant)": (
        observation(issued="2100-02-29T00:00:00Z"),
        [("value", "Observation.issued",
          'Invalid instant value "2100-02-29T00:00:00Z": 2100-02 has no day 29')],
    ),  # fmt: skip
    "impossible date in a choice element": (
        observation(valueDateTime="2021-11-31"),
        [("value", "Observation.valueDateTime",
          'Invalid dateTime value "2021-11-31": 2021-11 has no day 31')],
    ),  # fmt: skip
    "malformed and impossible date: one issue, the format": (
        {"resourceType": "Patient", "birthDate": "2019-02-30T10:00:00Z"},
        [("value", "Patient.birthDate", 'Invalid date value "2019-02-30T10:00:00Z"')],
    ),
    "Extension.url given by its extensions only (R4 types url as an XML attribute)": (
        observation(extension=[{"_url": ABSENT, "valueString": "s"}]),
        [("required", "Observation.extension[0].url", "Missing required element 'url'")],
    ),
    "modifierExtension where R4 defines none": (
        observation(effectiveTiming={"repeat": {"modifierExtension": [EXT]}}),
        [("structure", "Observation.effectiveTiming.repeat.modifierExtension",
          "Unknown element 'modifierExtension'")],
    ),  # fmt: skip
}


def issues(resource: Any, validator: Validator = FAST) -> list[tuple[str, str, str]]:
    return [(i.code, ",".join(i.expression), i.diagnostics) for i in validator.issues(resource)]


@pytest.mark.parametrize(("resource", "expected"), RULE_CASES.values(), ids=RULE_CASES)
def test_rule(resource: dict[str, Any], expected: list[tuple[str, str, str]]) -> None:
    assert issues(resource) == expected
    assert issues(resource, BOTH) == expected  # the models only run on what the schema passes


VALID_CASES: dict[str, dict[str, Any]] = {
    "required primitive given by its extensions only": {
        "resourceType": "Observation", "_status": ABSENT, "code": {"text": "x"}},
    # fhir_core raised AttributeError on this one: the model layer must not fail on it
    "required primitive array given by its extensions only": {
        "resourceType": "CapabilityStatement", "status": "active", "date": "2020",
        "kind": "instance", "fhirVersion": "4.0.1", "_format": [ABSENT]},
    "required choice given by its extensions only": {
        "resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "component": [{"code": {"text": "c"}, "_valueString": ABSENT}]},
    "a choice value with its own extensions": observation(valueString="a", _valueString=ABSENT),
    "February 29 in leap years": observation(
        effectivePeriod={"start": "2000-02-29", "end": "2024-02-29T23:59:60+14:00"},
        issued="1600-02-29T00:00:00.000Z"),
    "partial dates": observation(effectivePeriod={"start": "2019", "end": "2019-02"}),
    "modifierExtension where R4 defines one": observation(
        component=[{"code": {"text": "c"}, "modifierExtension": [EXT]}]),
    "an extension with several elements": observation(
        extension=[{"id": "e", **EXT, "_valueString": ABSENT}]),
}  # fmt: skip


@pytest.mark.parametrize("resource", VALID_CASES.values(), ids=VALID_CASES)
def test_valid(resource: dict[str, Any]) -> None:
    assert issues(resource) == []
    assert issues(resource, BOTH) == []


def test_calendar_patterns_accept_exactly_the_real_dates() -> None:
    """Each calendar pattern accepts what R4's pattern accepts, minus the days that do not
    exist: days 0-32 of every month in 40 years (leap, common, centuries, 0001, 9999),
    February 29 in every year, with and without a time."""
    patterns = {
        t: (re.compile(r4), re.compile(schema_rules.CALENDAR_PATTERNS[r4]))
        for t, r4 in schema_rules.R4_DATE_PATTERNS.items()
    }
    years = [1, 4, 100, 400, 1600, 1700, 1900, 1996, 1999, 2000, 2019, 2020, 2100, 9996, 9999]
    years += list(range(2001, 2026))
    values = [f"{y:04}-{m:02}-{d:02}" for y in years for m in range(1, 13) for d in range(0, 33)]
    values += [f"{y:04}-02-29" for y in range(0, 10000)]
    values += ["0000", "2019", "2019-02", "2019-13", "2019-00", "2019-02-30x", "2019-02-3"]
    checked = 0
    for value in values:
        for suffix in ("", "T10:00:00Z", "T23:59:60.123+14:00", "T10:00:00"):
            text = value + suffix
            real = _is_real_day(value)
            for name, (r4, calendar_pattern) in patterns.items():
                expected = r4.fullmatch(text) is not None and (len(value) < 10 or real)
                assert (calendar_pattern.fullmatch(text) is not None) == expected, (name, text)
                checked += 1
    assert checked == 310_164
    # jsonschema_rs reads them as Python does
    for name, (_, calendar_pattern) in patterns.items():
        schema = {"type": "string", "pattern": calendar_pattern.pattern}
        validator = jsonschema_rs.Draft6Validator(schema)
        for text in ("2020-02-29", "2019-02-29", "2019-04-31", "2019-04-30T10:00:00Z", "2019"):
            assert validator.is_valid(text) == (calendar_pattern.fullmatch(text) is not None)


def _is_real_day(value: str) -> bool:
    try:
        year, month, day = int(value[:4]), int(value[5:7]), int(value[8:10])
    except ValueError:
        return False
    return 1 <= year and 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]


# --- 3. Completeness: the schema layer reports whatever the models report --------------------
#
# A corpus of resources: the official examples, the Synthea resources, a synthetic resource
# around each schema definition, and mutations of them that break one of the four rules at a
# known place (or change a resource validly). For every resource:
# - the models, run on their own (not only after a clean schema), report no (code, expression)
#   the schema layer does not;
# - both validators give the same issues (`use_models` changes the cost, not the verdict);
# - for a mutation, the schema layer reports exactly the fault that was made.

Steps = tuple[str | int, ...]
DATE_TYPES = ("date", "dateTime", "instant")


@cache
def examples() -> list[dict[str, Any]]:
    return [orjson.loads(p.read_bytes()) for p in sorted((R4 / "examples").glob("*.json"))]


@cache
def synthea() -> list[dict[str, Any]]:
    bundles = [orjson.loads(p.read_bytes()) for p in sorted((SHARED / "synthea").glob("*.json"))]
    return [entry["resource"] for bundle in bundles for entry in bundle["entry"]]


@cache
def synthetic() -> list[dict[str, Any]]:
    """For each schema definition, the smallest resource holding it: the shortest way to it
    from a resource type, each element on the way with its required elements only. The
    examples give no place to some rules (most modifierExtension rules, most choice
    elements); these resources give every rule of the table a place."""
    defs, routes = _definitions(), _routes()
    made = []
    for name in sorted(definition_paths()):
        root, steps = routes[name]
        resource = {"resourceType": root, **sample(root)}
        parent, parent_definition = resource, root
        for prop, target in steps:
            child = sample(target)
            base = schema_rules.choice_bases().get(prop)
            codes = derive_rules()["choices"].get(parent_definition, {}).get(base or "")
            for other in schema_rules.choice_names(base or "", codes or [], parent):
                del parent[other]  # the way goes through another type of this choice
            many = defs[parent_definition]["properties"][prop].get("type") == "array"
            parent[prop] = [child] if many else child
            parent, parent_definition = child, target
        made.append(resource)
    return made


Route = tuple[str, list[tuple[str, str]]]  # resource type, [(element, definition)]


def _routes() -> dict[str, Route]:
    """The shortest way from a resource type to each definition (breadth first)."""
    defs = _definitions()
    routes: dict[str, Route] = {}
    todo: list[tuple[str, Route]] = [(t, (t, [])) for t in sorted(RESOURCE_TYPES)]
    while todo:
        following: list[tuple[str, Route]] = []
        for name, route in todo:
            if name in routes:
                continue
            routes[name] = route
            for prop, node in defs[name]["properties"].items():
                target = _ref(node.get("items", node))
                if "properties" in defs.get(target, {}) and target not in routes:
                    following.append((target, (route[0], [*route[1], (prop, target)])))
        todo = following
    return routes


def corpus() -> list[dict[str, Any]]:
    return examples() + synthea() + synthetic()


def model_findings(resource: dict[str, Any]) -> set[tuple[str, str]]:
    """What the R4B models report, run on every resource (the validator runs them only when
    the schema found nothing)."""
    found = BOTH._model_pass(resource, resource["resourceType"])
    return {(i.code, i.expression[0]) for i in found}


def findings(resource: dict[str, Any], validator: Validator = FAST) -> set[tuple[str, str]]:
    return {(i.code, i.expression[0]) for i in validator.issues(resource)}


def _definitions() -> dict[str, Any]:
    return validation._definitions()


def _date_type(node: dict[str, Any]) -> str | None:
    patterns = schema_rules.CALENDAR_PATTERNS
    names = {patterns[r4]: t for t, r4 in schema_rules.R4_DATE_PATTERNS.items()}
    ref = _ref(node)
    return ref if ref in DATE_TYPES else names.get(node.get("pattern", ""))


def walk(resource: dict[str, Any]) -> Iterator[tuple[Steps, str, Any]]:
    """(steps, definition, value) of every object in `resource` (contained and entry
    resources included) and of every date, dateTime and instant (definition: the type)."""
    yield from _walk(resource, resource["resourceType"], ())


def _walk(node: dict[str, Any], definition: str, steps: Steps) -> Iterator[tuple[Steps, str, Any]]:
    defs = _definitions()
    yield steps, definition, node
    properties = defs[definition]["properties"]
    for name, value in node.items():
        prop = properties.get(name)
        if prop is None or name == "resourceType":
            continue
        item = prop.get("items", prop)
        target, date_type = _ref(item), _date_type(item)
        places: list[tuple[int | None, Any]] = [(None, value)]
        if isinstance(value, list):
            places = list(enumerate(value))
        for i, inner in places:
            at = (*steps, name) if i is None else (*steps, name, i)
            if target == "ResourceList" and isinstance(inner, dict):
                yield from _walk(inner, inner["resourceType"], at)
            elif isinstance(inner, dict) and "properties" in defs.get(target, {}):
                yield from _walk(inner, target, at)
            elif date_type is not None and isinstance(inner, str):
                yield at, date_type, inner


def expression(resource: dict[str, Any], steps: Steps) -> str:
    return validation._fhirpath(resource["resourceType"], steps)


def at(resource: Any, steps: Steps) -> Any:
    for step in steps:
        resource = resource[step]
    return resource


def copy_of(resource: dict[str, Any]) -> dict[str, Any]:
    return orjson.loads(orjson.dumps(resource))  # type: ignore[no-any-return]


# Valid values of each type, to add a second value to a choice element.
PRIMITIVE_SAMPLES: dict[str, Any] = {
    "base64Binary": "AAAA", "boolean": True, "canonical": "http://example.org/c", "code": "c",
    "date": "2020-01-01", "dateTime": "2020-01-01T00:00:00Z", "decimal": 1.5, "id": "a1",
    "instant": "2020-01-01T00:00:00Z", "integer": -1, "markdown": "*m*", "oid": "urn:oid:1.2.3",
    "positiveInt": 1, "string": "s", "time": "10:00:00", "unsignedInt": 0, "uri": "urn:x",
    "url": "http://example.org/u", "uuid": "urn:uuid:c757873d-ec9a-4326-a141-556f43239520",
    "xhtml": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>',
}  # fmt: skip


def sample(code: str) -> Any:
    """A valid value of type `code`: an id and the required elements, recursively."""
    if code in PRIMITIVE_SAMPLES:
        return PRIMITIVE_SAMPLES[code]
    value: dict[str, Any] = {"id": "s"}
    properties = _definitions()[code]["properties"]
    for element in derive_rules()["required"].get(code, []):
        if element.endswith("[x]"):
            first = derive_rules()["choices"][code][element[:-3]][0]
            value[json_name(element[:-3], first)] = sample(first)
            continue
        node = properties[element]
        item = node.get("items", node)
        one = item["enum"][0] if "enum" in item else sample(_type_name(item))
        value[element] = [one] if node.get("type") == "array" else one
    return value


def _type_name(node: dict[str, Any]) -> str:
    """The type of a schema property: its reference, or the primitive its pattern is of."""
    if "pattern" in node:
        return validation._pattern_names()[node["pattern"]]
    return _ref(node) or {"integer": "integer", "number": "decimal"}.get(node["type"], "boolean")


def json_name(base: str, code: str) -> str:
    return base + code[0].upper() + code[1:]


@dataclass(frozen=True)
class Mutation:
    """A change to a resource: one fault at a known place (or, `expected` empty, none)."""

    what: str  # kind, then place: "delete Observation.status"
    touched: Steps  # what it changes
    change: Callable[[dict[str, Any]], None]
    expected: frozenset[tuple[str, str]]

    def applied(self, resource: dict[str, Any]) -> dict[str, Any]:
        mutated = copy_of(resource)
        self.change(mutated)
        return mutated


def delete_required(
    resource: dict[str, Any], steps: Steps, definition: str, element: str
) -> Mutation | None:
    node = at(resource, steps)
    if element.endswith("[x]"):
        base = element[:-3]
        codes = derive_rules()["choices"][definition][base]
        names = set(schema_rules.choice_names(base, codes, node))
    else:
        base, names = element, {element, f"_{element}"} & node.keys()
    if not names or not node.keys() - names - {"resourceType"}:
        return None  # absent already, or the object would be empty (another fault)

    def change(mutated: dict[str, Any]) -> None:
        for name in names:
            del at(mutated, steps)[name]

    where = f"{expression(resource, steps)}.{base}"
    return Mutation(
        f"delete {definition}.{element}", (*steps, base), change, frozenset({("required", where)})
    )


def extensions_only(
    resource: dict[str, Any], steps: Steps, definition: str, element: str
) -> Mutation | None:
    """No fault: a required primitive given by its extensions only (json.html#primitive)."""
    node = at(resource, steps)
    has_x = f"_{element}" in _definitions()[definition]["properties"]
    value_required = element in derive_rules()["value_required"].get(definition, [])
    if not has_x or value_required or element not in node or isinstance(node[element], dict):
        return None
    value = node[element]

    def change(mutated: dict[str, Any]) -> None:
        target = at(mutated, steps)
        del target[element]
        target[f"_{element}"] = [ABSENT] * len(value) if isinstance(value, list) else ABSENT

    return Mutation(
        f"extensions-only {definition}.{element}", (*steps, element), change, frozenset()
    )


def second_value(
    resource: dict[str, Any], steps: Steps, definition: str, base: str, pick: int
) -> Mutation | None:
    """A value of another type for a choice element (two when it has none); every fifth
    time given by its extensions only (`_valueBoolean`)."""
    node = at(resource, steps)
    codes = derive_rules()["choices"][definition][base]
    properties = _definitions()[definition]["properties"]
    present = {n.lstrip("_") for n in schema_rules.choice_names(base, codes, node)}
    others = [c for c in codes if json_name(base, c) in properties.keys() - present]
    if len(present) + len(others) < 2 or len(others) < 1:
        return None
    added = [others[pick % len(others)]]
    if not present:
        added.append(others[(pick + 1) % len(others)])
    extension_only = pick % 5 == 4

    def change(mutated: dict[str, Any]) -> None:
        target = at(mutated, steps)
        for code in added:
            name = json_name(base, code)
            if extension_only and f"_{name}" in properties:
                target[f"_{name}"] = ABSENT
            else:
                target[name] = sample(code)

    where = f"{expression(resource, steps)}.{base}"
    return Mutation(
        f"second {definition}.{base}[x]", (*steps, base), change, frozenset({("structure", where)})
    )


IMPOSSIBLE_DAYS = ("02-30", "02-31", "04-31", "06-31", "09-31", "11-31", "02-29")


def impossible_date(resource: dict[str, Any], steps: Steps, date_type: str, pick: int) -> Mutation:
    value: str = at(resource, steps)
    day = IMPOSSIBLE_DAYS[pick % len(IMPOSSIBLE_DAYS)]
    year = ("2019", "1900", "2100", "2023")[pick % 4] if day == "02-29" else value[:4]
    after_day = value[10:] if len(value) > 10 else ("T12:00:00Z" if date_type == "instant" else "")

    def change(mutated: dict[str, Any]) -> None:
        at(mutated, steps[:-1])[steps[-1]] = f"{year}-{day}{after_day}"

    where = expression(resource, steps)
    return Mutation(f"impossible {date_type}", steps, change, frozenset({("value", where)}))


def modifier_extension(resource: dict[str, Any], steps: Steps, definition: str) -> Mutation:
    def change(mutated: dict[str, Any]) -> None:
        at(mutated, steps)["modifierExtension"] = [EXT]

    where = f"{expression(resource, steps)}.modifierExtension"
    return Mutation(
        f"modifierExtension {definition}",
        (*steps, "modifierExtension"),
        change,
        frozenset({("structure", where)}),
    )


def mutations(resource: dict[str, Any], pick: int = 0) -> Iterator[Mutation]:
    """Each mutation `resource` allows: every place of every kind of fault."""
    rules = derive_rules()
    no_modifier = set(rules["no_modifier_extension"])
    for steps, definition, _ in walk(resource):
        if definition in DATE_TYPES:
            yield impossible_date(resource, steps, definition, pick)
            continue
        for element in rules["required"].get(definition, []):
            yield from _some(delete_required(resource, steps, definition, element))
            yield from _some(extensions_only(resource, steps, definition, element))
        for base in rules["choices"].get(definition, {}):
            yield from _some(second_value(resource, steps, definition, base, pick))
        if definition in no_modifier:
            yield modifier_extension(resource, steps, definition)


def _some(mutation: Mutation | None) -> Iterator[Mutation]:
    if mutation is not None:
        yield mutation


@cache
def chosen_mutations(per_place: int = 3) -> list[tuple[Mutation, dict[str, Any]]]:
    """Up to `per_place` mutations of each kind at each place (definition and element) over
    the whole corpus, each with the resource it changes."""
    count: dict[str, int] = {}
    chosen = []
    for number, resource in enumerate(corpus()):
        for mutation in mutations(resource, pick=number):
            if count.get(mutation.what, 0) < per_place:
                count[mutation.what] = count.get(mutation.what, 0) + 1
                chosen.append((mutation, resource))
    return chosen


def check(resource: dict[str, Any], expected: frozenset[tuple[str, str]] | None = None) -> None:
    fast = findings(resource)
    models = model_findings(resource)
    assert models <= fast, f"the models only: {models - fast}"
    assert BOTH.issues(resource) == FAST.issues(resource)
    if expected is not None:
        assert fast == expected


def test_the_corpus_gives_the_same_verdicts_with_and_without_models() -> None:
    """The examples and Synthea: the models find nothing the schema layer does not;
    Questionnaire-qs1 is the one invalid example (32 items without linkId), for both."""
    assert (len(examples()), len(synthea()), len(synthetic())) == (607, 1660, 659)
    invalid = {}
    for resource in corpus():
        check(resource)
        if findings(resource):
            invalid[resource["id"]] = len(findings(resource))
    assert invalid == {"qs1": 32}


def test_mutations_break_every_rule_of_the_table_at_its_place() -> None:
    places: dict[str, set[str]] = {}
    for mutation, _ in chosen_mutations():
        kind, place = mutation.what.split(" ", 1)
        places.setdefault(kind, set()).add(place)
    rules, defs = derive_rules(), _definitions()
    required = {f"{d}.{e}" for d, elements in rules["required"].items() for e in elements}
    assert places["delete"] == required  # 773
    assert places["extensions-only"] == {  # each required primitive (but Extension.url)
        f"{d}.{e}"
        for d, elements in rules["required"].items()
        for e in elements
        if f"_{e}" in defs[d]["properties"] and (d, e) != ("Extension", "url")
    }
    assert places["second"] == {  # 186
        f"{d}.{base}[x]" for d, groups in rules["choices"].items() for base in groups
    }
    assert places["modifierExtension"] == set(rules["no_modifier_extension"])  # 14
    assert places["impossible"] == set(DATE_TYPES)
    assert set(places) == set(KINDS)


KINDS = ("delete", "extensions-only", "second", "impossible", "modifierExtension")


@pytest.mark.parametrize("kind", KINDS)
def test_the_schema_layer_finds_each_mutation_and_whatever_the_models_find(kind: str) -> None:
    for mutation, resource in chosen_mutations():
        if mutation.what.startswith(kind + " "):
            mutated = mutation.applied(resource)
            try:
                check(mutated, mutation.expected)
            except AssertionError as failure:
                raise AssertionError(f"{mutation.what}: {failure}") from None


@settings(
    max_examples=200, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck)
)
@given(st.data())
def test_several_faults_at_once(data: st.DataObject) -> None:
    """Hypothesis picks a resource and up to five of its mutations at independent places;
    the schema layer reports each fault and nothing else, and all the models report."""
    resource = data.draw(st.sampled_from(corpus()), label="resource")
    options = list(mutations(resource, pick=data.draw(st.integers(0, 999), label="pick")))
    assume(options)
    chosen = data.draw(
        st.lists(st.sampled_from(options), min_size=1, max_size=5, unique_by=lambda m: m.touched)
    )
    assume(all(a is b or not _overlap(a.touched, b.touched) for a in chosen for b in chosen))
    mutated = copy_of(resource)
    for mutation in chosen:
        mutation.change(mutated)
    assume(all(_not_emptied(mutated, m) for m in chosen))
    check(mutated, frozenset().union(*(m.expected for m in chosen)))


def _overlap(a: Steps, b: Steps) -> bool:
    """Whether two changes touch the same element (valueString is value, _x is x)."""
    a, b = _element_steps(a), _element_steps(b)
    return a[: len(b)] == b or b[: len(a)] == a


def _element_steps(steps: Steps) -> Steps:
    bases = schema_rules.choice_bases()
    return tuple(
        bases.get(s.lstrip("_"), s.lstrip("_")) if isinstance(s, str) else s for s in steps
    )


def _not_emptied(resource: dict[str, Any], mutation: Mutation) -> bool:
    """Deleting two elements of one object may leave it empty: a fault of another kind."""
    if not mutation.what.startswith("delete "):
        return True
    node = at(resource, mutation.touched[:-1])
    return bool(node.keys() - {"resourceType"})

if __name__ == "__main__":
    RULES_FILE.write_bytes(render(derive_rules()))
    print(f"wrote {RULES_FILE}")
