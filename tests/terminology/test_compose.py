"""The codes of a ValueSet from its compose (FHIR R4 valueset.html#compositions, the filter
operators of codesystem.html#filters), and CodeSystem hierarchies from nesting and from the
parent/child properties, on small systems written here."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.model.errors import FhirError
from fhir_server.terminology_service import Catalogue, check_in_value_set, membership
from fhir_server.terminology_service.compose import MAX_PARTS

SYSTEM = "urn:test:colours"
# warm > red > crimson, warm > orange; cool > blue (blue's parent given by property);
# grey is retired; code case does not matter in this system.
COLOURS = {
    "resourceType": "CodeSystem", "url": SYSTEM, "version": "1", "caseSensitive": False,
    "concept": [
        {"code": "warm", "concept": [
            {"code": "red", "property": [{"code": "hex", "valueString": "f00"}], "concept": [
                {"code": "crimson", "property": [{"code": "hex", "valueString": "d14"}]}]},
            {"code": "orange"}]},
        {"code": "cool", "property": [{"code": "notSelectable", "valueBoolean": True}]},
        {"code": "blue", "property": [{"code": "parent", "valueCode": "cool"},
                                      {"code": "hex", "valueString": "00f"}]},
        {"code": "grey", "property": [{"code": "status", "valueCode": "retired"}]},
    ],
}


def codes(compose: dict[str, Any], *more: dict[str, Any]) -> list[str]:
    catalogue = Catalogue([COLOURS, *more])
    value_set = {"resourceType": "ValueSet", "url": "urn:test:vs", "compose": compose}
    return [code for _, code in membership(catalogue, value_set)]


def only(*filters: tuple[str, str, str]) -> dict[str, Any]:
    return {"include": [{"system": SYSTEM, "filter": [
        {"property": p, "op": op, "value": v} for p, op, v in filters]}]}


def test_whole_system_depth_first() -> None:
    assert codes({"include": [{"system": SYSTEM}]}) == [
        "warm", "red", "crimson", "orange", "cool", "blue", "grey"]
    assert codes({"inactive": False, "include": [{"system": SYSTEM}]})[-1] == "blue"


@pytest.mark.parametrize(("filters", "expected"), [
    ((("concept", "is-a", "warm"),), ["warm", "red", "crimson", "orange"]),
    ((("concept", "descendent-of", "warm"),), ["red", "crimson", "orange"]),
    ((("concept", "is-a", "cool"),), ["cool", "blue"]),  # parent given by property
    ((("concept", "is-not-a", "warm"),), ["cool", "blue", "grey"]),
    ((("concept", "generalizes", "crimson"),), ["warm", "red", "crimson"]),
    ((("hex", "=", "f00"),), ["red"]),
    ((("hex", "in", "f00, 00f"),), ["red", "blue"]),
    ((("hex", "not-in", "f00,00f"),), ["warm", "crimson", "orange", "cool", "grey"]),
    ((("hex", "regex", "[0-9a-f]0[0-9a-f]"),), ["red", "blue"]),
    ((("hex", "exists", "false"),), ["warm", "orange", "cool", "grey"]),
    ((("notSelectable", "=", "true"),), ["cool"]),
    ((("parent", "=", "red"),), ["crimson"]),
    ((("concept", "is-a", "WARM"), ("hex", "exists", "true")), ["red", "crimson"]),  # ANDed
])
def test_filters(filters: tuple[tuple[str, str, str], ...], expected: list[str]) -> None:
    assert codes(only(*filters)) == expected


def test_concept_lists_exclude_and_case_insensitive_codes() -> None:
    compose = {"include": [{"system": SYSTEM, "concept": [{"code": "Blue"}, {"code": "red"}]}],
               "exclude": [{"system": SYSTEM, "concept": [{"code": "RED"}]}]}
    assert codes(compose) == ["blue"]


def test_imported_value_sets_intersect() -> None:
    warm = {"resourceType": "ValueSet", "url": "urn:test:warm",
            "compose": only(("concept", "is-a", "warm"))}
    coloured = {"resourceType": "ValueSet", "url": "urn:test:coloured",
                "compose": only(("hex", "exists", "true"))}
    assert codes({"include": [{"valueSet": ["urn:test:warm", "urn:test:coloured"]}]},
                 warm, coloured) == ["red", "crimson"]
    assert codes({"include": [{"system": SYSTEM, "valueSet": ["urn:test:coloured"],
                               "filter": [{"property": "concept", "op": "is-a", "value": "cool"}]}]},
                 coloured) == ["blue"]


@pytest.mark.parametrize("compose", [
    only(("concept", "is-a", "purple")),  # not a concept
    only(("concept", "sounds-like", "red")),  # not an operator
    only(("hex", "regex", "[")),  # not a regular expression
    only(("hex", "regex", "(a+)+$")),  # exponential backtracking
    only(("hex", "regex", "(x|y*){2,}")),
    only(("hex", "regex", "a" * 201)),
    {"include": [{"system": SYSTEM, "concept": [{"code": "purple"}]}]},
    {"include": [{"system": "http://snomed.info/sct"}]},
    {"include": [{"valueSet": ["urn:test:missing"]}]},
    {"include": [{"concept": [{"code": "red"}]}]},  # neither system nor value set
])
def test_what_cannot_be_computed_is_refused(compose: dict[str, Any]) -> None:
    with pytest.raises(FhirError) as raised:
        codes(compose)
    assert raised.value.issues[0].code == "not-supported"


def test_a_compose_of_too_many_parts_is_too_costly() -> None:
    with pytest.raises(FhirError) as raised:
        codes({"include": [{"system": SYSTEM}] * (MAX_PARTS + 1)})
    assert raised.value.issues[0].code == "too-costly"
    assert len(codes({"include": [{"system": SYSTEM}] * MAX_PARTS})) == 7


def test_a_cycle_of_imports_is_refused() -> None:
    loop = {"resourceType": "ValueSet", "url": "urn:test:loop",
            "compose": {"include": [{"valueSet": ["urn:test:loop"]}]}}
    with pytest.raises(FhirError):
        codes({"include": [{"valueSet": ["urn:test:loop"]}]}, loop)


def test_a_stored_expansion_without_compose() -> None:
    catalogue = Catalogue([COLOURS])
    value_set = {"resourceType": "ValueSet", "url": "urn:test:expanded", "expansion": {
        "contains": [{"system": SYSTEM, "code": "red", "contains": [
            {"system": "http://loinc.org", "code": "1-8", "display": "x"}]}]}}
    found = membership(catalogue, value_set)
    assert list(found) == [(SYSTEM, "red"), ("http://loinc.org", "1-8")]
    assert found[(SYSTEM, "red")].concept is not None
    assert found[("http://loinc.org", "1-8")].concept is None


def test_a_binding_check_says_when_it_could_not_tell() -> None:
    catalogue = Catalogue([COLOURS])
    warm = {"resourceType": "ValueSet", "url": "urn:test:warm",
            "compose": only(("concept", "is-a", "warm"))}
    assert check_in_value_set(catalogue, warm, {"system": SYSTEM, "code": "red"}).result
    outside = check_in_value_set(catalogue, warm, {"system": SYSTEM, "code": "blue"})
    assert not outside.result and outside.checked
    foreign = check_in_value_set(catalogue, warm, {"system": "http://loinc.org", "code": "1-8"})
    assert not foreign.result and not foreign.checked
    snomed = {"resourceType": "ValueSet", "compose": {"include": [{"system": "http://snomed.info/sct"}]}}
    unknowable = check_in_value_set(catalogue, snomed, {"system": SYSTEM, "code": "red"})
    assert not unknowable.result and not unknowable.checked
