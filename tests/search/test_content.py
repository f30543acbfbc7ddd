"""`_content` (search/content.py): what is indexed of a resource, and how a value becomes
clauses (every term, alternatives by comma, phrases in quotes), for ResearchStudy only."""

from __future__ import annotations

import pytest

from fhir_server.search import extract, parse_query
from fhir_server.search.ast import Clause, StringPredicate
from fhir_server.search.content import MAX_CLAUSES, SEPARATOR, clauses

STUDY = {
    "resourceType": "ResearchStudy", "id": "s1", "status": "active",
    "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><b>Étude</b> ouverte</div>"},
    "title": "Cancer du SEIN  HER2+",
    "extension": [{"url": "http://hl7.org/fhir/5.0/StructureDefinition/extension-ResearchStudy.label",
                   "extension": [{"url": "value", "valueString": "Mélanome avancé"}]}],
    "condition": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "C50", "display": "Sein"}]}],
    "site": [{"reference": "Location/paris-1", "display": "Institut Curie"}],
}


def _content(resource: dict) -> list[str]:
    return [e.value for e in extract(resource) if e.param == "_content"]


def test_every_string_of_the_resource_is_indexed_once_normalized() -> None:
    [text] = _content(STUDY)
    parts = text.split(SEPARATOR)
    assert "cancer du sein her2+" in parts
    assert "melanome avance" in parts  # an extension's value, accents dropped
    assert "etude ouverte" in parts  # the narrative without its tags
    assert "institut curie" in parts and "c50" in parts
    assert parts.count("sein") == 1
    assert not any("http" in p or "location/" in p for p in parts)  # structural URIs left out


def test_only_types_with_a_content_parameter_index_it() -> None:
    assert _content({"resourceType": "Patient", "id": "p", "name": [{"family": "Sein"}]}) == []


def _predicates(clause: Clause) -> set[str]:
    assert all(isinstance(p, StringPredicate) and p.mode == "contains" for p in clause.any_of)
    return {p.value for p in clause.any_of}  # type: ignore[union-attr]


def test_terms_are_anded_alternatives_ored_in_conjunctive_form() -> None:
    assert [_predicates(c) for c in clauses("Sein HER2")] == [{"sein"}, {"her2"}]
    assert [_predicates(c) for c in clauses("sein,Mélanome")] == [{"sein", "melanome"}]
    # (sein AND her2) OR melanome == (sein OR melanome) AND (her2 OR melanome)
    assert [_predicates(c) for c in clauses("sein her2,melanome")] == [{"sein", "melanome"}, {"her2", "melanome"}]
    assert [_predicates(c) for c in clauses('"cancer du  sein" her2')] == [{"cancer du sein"}, {"her2"}]


@pytest.mark.parametrize("value", ["", "  ", "sein,", '""'])
def test_a_value_without_terms_is_invalid(value: str) -> None:
    with pytest.raises(ValueError):
        clauses(value)


def test_a_value_needing_too_many_clauses_is_refused() -> None:
    value = ",".join(" ".join(f"w{i}{j}" for j in range(3)) for i in range(5))  # 3^5 clauses
    assert 3 ** 5 > MAX_CLAUSES
    with pytest.raises(ValueError, match="limit"):
        clauses(value)


def test_parsing() -> None:
    query, issues = parse_query("ResearchStudy", [("_content", "sein"), ("_content", "her2")])
    assert issues == [] and len(query.clauses) == 2
    _, issues = parse_query("ResearchStudy", [("_content:exact", "sein")])
    assert [i.code for i in issues] == ["invalid"]
    _, issues = parse_query("ResearchStudy", [("_content", ",")])
    assert [i.code for i in issues] == ["invalid"]
    _, issues = parse_query("Patient", [("_content", "sein")])  # not indexed there
    assert [i.code for i in issues] == ["not-supported"]
