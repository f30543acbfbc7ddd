"""Invariants as compiled FHIRPath (model/invariants.py), as the profile validator runs them."""

from __future__ import annotations

from typing import Any

import pytest
from fhirpathpy.engine.nodes import ResourceNode

from fhir_server.model import invariants
from fhir_server.model.invariants import Invariant

PER_1 = Invariant("per-1", "error", "If present, start SHALL have a lower value than end",
                  "start.hasValue().not() or end.hasValue().not() or (start <= end)")
GRP_1 = Invariant("grp-1", "error", 'Can only have members if group is "actual"',
                  "member.empty() or (actual = true)")
ELE_1 = Invariant("ele-1", "error", "All FHIR elements must have a @value or children",
                  "hasValue() or (children().count() > id.count())")
EXT_1 = Invariant("ext-1", "error", "Must have either extensions or value[x], not both",
                  "extension.exists() != value.exists()")
REF_1 = Invariant("ref-1", "error", "SHALL have a contained resource if a local reference is provided",
                  "reference.startsWith('#').not() or (reference.substring(1).trace('url') in "
                  "%rootResource.contained.id.trace('ids'))")


def found(invariant: Invariant, value: Any, resource: dict[str, Any] | None = None,
          type_: str = "") -> list[tuple[str, str]]:
    return [(i.severity, i.code) for i in invariants.check((invariant,), value, resource or {}, "X", type_)]


@pytest.mark.parametrize("period, ok", [
    ({"start": "2020-01-01", "end": "2021-01-01"}, True),
    ({"start": "2021-01-01", "end": "2020-01-01"}, False),
    ({"start": "2021-01-01"}, True),
    ({"end": "2020-01-01"}, True),
])
def test_per_1_compares_the_period_bounds(period: dict[str, str], ok: bool) -> None:
    assert found(PER_1, period, type_="Period") == ([] if ok else [("error", "invariant")])


def test_grp_1_members_only_in_an_actual_group() -> None:
    assert found(GRP_1, {"actual": False, "member": [{"entity": {"reference": "Patient/p"}}]}) == [
        ("error", "invariant")]
    assert found(GRP_1, {"actual": True, "member": [{"entity": {"reference": "Patient/p"}}]}) == []
    assert found(GRP_1, {"actual": False}) == []


@pytest.mark.parametrize("value, ok", [
    ("text", True), (0, True), (False, True), ({"text": "a"}, True), ({"id": "a"}, False),
    ({"id": "a", "extension": [{"url": "u", "valueString": "v"}]}, True),
])
def test_ele_1_matches_its_fhirpath(value: Any, ok: bool) -> None:
    assert found(ELE_1, value) == ([] if ok else [("error", "invariant")])
    # the native evaluation agrees with fhirpathpy's on the same expression
    typed = ResourceNode.create_node(value, "CodeableConcept" if isinstance(value, dict) else "string")
    compiled = invariants._compiled("hasValue() or (children().count() > id.count())")
    assert (compiled(typed, {}) == [True]) == ok


@pytest.mark.parametrize("value, ok", [
    ({"url": "u", "valueString": "v"}, True), ({"url": "u", "extension": [{"url": "a", "valueCode": "b"}]}, True),
    ({"url": "u"}, False), ({"url": "u", "valueString": "v", "extension": [{"url": "a", "valueCode": "b"}]}, False),
])
def test_ext_1_matches_its_fhirpath(value: dict[str, Any], ok: bool) -> None:
    assert found(EXT_1, value) == ([] if ok else [("error", "invariant")])
    compiled = invariants._compiled("extension.exists() != value.exists()")
    assert (compiled(ResourceNode.create_node(value, "Extension"), {}) == [True]) == ok


def test_ref_1_reads_the_root_resource_and_trace_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    resource = {"resourceType": "Observation", "contained": [{"resourceType": "Patient", "id": "p"}]}
    assert found(REF_1, {"reference": "#p"}, resource) == []
    assert found(REF_1, {"reference": "#q"}, resource) == [("error", "invariant")]
    assert capsys.readouterr().out == ""


