"""ValueSet/$expand (FHIR R4 valueset-operation-expand.html, valueset.html#expansion): French
displays, hierarchies (nested contains, is-a and descendent-of filters), inactive codes and
activeOnly, text filter, paging with count/offset, compose include/exclude sent inline, the
size limit (too-costly), bad input; GET and POST agree."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.app import create_app
from fhir_server.settings import Settings
from tests.conftest import authorized
from tests.terminology.conftest import (BIOMARKER, CANCER, HISTOLOGY, LOINC, OURS, both, get,
                                        outcome, post)

CANCER_VS = f"{OURS}/ValueSet/cancer-type"


def codes(expansion: dict[str, Any]) -> list[str]:
    """Every code of an expansion, depth first."""
    def walk(items: list[dict[str, Any]]) -> Iterator[str]:
        for item in items:
            yield item["code"]
            yield from walk(item.get("contains", []))
    return list(walk(expansion["expansion"].get("contains", [])))


def find(expansion: dict[str, Any], code: str) -> dict[str, Any]:
    def walk(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for item in items:
            yield item
            yield from walk(item.get("contains", []))
    return next(i for i in walk(expansion["expansion"]["contains"]) if i["code"] == code)


def test_french_displays(client: TestClient) -> None:
    expansion = both(client, "ValueSet/ecog-performance-status/$expand", displayLanguage="fr")
    assert expansion["url"] == f"{OURS}/ValueSet/ecog-performance-status"
    assert [c["display"] for c in expansion["expansion"]["contains"]][-1] == "Décédé"
    assert {"name": "displayLanguage", "valueCode": "fr"} in expansion["expansion"]["parameter"]
    english = both(client, "ValueSet/ecog-performance-status/$expand")
    assert english["expansion"]["contains"][-1]["display"] == "Dead"
    assert "designation" not in english["expansion"]["contains"][0]
    designations = both(client, "ValueSet/ecog-performance-status/$expand",
                        includeDesignations="true")["expansion"]["contains"][-1]["designation"]
    assert {"language": "fr", "value": "Décédé"} in designations


def test_hierarchy_nests_contains(client: TestClient) -> None:
    expansion = both(client, "ValueSet/$expand", url=CANCER_VS)
    top = expansion["expansion"]["contains"]
    assert [c["code"] for c in top] == ["solid-tumour", "haematological"]
    assert top[0]["abstract"] is True
    thoracic = find(expansion, "thoracic")
    assert [c["code"] for c in find(expansion, "lung")["contains"]] == ["nsclc", "sclc"]
    assert [c["code"] for c in thoracic["contains"]] == ["lung", "mesothelioma"]
    assert expansion["expansion"]["total"] == len(codes(expansion))
    flat = both(client, "ValueSet/$expand", url=CANCER_VS, excludeNested="true")
    assert all("contains" not in c for c in flat["expansion"]["contains"])
    assert [c["code"] for c in flat["expansion"]["contains"]] == codes(expansion)


def test_is_a_filters(client: TestClient) -> None:
    solid = both(client, "ValueSet/solid-tumour-type/$expand")
    assert "solid-tumour" not in codes(solid) and "lymphoma" not in codes(solid)
    assert {"nsclc", "breast", "kidney"} <= set(codes(solid))
    # With its root left out, the hierarchy starts below it.
    assert "thoracic" in [c["code"] for c in solid["expansion"]["contains"]]
    egfr = both(client, "ValueSet/egfr-alteration/$expand")  # filter gene = EGFR
    assert codes(egfr) == ["egfr-mutation", "egfr-exon19-deletion", "egfr-l858r", "egfr-t790m"]


def test_inactive_codes_marked_and_left_out_on_request(client: TestClient) -> None:
    histology = both(client, "ValueSet/histology/$expand")
    assert find(histology, "bronchioloalveolar")["inactive"] is True
    active = both(client, "ValueSet/histology/$expand", activeOnly="true")
    assert "bronchioloalveolar" not in codes(active) and "adenocarcinoma" in codes(active)
    assert active["expansion"]["total"] == histology["expansion"]["total"] - 1
    # compose.inactive = false: the value set itself leaves them out
    assert "lung-other" not in codes(both(client, "ValueSet/cancer-type/$expand"))


def test_text_filter_in_either_language_without_accents(client: TestClient) -> None:
    found = both(client, "ValueSet/cancer-type/$expand", filter="poumon", displayLanguage="fr")
    assert codes(found) == ["lung"]
    assert found["expansion"]["contains"][0]["display"] == "Cancer du poumon"
    assert codes(both(client, "ValueSet/cancer-type/$expand", filter="pancreas")) == ["pancreas"]
    assert codes(both(client, "ValueSet/cancer-type/$expand", filter="PANCRÉAS")) == ["pancreas"]
    none = both(client, "ValueSet/cancer-type/$expand", filter="zzz")
    assert none["expansion"]["total"] == 0 and "contains" not in none["expansion"]


def test_paging(client: TestClient) -> None:
    whole = both(client, "ValueSet/biomarker/$expand", excludeNested="true")
    every = [c["code"] for c in whole["expansion"]["contains"]]
    pages, offset = [], 0
    while offset < len(every):
        page = both(client, "ValueSet/biomarker/$expand", count="7", offset=str(offset))
        assert page["expansion"]["total"] == len(every) and page["expansion"]["offset"] == offset
        assert all("contains" not in c for c in page["expansion"]["contains"])
        pages += [c["code"] for c in page["expansion"]["contains"]]
        offset += 7
    assert pages == every
    past = both(client, "ValueSet/biomarker/$expand", count="7", offset="1000")
    assert "contains" not in past["expansion"] and past["expansion"]["total"] == len(every)
    assert both(client, "ValueSet/biomarker/$expand", count="0")["expansion"]["total"] == len(every)


def test_inline_value_set_with_include_and_exclude(client: TestClient) -> None:
    value_set = {"resourceType": "ValueSet", "status": "active", "compose": {
        "include": [{"system": CANCER, "filter": [{"property": "concept", "op": "is-a",
                                                   "value": "digestive"}]},
                    {"system": HISTOLOGY, "concept": [{"code": "melanoma"}]}],
        "exclude": [{"system": CANCER, "concept": [{"code": "liver"}, {"code": "digestive"}]}]}}
    response = post(client, "ValueSet/$expand", valueSet=value_set, excludeNested="true")
    assert response.status_code == 200
    assert [(c["system"], c["code"]) for c in response.json()["expansion"]["contains"]] == [
        (CANCER, "colorectal"), (CANCER, "pancreas"), (CANCER, "stomach"),
        (CANCER, "oesophagus"), (HISTOLOGY, "melanoma")]


def test_a_system_not_held_is_refused_not_skipped(client: TestClient) -> None:
    value_set = {"resourceType": "ValueSet", "status": "active", "compose": {
        "include": [{"system": CANCER}, {"system": LOINC, "concept": [{"code": "8867-4"}]}]}}
    issue = outcome(post(client, "ValueSet/$expand", valueSet=value_set), 422)
    assert issue["code"] == "not-supported" and LOINC in issue["diagnostics"]
    issue = outcome(get(client, "ValueSet/$expand",
                        url="http://hl7.org/fhir/ValueSet/observation-codes"), 422)
    assert "http://loinc.org" in issue["diagnostics"]


def test_a_whole_core_system_of_three_thousand_codes_paged(client: TestClient) -> None:
    dicom = {"resourceType": "ValueSet", "status": "active", "compose": {
        "include": [{"system": "http://dicom.nema.org/resources/ontology/DCM"}]}}
    first = post(client, "ValueSet/$expand", valueSet=dicom, count="1000").json()
    assert first["expansion"]["total"] == 3156 and len(first["expansion"]["contains"]) == 1000
    last = post(client, "ValueSet/$expand", valueSet=dicom, count="1000", offset="3000").json()
    assert len(last["expansion"]["contains"]) == 156


def test_value_set_a_client_stored(client: TestClient) -> None:
    stored = {"resourceType": "ValueSet", "id": "my-ecog", "status": "active",
              "url": "https://example.org/ValueSet/my-ecog",
              "compose": {"include": [{"system": f"{OURS}/CodeSystem/ecog-performance-status",
                                       "concept": [{"code": "0"}, {"code": "1"}]}]}}
    assert client.put("/fhir/ValueSet/my-ecog", json=stored,
                      headers={"Content-Type": "application/fhir+json"}).status_code == 201
    expansion = both(client, "ValueSet/my-ecog/$expand", displayLanguage="fr")
    assert [c["display"] for c in expansion["expansion"]["contains"]] == [
        "Pleinement actif, sans restriction", "Restreint pour les efforts soutenus, ambulatoire"]


def test_bad_input(client: TestClient) -> None:
    for count in ("-1", "abc", "1.5", "²"):
        assert outcome(get(client, "ValueSet/biomarker/$expand", count=count),
                       400)["expression"] == ["count"]
    assert outcome(post(client, "ValueSet/biomarker/$expand", count="-3"), 400)["expression"] == ["count"]
    assert outcome(get(client, "ValueSet/biomarker/$expand", filter=["a", "b"]),
                   400)["expression"] == ["filter"]
    assert outcome(get(client, "ValueSet/$expand"), 400)["code"] == "required"
    issue = outcome(get(client, "ValueSet/biomarker/$expand", url=f"{OURS}/ValueSet/biomarker"), 400)
    assert issue["expression"] == ["url"]
    assert outcome(get(client, "ValueSet/$expand", url=f"{OURS}/ValueSet/unknown"), 404)["code"] == "not-found"
    assert outcome(get(client, "ValueSet/unknown/$expand"), 404)["code"] == "not-found"
    assert outcome(get(client, "ValueSet/bad id!/$expand"), 400)["code"] == "value"
    assert outcome(get(client, "ValueSet/$expand", url=CANCER_VS, valueSet="x"),
                   400)["expression"] == ["valueSet"]


def test_bad_input_leaves_the_store_untouched(client: TestClient) -> None:
    def stored() -> int:
        return len(client.get("/fhir/_history?_count=1000").json().get("entry", []))

    before = stored()
    get(client, "ValueSet/$expand", url=CANCER_VS, count="-1")
    post(client, "ValueSet/$expand", valueSet={"resourceType": "ValueSet", "compose": {
        "include": [{"system": LOINC}]}})
    get(client, "CodeSystem/$lookup", system=CANCER, code="nope")
    assert stored() == before


@pytest.fixture
def small(settings: Settings) -> Iterator[TestClient]:
    """A server that computes expansions of 10 codes at most."""
    with authorized(TestClient(create_app(settings.model_copy(update={"max_expansion": 10})))) as c:
        yield c


def test_too_costly_above_the_configured_size(small: TestClient) -> None:
    issue = outcome(get(small, "ValueSet/$expand", url=CANCER_VS), 422)
    assert issue["code"] == "too-costly" and "10" in issue["diagnostics"]
    assert outcome(get(small, "ValueSet/$expand", url=CANCER_VS, count="5"), 422)["code"] == "too-costly"
    narrowed = both(small, "ValueSet/$expand", url=CANCER_VS, filter="lung")
    assert codes(narrowed) == ["lung", "nsclc", "sclc"]
    assert codes(both(small, "ValueSet/ecog-performance-status/$expand")) == [str(n) for n in range(6)]
