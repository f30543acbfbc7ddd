"""`GET [base]/ResearchStudy?_content=...` over HTTP on each store (search/content.py): text
anywhere in the study, extensions and narrative included, as the ECLAIRE IG's flux 2 allows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.http.helpers import send
from tests.trials.conftest import served

LABEL = "http://hl7.org/fhir/5.0/StructureDefinition/extension-ResearchStudy.label"
STUDIES = [
    {"resourceType": "ResearchStudy", "id": "breast", "status": "active",
     "title": "Cancer du sein HER2+ métastatique", "description": "Essai de phase II, triple négatif exclu."},
    {"resourceType": "ResearchStudy", "id": "skin", "status": "active", "title": "Study 2",
     "extension": [{"url": LABEL, "extension": [{"url": "value", "valueString": "Mélanome avancé"}]}]},
    {"resourceType": "ResearchStudy", "id": "kidney", "status": "active", "title": "Study 3",
     "text": {"status": "generated",
              "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Carcinome <b>rénal</b> à cellules claires</div>"}},
]


@pytest.fixture(scope="module", params=["sqlite", "mongodb-double"])
def client(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           signing_keys: bytes) -> Iterator[TestClient]:
    with served(request.param, tmp_path_factory.mktemp("content"), signing_keys) as found:
        for study in STUDIES:
            assert send(found, "PUT", f"/fhir/ResearchStudy/{study['id']}", study).status_code == 201
        yield found


def _ids(client: TestClient, value: str) -> list[str]:
    response = client.get("/fhir/ResearchStudy", params={"_content": value, "_sort": "_id"})
    assert response.status_code == 200, response.text
    bundle: dict[str, Any] = response.json()
    assert not [e for e in bundle.get("entry", []) if e["search"]["mode"] == "outcome"]
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


@pytest.mark.parametrize(("value", "found"), [
    ("sein", ["breast"]),
    ("SEIN metastatique", ["breast"]),  # every term, case and accents aside
    ("sein melanome", []),  # both terms in one study: none has both
    ("melanome", ["skin"]),  # an extension's value
    ("renal", ["kidney"]),  # the narrative
    ('"carcinome renal"', ["kidney"]),  # a phrase, across a tag
    ('"renal carcinome"', []),
    ("sein,melanome", ["breast", "skin"]),
    ("sein phase,renal", ["breast", "kidney"]),
    ("carcin", ["kidney"]),  # inside a word
    ("hl7", []),  # an extension's URL is structure, not content
])
def test_content_finds_text_anywhere_in_the_study(client: TestClient, value: str, found: list[str]) -> None:
    assert _ids(client, value) == found


def test_an_update_is_searched_as_it_now_reads(client: TestClient) -> None:
    changed = {**{k: v for k, v in STUDIES[1].items() if k != "extension"}, "title": "Sarcome"}
    assert send(client, "PUT", "/fhir/ResearchStudy/skin", changed).status_code == 200
    assert _ids(client, "melanome") == []
    assert _ids(client, "sarcome") == ["skin"]


def test_an_invalid_value_is_reported_and_strict_handling_refuses_it(client: TestClient) -> None:
    response = client.get("/fhir/ResearchStudy", params={"_content": ","}, headers={"Prefer": "handling=strict"})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["_content"]
