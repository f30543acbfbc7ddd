"""CodeSystem/$lookup (FHIR R4 codesystem-operation-lookup.html): displays in French and
English, designations, hierarchy properties, inactive codes, unknown codes and systems, bad
input; GET and POST agree."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.terminology.conftest import (CANCER, ECOG, LOINC, both, get, outcome, post,
                                        properties, value)


def test_french_display_and_both_designations(client: TestClient) -> None:
    answer = both(client, "CodeSystem/$lookup", system=CANCER, code="lung", displayLanguage="fr")
    assert value(answer, "name") == "CancerType"
    assert value(answer, "version") == "1.0.0"
    assert value(answer, "display") == "Cancer du poumon"
    designations = [{part["name"]: part for part in p["part"]}
                    for p in answer["parameter"] if p["name"] == "designation"]
    assert {(d["language"]["valueCode"], d["value"]["valueString"]) for d in designations} == {
        ("fr", "Cancer du poumon"), ("en", "Lung cancer")}
    english = both(client, "CodeSystem/$lookup", system=CANCER, code="lung", displayLanguage="en")
    assert value(english, "display") == "Lung cancer"
    assert value(both(client, "CodeSystem/$lookup", system=ECOG, code="5",
                      displayLanguage="fr-FR"), "display") == "Décédé"


def test_hierarchy_as_parent_and_child_properties(client: TestClient) -> None:
    lung = properties(both(client, "CodeSystem/$lookup", system=CANCER, code="lung"))
    assert ("parent", "thoracic") in lung
    assert [v for c, v in lung if c == "child"] == ["nsclc", "sclc", "lung-other"]
    only_parent = both(client, "CodeSystem/$lookup", system=CANCER, code="nsclc", property="parent")
    assert properties(only_parent) == [("parent", "lung")]


def test_inactive_and_abstract_codes_say_so(client: TestClient) -> None:
    retired = properties(both(client, "CodeSystem/$lookup", system=CANCER, code="lung-other"))
    assert ("inactive", True) in retired
    assert ("inactive", False) in properties(both(client, "CodeSystem/$lookup", system=CANCER,
                                                  code="nsclc"))
    grouping = properties(both(client, "CodeSystem/$lookup", system=CANCER, code="solid-tumour"))
    assert ("notSelectable", True) in grouping


def test_core_system_hierarchy_from_child_properties(client: TestClient) -> None:
    answer = both(client, "CodeSystem/$lookup", code="AMB",
                  system="http://terminology.hl7.org/CodeSystem/v3-ActCode")
    assert value(answer, "display") == "ambulatory"
    assert ("parent", "_ActEncounterCode") in properties(answer)


def test_coding_form_by_post(client: TestClient) -> None:
    answer = post(client, "CodeSystem/$lookup", coding={"system": ECOG, "code": "0"},
                  displayLanguage="fr")
    assert answer.status_code == 200
    assert value(answer.json(), "display") == "Pleinement actif, sans restriction"


def test_unknown_code_is_404(client: TestClient) -> None:
    for call in (get, post):
        issue = outcome(call(client, "CodeSystem/$lookup", system=CANCER, code="lungs"), 404)
        assert issue["code"] == "not-found" and "'lungs'" in issue["diagnostics"]


def test_system_not_held_is_404_naming_it(client: TestClient) -> None:
    issue = outcome(get(client, "CodeSystem/$lookup", system=LOINC, code="8867-4"), 404)
    assert LOINC in issue["diagnostics"] and "not hold" in issue["diagnostics"]
    issue = outcome(get(client, "CodeSystem/$lookup", system=CANCER, code="lung", version="9"), 404)
    assert "version 9" in issue["diagnostics"]


def test_bad_input_is_400_naming_the_parameter(client: TestClient) -> None:
    cases = [
        ({"system": CANCER}, "code"),  # no code
        ({"code": "lung"}, "system"),  # a code without its system
        ({"system": CANCER, "code": ["lung", "breast"]}, "code"),  # twice
        ({"system": CANCER, "code": "lung", "colour": "red"}, "colour"),  # not a parameter
        ({"system": CANCER, "code": ""}, "code"),  # empty
    ]
    for params, parameter in cases:
        for call in (get, post):
            issue = outcome(call(client, "CodeSystem/$lookup", **params), 400)
            assert issue["expression"] == [parameter], (params, issue)
    both_forms = post(client, "CodeSystem/$lookup", system=CANCER, code="lung",
                      coding={"system": CANCER, "code": "lung"})
    assert outcome(both_forms, 400)["expression"] == ["coding"]
    systemless = post(client, "CodeSystem/$lookup", coding={"code": "lung"})
    assert outcome(systemless, 400)["expression"] == ["coding"]
    # A Coding cannot be written in a URL.
    assert outcome(get(client, "CodeSystem/$lookup", coding="lung"), 400)["expression"] == ["coding"]


def test_a_body_that_is_not_parameters_is_400(client: TestClient) -> None:
    response = client.post("/fhir/CodeSystem/$lookup", json={"resourceType": "Patient"},
                           headers={"Content-Type": "application/fhir+json"})
    assert outcome(response, 400)["expression"] == ["resourceType"]
    nameless = client.post("/fhir/CodeSystem/$lookup", json={
        "resourceType": "Parameters", "parameter": [{"valueCode": "x"}]},
        headers={"Content-Type": "application/fhir+json"})
    assert outcome(nameless, 400)["code"] == "invalid"


def test_lookup_is_type_level_and_other_methods_are_405(client: TestClient) -> None:
    issue = outcome(get(client, "CodeSystem/cancer-type/$lookup", code="lung"), 400)
    assert "CodeSystem/$lookup" in issue["diagnostics"]
    for method in ("PUT", "DELETE"):
        response = client.request(method, "/fhir/CodeSystem/$lookup")
        assert response.status_code == 405 and response.headers["Allow"] == "GET, HEAD, POST"
        assert client.request(method, "/fhir/ValueSet/x/$expand").status_code == 405
