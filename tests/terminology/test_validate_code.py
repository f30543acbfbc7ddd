"""CodeSystem/$validate-code and ValueSet/$validate-code (FHIR R4
codesystem-operation-validate-code.html, valueset-operation-validate-code.html): membership,
displays in either language, inactive and abstract codes, hierarchies (is-a value sets),
systems the server does not hold (never a silent pass), bad input; GET and POST agree."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.terminology.conftest import (CANCER, ECOG, LOINC, OURS, OUTCOME, both, get, outcome,
                                        post, value)

SOLID = f"{OURS}/ValueSet/solid-tumour-type"
CANCER_VS = f"{OURS}/ValueSet/cancer-type"


def test_code_of_a_system(client: TestClient) -> None:
    answer = both(client, "CodeSystem/$validate-code", url=ECOG, code="2")
    assert value(answer, "result") is True and value(answer, "message") is None
    assert value(answer, "display").startswith("Ambulatory")
    wrong = both(client, "CodeSystem/$validate-code", url=ECOG, code="6")
    assert value(wrong, "result") is False and "'6'" in value(wrong, "message")


def test_display_in_french_or_english_is_right_another_is_wrong(client: TestClient) -> None:
    for display in ("Décédé", "Dead"):
        answer = both(client, "CodeSystem/$validate-code", url=ECOG, code="5", display=display)
        assert value(answer, "result") is True
    wrong = both(client, "CodeSystem/$validate-code", url=ECOG, code="5", display="Mort",
                 displayLanguage="fr")
    assert value(wrong, "result") is False
    assert "'Mort'" in value(wrong, "message") and value(wrong, "display") == "Décédé"


def test_inactive_code_is_valid_with_a_message(client: TestClient) -> None:
    answer = both(client, "CodeSystem/$validate-code", url=CANCER, code="lung-other")
    assert value(answer, "result") is True and "inactive" in value(answer, "message")


def test_abstract_code_only_where_abstract_is_allowed(client: TestClient) -> None:
    refused = both(client, "CodeSystem/$validate-code", url=CANCER, code="solid-tumour")
    assert value(refused, "result") is False and "abstract" in value(refused, "message")
    allowed = both(client, "CodeSystem/$validate-code", url=CANCER, code="solid-tumour",
                   abstract="true")
    assert value(allowed, "result") is True


def test_instance_level_and_a_coding_of_another_system(client: TestClient) -> None:
    answer = both(client, "CodeSystem/ecog-performance-status/$validate-code", code="1")
    assert value(answer, "result") is True
    other = post(client, "CodeSystem/ecog-performance-status/$validate-code",
                 coding={"system": CANCER, "code": "lung"}).json()
    assert value(other, "result") is False and CANCER in value(other, "message")
    issue = outcome(get(client, "CodeSystem/ecog-performance-status/$validate-code", code="1",
                        url=ECOG), 400)
    assert issue["expression"] == ["url"]


def test_system_not_held_is_never_valid(client: TestClient) -> None:
    answer = both(client, "CodeSystem/$validate-code", url=LOINC, code="8867-4")
    assert value(answer, "result") is False
    assert "Unable to check" in value(answer, "message") and LOINC in value(answer, "message")
    in_set = both(client, "ValueSet/$validate-code", code="8867-4", system=LOINC,
                  url="http://hl7.org/fhir/ValueSet/observation-codes")
    assert value(in_set, "result") is False and "Unable to check" in value(in_set, "message")


def test_value_set_by_hierarchy(client: TestClient) -> None:
    inside = both(client, "ValueSet/$validate-code", url=SOLID, system=CANCER, code="nsclc")
    assert value(inside, "result") is True
    outside = both(client, "ValueSet/$validate-code", url=SOLID, system=CANCER, code="lymphoma")
    assert value(outside, "result") is False and SOLID in value(outside, "message")
    # descendent-of leaves the parent itself out
    root = both(client, "ValueSet/$validate-code", url=SOLID, system=CANCER, code="solid-tumour",
                abstract="true")
    assert value(root, "result") is False


def test_value_set_leaving_inactive_codes_out(client: TestClient) -> None:
    answer = both(client, "ValueSet/$validate-code", url=CANCER_VS, system=CANCER,
                  code="lung-other")
    assert value(answer, "result") is False and "inactive" in value(answer, "message")


def test_value_set_by_id_and_concept_list(client: TestClient) -> None:
    answer = both(client, "ValueSet/referral-answer/$validate-code", system=OUTCOME,
                  code="included", display="Inclus")
    assert value(answer, "result") is True
    server_only = both(client, "ValueSet/referral-answer/$validate-code", system=OUTCOME,
                       code="withdrawn")
    assert value(server_only, "result") is False


def test_codeable_concept_is_valid_when_one_coding_is(client: TestClient) -> None:
    concept = {"coding": [{"system": LOINC, "code": "LA9622-7"}, {"system": ECOG, "code": "0"}]}
    answer = post(client, "ValueSet/ecog-performance-status/$validate-code",
                  codeableConcept=concept).json()
    assert value(answer, "result") is True
    concept["coding"] = concept["coding"][:1]
    alone = post(client, "ValueSet/ecog-performance-status/$validate-code",
                 codeableConcept=concept).json()
    assert value(alone, "result") is False and "Unable to check" in value(alone, "message")


def test_core_value_set(client: TestClient) -> None:
    url = "http://hl7.org/fhir/ValueSet/administrative-gender"
    system = "http://hl7.org/fhir/administrative-gender"
    assert value(both(client, "ValueSet/$validate-code", url=url, system=system,
                      code="female"), "result") is True
    assert value(both(client, "ValueSet/$validate-code", url=url, system=system,
                      code="F"), "result") is False


def test_bad_input(client: TestClient) -> None:
    assert outcome(get(client, "ValueSet/$validate-code", system=CANCER, code="lung"),
                   400)["expression"] == ["url"]
    assert outcome(get(client, "ValueSet/solid-tumour-type/$validate-code", url=SOLID,
                       system=CANCER, code="lung"), 400)["expression"] == ["url"]
    assert outcome(get(client, "ValueSet/$validate-code", url=SOLID, code="lung"),
                   400)["expression"] == ["system"]
    assert outcome(get(client, "ValueSet/$validate-code", url=SOLID, system=CANCER),
                   400)["expression"] == ["code"]
    assert outcome(get(client, "ValueSet/$validate-code", url=SOLID, system=CANCER, code="lung",
                       abstract="yes"), 400)["expression"] == ["abstract"]
    assert outcome(get(client, "CodeSystem/$validate-code", code="lung"), 400)["expression"] == ["url"]


def test_unknown_value_set_is_404(client: TestClient) -> None:
    issue = outcome(get(client, "ValueSet/$validate-code", url=f"{OURS}/ValueSet/nope",
                        system=CANCER, code="lung"), 404)
    assert issue["code"] == "not-found"
    outcome(get(client, "ValueSet/nope/$validate-code", system=CANCER, code="lung"), 404)
    outcome(get(client, "ValueSet/$validate-code", url=SOLID, valueSetVersion="9",
                system=CANCER, code="lung"), 404)


def test_code_system_a_client_stored(client: TestClient) -> None:
    stored = {"resourceType": "CodeSystem", "id": "site-codes", "url": "https://example.org/cs",
              "status": "active", "content": "complete", "concept": [{"code": "a", "display": "A"}]}
    assert client.put("/fhir/CodeSystem/site-codes", json=stored,
                      headers={"Content-Type": "application/fhir+json"}).status_code == 201
    answer = both(client, "CodeSystem/site-codes/$validate-code", code="a", display="A")
    assert value(answer, "result") is True
    assert value(both(client, "CodeSystem/site-codes/$validate-code", code="b"), "result") is False
    assert outcome(get(client, "CodeSystem/missing/$validate-code", code="a"), 404)