def test_a_warning_invariant_and_a_best_practice_never_refuse() -> None:
    warning = Invariant("x-1", "warning", "should", "name.exists()")
    practice = Invariant("dom-6", "error", "narrative", "text.exists()", best_practice=True)
    assert found(warning, {"id": "a"}, type_="Patient") == [("warning", "invariant")]
    [issue] = invariants.check((practice,), {"id": "a"}, {}, "X", "Patient")
    assert issue.severity == "warning" and "(best practice)" in issue.diagnostics


def test_what_fhirpathpy_cannot_evaluate_is_a_warning_naming_the_invariant() -> None:
    unknown = Invariant("x-2", "error", "uses a function fhirpathpy lacks", "name.noSuchFunction()")
    [issue] = invariants.check((unknown,), {"name": "a"}, {}, "X")
    assert (issue.severity, issue.code) == ("warning", "not-supported")
    assert "x-2" in issue.diagnostics


def test_every_invariant_of_the_profiles_we_hold_compiles_and_runs() -> None:
    from fhir_server.model import snapshot
    seen: set[str] = set()
    for definition in snapshot.definitions().values():
        elements = [*definition.children.values(), *definition.slices.values()]
        for element in (e for group in elements for e in group):
            for invariant in element.invariants:
                if invariant.expression in seen:
                    continue
                seen.add(invariant.expression)
                issues = list(invariants.check((invariant,), {}, {}, "X", element.path))
                assert all(i.code != "not-supported" for i in issues), (invariant.key, issues)
    assert len(seen) >= 5


CONTAINED = {"resourceType": "Observation", "contained": [{"resourceType": "Patient", "id": "p"}],
             "subject": {"reference": "#p"}}
NATIVE_CASES = [
    ("Reference", {"reference": "#p"}, CONTAINED), ("Reference", {"reference": "#q"}, CONTAINED),
    ("Reference", {"reference": "Patient/p"}, CONTAINED), ("Reference", {"display": "x"}, CONTAINED),
    ("Reference", {"reference": "#p"}, {"resourceType": "Observation"}),
    ("ContactPoint", {"value": "0102"}, {}), ("ContactPoint", {"value": "0102", "system": "phone"}, {}),
    ("ContactPoint", {"system": "phone"}, {}),
    ("Observation", {"resourceType": "Observation", "status": "final"}, {}),
    ("Observation", {"resourceType": "Observation", "contained": [
        {"resourceType": "Patient", "id": "p", "meta": {"versionId": "1"}}]}, {}),
    # dom-6 and grp-1 (evaluated in Python for catalogue imports)
    ("Observation", {"resourceType": "Observation", "text": {"status": "generated"}}, {}),
    ("Observation", {"resourceType": "Observation", "text": {"status": "generated", "div": "<div/>"}}, {}),
    *(("Group", {"resourceType": "Group", "type": "person", **extra}, {}) for extra in (
        {}, {"actual": False}, {"member": [{"entity": {"reference": "Patient/p"}}]},
        {"member": [{"entity": {"reference": "Patient/p"}}], "actual": False},
        {"member": [{"entity": {"reference": "Patient/p"}}], "actual": True})),
]


@pytest.mark.parametrize("type_, value, root", NATIVE_CASES)
def test_the_invariants_evaluated_in_python_agree_with_fhirpath(type_: str, value: Any, root: dict[str, Any]) -> None:
    for expression, native in invariants._NATIVE.items():
        answer = native(value, root or value)
        if answer is None:
            continue  # FHIRPath decides these
        typed = ResourceNode.create_node(value, type_)
        context = {"resource": root or value, "rootResource": root or value}
        try:
            fhirpath = invariants._compiled(expression)(typed, context) != [False]
        except Exception:
            continue  # the expression does not apply to this type (fhirpathpy's children())
        assert answer == fhirpath, (expression[:40], value)
