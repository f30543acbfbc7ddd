"""What the server holds: our definitions (one copy, under terminology/, which the package
ships through its fhir_server/terminology link), ECLAIRE's byte for byte, and the R4 core
index rebuilt from the official definitions."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from fhir_server.model.errors import FhirError
from fhir_server.terminology_service import Catalogue, load_catalogue, membership
from fhir_server.terminology_service.catalogue import CORE_FILE, SOURCE_DIRS
from fhir_server.trials.referral import ANSWERS
from tests.conftest import SHARED
from tests.terminology.datagen import build

ROOT = Path(__file__).resolve().parents[2]
OURS = "https://oncotrials.example.org/fhir"


def test_shipped_core_index_is_the_rebuilt_one() -> None:
    assert CORE_FILE.read_bytes() == build(SHARED / "fhir-r4")


def test_one_source_of_truth_for_our_definitions() -> None:
    assert SOURCE_DIRS[0].resolve() == ROOT / "terminology"


def test_eclaire_definitions_are_byte_copies() -> None:
    copies = sorted((ROOT / "terminology" / "eclaire").glob("*-*.json"))
    assert len(copies) == 28
    for copy in copies:
        assert copy.read_bytes() == (SHARED / "eclaire" / copy.name).read_bytes(), copy.name


def _ours() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((ROOT / "terminology").glob("CodeSystem-*.json"))]


def _concepts(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for item in items for c in (item, *_concepts(item.get("concept", [])))]


def test_our_concepts_have_french_and_english_displays() -> None:
    for code_system in _ours():
        concepts = _concepts(code_system["concept"])
        assert code_system["count"] == len(concepts), code_system["id"]
        for concept in concepts:
            languages = {d["language"]: d["value"] for d in concept["designation"]}
            assert set(languages) == {"fr", "en"}, (code_system["id"], concept["code"])
            assert languages["en"] == concept["display"]


def test_referral_answers_value_set_is_what_investigators_may_answer() -> None:
    catalogue = load_catalogue()
    answers = catalogue.resource("ValueSet", f"{OURS}/ValueSet/referral-answer")
    assert answers is not None
    assert tuple(c["code"] for c in answers["compose"]["include"][0]["concept"]) == ANSWERS


def test_everything_held_is_found_by_url_and_id() -> None:
    catalogue = load_catalogue()
    assert catalogue.code_system(f"{OURS}/CodeSystem/cancer-type|1.0.0") is not None
    assert catalogue.code_system(f"{OURS}/CodeSystem/cancer-type", "2.0.0") is None
    assert catalogue.by_id("ValueSet", "administrative-gender") is not None
    assert len(catalogue.concept_maps()) >= 3
    assert load_catalogue() is catalogue  # indexed once per process


def test_first_definition_of_a_canonical_wins() -> None:
    first = {"resourceType": "CodeSystem", "url": "urn:x", "id": "a", "concept": [{"code": "1"}]}
    second = {**first, "id": "b", "concept": [{"code": "2"}]}
    catalogue = Catalogue([first, second])
    held = catalogue.code_system("urn:x")
    assert held is not None and list(held.concepts) == ["1"]


def test_every_core_value_set_computes_or_names_the_system_it_lacks() -> None:
    catalogue = load_catalogue()
    lacking = set()
    for url in catalogue.urls("ValueSet"):
        value_set = catalogue.resource("ValueSet", url)
        assert value_set is not None
        try:
            membership(catalogue, value_set)
        except FhirError as exc:
            assert exc.issues[0].code == "not-supported"
            found = re.search(r"(?:code system|ValueSet) (\S+?)[:,](?: |$)", exc.issues[0].diagnostics)
            assert found is not None, exc.issues[0].diagnostics
            lacking.add(found[1])
    assert {"http://snomed.info/sct", "http://loinc.org", "http://unitsofmeasure.org"} <= lacking
    assert not any(url.startswith(OURS) for url in lacking)


def test_servers_without_operator_code_systems_share_one_catalogue(tmp_path: Path) -> None:
    """Each server passes its own operator folder; without code systems there, they all get
    the one catalogue of the process (a cache keyed by the folder kept one per app made: the
    test suite ran out of memory)."""
    (tmp_path / "b").mkdir()
    first = load_catalogue(operator=tmp_path / "a")  # no such folder
    assert load_catalogue(operator=tmp_path / "b") is first  # an empty one
    assert load_catalogue() is first
