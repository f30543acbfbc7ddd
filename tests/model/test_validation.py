"""Resource validation: one precise issue per problem, with a FHIRPath expression.

Covers FHIR R4 json.html (representation, primitives and `_x`, empty values), datatypes.html
(primitive formats and ranges), formats.html#choice, resource.html#contained, bundle.html,
parameters.html, and the schema corrections and layer choice of docs/validation.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from fhir_server.model import validation
from fhir_server.model.errors import FhirError, Issue, Kind
from fhir_server.model.validation import MAX_ISSUES, Validator, validate

R4 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "fhir-r4"
BOTH, SCHEMA_ONLY = Validator(use_models=True), Validator(use_models=False)


def found(resource: Any, validator: Validator = BOTH) -> list[tuple[str, str, str]]:
    """(code, expression, diagnostics) of each issue; [] when valid."""
    return [(i.code, ",".join(i.expression), i.diagnostics) for i in validator.issues(resource)]


def error(resource: Any, validator: Validator = BOTH) -> FhirError:
    with pytest.raises(FhirError) as raised:
        validator.validate(resource)
    return raised.value


def patient(**elements: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": "p1", **elements}


def product(**elements: Any) -> dict[str, Any]:
    return {"resourceType": "MedicinalProduct", **elements}


def observation(**elements: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, **elements}


# --- Layer 1: the schema ------------------------------------------------------------------

SCHEMA_CASES = {
    "unknown element": (
        patient(foo=1),
        [("structure", "Patient.foo", "Unknown element 'foo'")],
    ),
    "wrong JSON type": (
        patient(active="true"),
        [("structure", "Patient.active", "Expected a boolean, found a string")],
    ),
    "string where an object belongs": (
        patient(maritalStatus="married"),
        [("structure", "Patient.maritalStatus", "Expected an object, found a string")],
    ),
    "object where an array belongs": (
        patient(name=[{"given": "Ann"}]),
        [("structure", "Patient.name[0].given", "Expected an array, found a string")],
    ),
    "null inside an array of objects": (
        patient(name=[None]),
        [("structure", "Patient.name[0]", "Expected an object, found null")],
    ),
    "bad date": (
        patient(birthDate="1974-13-45"),
        [("value", "Patient.birthDate", 'Invalid date value "1974-13-45"')],
    ),
    "dateTime with time but no zone": (
        observation(effectiveDateTime="2020-01-01T10:00:00"),
        [
            (
                "value",
                "Observation.effectiveDateTime",
                'Invalid dateTime value "2020-01-01T10:00:00"',
            )
        ],
    ),
    "bad code": (
        patient(gender="f"),
        [
            (
                "value",
                "Patient.gender",
                'Invalid code "f": expected one of male, female, other, unknown',
            )
        ],
    ),
    "bad id": (
        patient(id="a b"),
        [("value", "Patient.id", 'Invalid id value "a b"')],
    ),
    "decimal as integer": (
        patient(multipleBirthInteger=1.5),
        [("structure", "Patient.multipleBirthInteger", "Expected an integer, found a number")],
    ),
    "integer beyond 32 bits": (
        patient(multipleBirthInteger=2**31),
        [("value", "Patient.multipleBirthInteger", "Value 2147483648 must be at most 2147483647")],
    ),
    "0 as positiveInt": (
        observation(effectiveTiming={"repeat": {"count": 0}}),
        [("value", "Observation.effectiveTiming.repeat.count", "Value 0 must be at least 1")],
    ),
    "empty array": (
        patient(photo=[]),
        [("structure", "Patient.photo", "Empty array is not allowed: leave the element out")],
    ),
    "empty object": (
        patient(contact=[{}]),
        [("structure", "Patient.contact[0]", "Empty object is not allowed: leave the element out")],
    ),
    "empty string": (
        patient(name=[{"family": ""}]),
        [("value", "Patient.name[0].family", "Empty string is not allowed: leave the element out")],
    ),
    "missing required element": (
        {"resourceType": "Observation", "status": "final"},
        [("required", "Observation.code", "Missing required element 'code'")],
    ),
    "number as Narrative.div": (
        patient(text={"status": "generated", "div": 5}),
        [("structure", "Patient.text.div", "Expected a string, found an integer")],
    ),
    "wrong type for a primitive's extensions": (
        patient(birthDate="1970", _birthDate=5),
        [
            (
                "structure",
                "Patient.birthDate",
                "Expected an object, found an integer (in '_birthDate')",
            )
        ],
    ),
    "error inside a primitive's extensions (_x is named x)": (
        patient(birthDate="1970", _birthDate={"extension": [{"url": 5}]}),
        [
            (
                "structure",
                "Patient.birthDate.extension[0].url",
                "Expected a string, found an integer",
            )
        ],
    ),
}


@pytest.mark.parametrize(("resource", "expected"), SCHEMA_CASES.values(), ids=SCHEMA_CASES)
def test_schema_reports_each_problem_precisely(
    resource: dict[str, Any], expected: list[tuple[str, str, str]]
) -> None:
    assert found(resource, SCHEMA_ONLY) == expected
    assert found(resource, BOTH) == expected  # models never run on schema-invalid input
    problem = error(resource)
    assert problem.kind is Kind.UNPROCESSABLE
    assert all(i.severity == "error" for i in problem.issues)


def test_several_problems_give_one_issue_each() -> None:
    resource = patient(foo=1, bar=2, gender="f", birthDate="x", name=[{"given": "Ann"}])
    assert sorted(found(resource)) == [
        ("structure", "Patient.bar", "Unknown element 'bar'"),
        ("structure", "Patient.foo", "Unknown element 'foo'"),
        ("structure", "Patient.name[0].given", "Expected an array, found a string"),
        ("value", "Patient.birthDate", 'Invalid date value "x"'),
        (
            "value",
            "Patient.gender",
            'Invalid code "f": expected one of male, female, other, unknown',
        ),
    ]


def test_unknown_element_has_its_operation_outcome_code() -> None:
    (issue,) = BOTH.issues(patient(foo=1))
    assert issue == Issue(
        code="structure",
        diagnostics="Unknown element 'foo'",
        expression=("Patient.foo",),
        details_code="MSG_UNKNOWN_CONTENT",
    )


VALID_BY_CORRECTION = {
    # the published schema rejects each of these; R4 allows them (docs/validation.md)
    "fhirVersion 4.0.1": {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2020",
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["json"],
    },
    "no-break space in a string": patient(name=[{"family": "van\u00a0Dam"}]),
    "null in a primitive array, value in _x": patient(
        name=[
            {
                "given": ["Ann", None],
                "_given": [None, {"extension": [{"url": "http://e", "valueString": "x"}]}],
            }
        ]
    ),
    "extension on a canonical": patient(meta={"profile": ["http://p"], "_profile": [{"id": "a"}]}),
    "code with inner spaces": observation(valueQuantity={"code": "mm Hg", "value": 1}),
}


@pytest.mark.parametrize("resource", VALID_BY_CORRECTION.values(), ids=VALID_BY_CORRECTION)
def test_corrections_accept_valid_r4(resource: dict[str, Any]) -> None:
    assert found(resource) == []


def test_every_whitespace_and_integer_pattern_of_the_schema_is_corrected() -> None:
    patterns: set[tuple[str, str]] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                patterns.add((node["pattern"], node.get("type", "")))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(orjson.loads((R4 / "fhir.schema.json").read_bytes()))
    for pattern, json_type in patterns:
        if re.search(r"\\[sS]", pattern):
            assert pattern in validation._XSD_PATTERNS
        if json_type == "number" and "." not in pattern:  # decimal is a real JSON number
            assert pattern in validation._INTEGER_PATTERNS


def test_resource_list_slots_are_the_ones_validated_one_by_one() -> None:
    """Every place the schema allows a whole resource is walked by `_nested`."""
    slots = set()
    for name, definition in orjson.loads((R4 / "fhir.schema.json").read_bytes())[
        "definitions"
    ].items():
        for prop, node in definition.get("properties", {}).items():
            if node.get("items", node).get("$ref") == "#/definitions/ResourceList":
                slots.add("*.contained" if prop == "contained" else f"{name}.{prop}")
    assert slots == {
        "*.contained",
        "Bundle_Entry.resource",
        "Bundle_Response.outcome",
        "Parameters_Parameter.resource",
    }


# --- Layer 2: the R4B models ----------------------------------------------------------------

# The four rules the models used to add (required elements, one value per choice, calendar
# dates, modifierExtension) are schema rules now: tests/model/test_rules.py covers them, and
# proves the schema layer reports everything the models report.


def fake_model_issues(resource: dict[str, Any], prefix: str) -> Iterator[Issue]:
    yield Issue("value", f"model finding in {resource['resourceType']}", expression=(prefix,))


R4_VALUES_R4B_WOULD_REJECT = {
    # R4 allows these; the model layer must not report them (docs/validation.md)
    "_x on Extension.value[x]": patient(
        extension=[{"url": "http://e", "valueCode": "a", "_valueCode": {"id": "v"}}]
    ),
    "uuid that is not version 4": patient(
        extension=[
            {"url": "http://e", "valueUuid": "urn:uuid:00000000-0000-1000-8000-000000000000"}
        ]
    ),
    "R4 Evidence (R4B rebuilt it)": {
        "resourceType": "Evidence",
        "status": "draft",
        "exposureBackground": {"reference": "Group/1"},
    },
}


@pytest.mark.parametrize(
    "resource", R4_VALUES_R4B_WOULD_REJECT.values(), ids=R4_VALUES_R4B_WOULD_REJECT
)
def test_models_do_not_reject_valid_r4(resource: dict[str, Any]) -> None:
    assert found(resource) == []


@pytest.mark.parametrize(
    ("element", "value"),
    [
        ("valueUrl", "mailto:a@b.org"),
        ("valueUri", "#fragment"),
        ("valueCanonical", "http://x|1.0"),
        ("valueOid", "urn:oid:2.16.840.1"),
        ("valueInstant", "2016-12-31T23:59:60Z"),
        ("valueDateTime", "2019"),
        ("valueDateTime", "2019-01-01T10:00:00.123456789+14:00"),
        ("valueDate", "2020-02-29"),
        ("valueTime", "12:00:00.5"),
        ("valueDecimal", 1e3),
        ("valueInteger", -(2**31)),
        ("valueUnsignedInt", 0),
        ("valuePositiveInt", 2**31 - 1),
        ("valueId", "x" * 64),
        ("valueBase64Binary", "AAAA BBBB"),
        ("valueMarkdown", "# x\n\n* y"),
    ],
)
def test_r4_primitive_values_pass_both_layers(element: str, value: Any) -> None:
    assert found(patient(extension=[{"url": "http://e", element: value}])) == []


def test_models_run_only_on_schema_valid_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validation, "_model_issues", fake_model_issues)
    # With a schema error present only the schema speaks; the models add to a clean schema.
    assert found(patient(foo=1)) == [("structure", "Patient.foo", "Unknown element 'foo'")]
    assert found(patient()) == [("value", "Patient", "model finding in Patient")]
    assert found(patient(), SCHEMA_ONLY) == []


def test_schema_only_types_skip_the_models() -> None:
    assert "MedicinalProduct" not in validation._agreeing_types()
    assert "Patient" in validation._agreeing_types()
    product = {"resourceType": "MedicinalProduct", "name": [{"productName": "Aspirin"}]}
    assert found(product) == []
    assert found({**product, "name": [{"productName": 5}]}) == [
        ("structure", "MedicinalProduct.name[0].productName", "Expected a string, found an integer")
    ]


# --- Resource types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "code", "diagnostics"),
    [
        (
            {"resourceType": "SubscriptionTopic"},
            "not-supported",
            (
                "Resource type 'SubscriptionTopic' is from FHIR R4B/R5; "
                "this server implements R4 (4.0.1)"
            ),
        ),
        (
            {"resourceType": "Foo"},
            "not-supported",
            'Unknown resource type "Foo" (this server implements FHIR R4 4.0.1)',
        ),
        ({"id": "x"}, "required", "Missing required element 'resourceType'"),
        ({"resourceType": 5}, "structure", "Expected a string, found an integer"),
    ],
)
def test_a_resource_type_r4_lacks_is_invalid(
    resource: dict[str, Any], code: str, diagnostics: str
) -> None:
    problem = error(resource)
    assert problem.kind is Kind.INVALID
    assert [(i.code, i.expression, i.diagnostics) for i in problem.issues] == [
        (code, ("resourceType",), diagnostics)
    ]


def test_a_non_object_is_invalid() -> None:
    problem = error([{"resourceType": "Patient"}])
    assert problem.kind is Kind.INVALID
    assert problem.issues[0].diagnostics == "Expected a resource (a JSON object), found an array"


def test_r4_only_type_is_validated_by_the_schema() -> None:
    problem = error({"resourceType": "MedicinalProduct", "name": [{"productName": "x"}], "x": 1})
    assert problem.kind is Kind.UNPROCESSABLE
    assert [i.expression for i in problem.issues] == [("MedicinalProduct.x",)]


# --- Resources inside resources --------------------------------------------------------------


def test_contained_resources_are_validated_against_their_own_type() -> None:
    resource = patient(
        contained=[
            {"resourceType": "Observation", "status": "bogus", "code": {"text": "x"}},
            {"resourceType": "SubscriptionTopic"},
            "not a resource",
            {"resourceType": "Patient", "birthDate": "2019-02-30"},
        ]
    )
    assert found(resource) == [
        (
            "value",
            "Patient.contained[0].status",
            (
                'Invalid code "bogus": expected one of registered, preliminary, final, amended, '
                "corrected, cancelled, entered-in-error, unknown"
            ),
        ),
        (
            "not-supported",
            "Patient.contained[1].resourceType",
            (
                "Resource type 'SubscriptionTopic' is from FHIR R4B/R5; this server implements R4 "
                "(4.0.1)"
            ),
        ),
        (
            "structure",
            "Patient.contained[2]",
            "Expected a resource (a JSON object), found a string",
        ),
        (
            "value",
            "Patient.contained[3].birthDate",
            'Invalid date value "2019-02-30": 2019-02 has no day 30',
        ),
    ]
    assert error(resource).kind is Kind.UNPROCESSABLE


def test_bundle_entries_are_validated_each_by_its_type() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": patient(gender="f")},
            {"resource": {"resourceType": "MedicinalProduct", "name": [{"productName": 5}]}},
            {"response": {"status": "400", "outcome": {"resourceType": "OperationOutcome"}}},
        ],
    }
    assert [(c, e) for c, e, _ in found(bundle)] == [
        ("value", "Bundle.entry[0].resource.gender"),
        ("structure", "Bundle.entry[1].resource.name[0].productName"),
        ("required", "Bundle.entry[2].response.outcome.issue"),
    ]
    # Each entry by the rules of its own type, in the types the models skip too.
    rules = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            # a required primitive may be given by its extensions only (`_productName`)
            {"resource": product(name=[{"_productName": {"id": "a"}}])},
            {"resource": product(name=[{"namePart": [{"part": "x"}]}])},
            {"resource": patient(birthDate="2019-02-30")},
        ],
    }
    assert [e for _, e, _ in found(rules, SCHEMA_ONLY)] == [
        "Bundle.entry[1].resource.name[0].namePart[0].type",
        "Bundle.entry[1].resource.name[0].productName",
        "Bundle.entry[2].resource.birthDate",
    ]


def test_parameters_resources_are_validated_at_any_depth() -> None:
    parameters = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "a", "part": [{"name": "b", "resource": patient(birthDate="2019-02-30")}]}
        ],
    }
    assert [e for _, e, _ in found(parameters)] == [
        "Parameters.parameter[0].part[0].resource.birthDate"
    ]


# --- Safety -------------------------------------------------------------------------------------


def test_diagnostics_do_not_echo_large_values() -> None:
    (issue,) = BOTH.issues(patient(gender="x" * 100_000))
    assert len(issue.diagnostics) < 120
    (issue,) = BOTH.issues(patient(name=[{"given": {"x": "y" * 100_000}}]))
    assert issue.diagnostics == "Expected an array, found an object"


def test_diagnostics_never_carry_internals() -> None:
    resource = observation(valueString="a", valueBoolean=True, component=[{"code": {}}])
    for validator in (BOTH, SCHEMA_ONLY):
        for issue in validator.issues(resource) + validator.issues(patient(birthDate="2019-02-30")):
            assert not re.search(r"Traceback|pydantic|errors\.pydantic|File \"", issue.diagnostics)


def test_issues_are_capped() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": patient(gender="f")} for _ in range(150)],
    }
    issues = BOTH.issues(bundle)
    assert len(issues) == MAX_ISSUES + 1
    assert issues[-1] == Issue("informational", "50 more issues not listed", "information")


@pytest.mark.parametrize(
    "resource",
    [
        patient(foo=1, contained=[patient(gender="f")]),
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {"resource": patient(birthDate="2019-02-30", contained=[patient()])},
                {
                    "response": {
                        "status": "200",
                        "outcome": {
                            "resourceType": "OperationOutcome",
                            "issue": [{"severity": "error", "code": "invalid"}],
                        },
                    }
                },
            ],
        },
        {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "a", "resource": patient(), "part": [{"name": "b", "resource": patient()}]}
            ],
        },
    ],
    ids=["invalid", "bundle", "parameters"],
)
def test_validation_never_changes_its_input(resource: dict[str, Any]) -> None:
    before = orjson.dumps(resource)
    BOTH.issues(resource)
    SCHEMA_ONLY.issues(resource)
    assert orjson.dumps(resource) == before


def test_module_validate_uses_both_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    validate(patient(name=[{"family": "Doe"}]))
    with pytest.raises(FhirError) as raised:
        validate(patient(birthDate="2019-02-30"))
    assert raised.value.kind is Kind.UNPROCESSABLE
    monkeypatch.setattr(validation, "_model_issues", fake_model_issues)
    with pytest.raises(FhirError) as raised:
        validate(patient())
    assert raised.value.issues[0].diagnostics == "model finding in Patient"
