"""Protected parameters over HTTP, on both stores (docs/blind-indexes.md; FHIR R4
search.html#errors, #modifiers, #sort, #paging; http.html#ccreate): what digests cannot answer
is a 400 OperationOutcome naming the parameter, whatever `Prefer: handling` says, and changes
nothing; conditional creates on an identifier and `_sort` on a name work as before, and a
`_sort` page link carries no name."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from tests.http.helpers import create, issue, stored

INS = "urn:oid:1.2.250.1.213.1.4.8"


def patient(family: str, nir: str, **more: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family, "given": ["Zoé"]}],
            "identifier": [{"system": INS, "value": nir,
                            "type": {"text": "INS-NIR"}}], **more}


@pytest.fixture
def people(client: TestClient) -> TestClient:
    for family, nir in (("Lefèvre", "270020300000109"), ("Ångström", "180020300000253"),
                        ("Martin", "290020300000394"), ("lefebvre", "170020300000456")):
        assert create(client, patient(family, nir)).status_code == 201
    return client


@pytest.mark.parametrize(("path", "params", "name"), [
    ("/fhir/Patient", {"name:contains": "fèv"}, "name"),
    ("/fhir/Patient", {"family:contains": "ang"}, "family"),
    ("/fhir/Patient", {"identifier:text": "INS"}, "identifier"),
    ("/fhir/Patient", {"address:contains": "rue"}, "address"),
    ("/fhir/Patient", {"family": "x" * 33}, "family"),
    ("/fhir/Practitioner", {"name:contains": "dup"}, "name"),
    ("/fhir/Observation", {"subject:Patient.name:contains": "fèv"}, "name"),
    ("/fhir/Patient", {"_has:RelatedPerson:patient:telecom:text": "06"}, "telecom"),
])
@pytest.mark.parametrize("handling", ["lenient", "strict"])
def test_what_digests_cannot_answer_is_a_400_naming_the_parameter(
        people: TestClient, path: str, params: dict[str, str], name: str, handling: str) -> None:
    before = stored(people)
    response = people.get(path, params=params, headers={"Prefer": f"handling={handling}"})
    assert response.status_code == 400, response.text
    found = issue(response)
    assert found["code"] == "not-supported" and found["expression"] == [name]
    assert f'"{name}"' in found["diagnostics"] and "protected" in found["diagnostics"]
    assert stored(people) == before


def test_a_conditional_create_on_an_unanswerable_criterion_creates_nothing(people: TestClient) -> None:
    before = stored(people)
    response = create(people, patient("Nouveau", "199020300000589"), If_None_Exist="name:contains=ouv")
    assert response.status_code == 400 and issue(response)["expression"] == ["name"]
    assert stored(people) == before


def test_a_conditional_create_on_an_identifier_matches_the_existing_patient(people: TestClient) -> None:
    before = stored(people)
    again = create(people, patient("Lefèvre", "270020300000109"), If_None_Exist=f"identifier={INS}|270020300000109")
    assert again.status_code == 200, again.text  # http.html#ccreate: one match, nothing created
    assert stored(people) == before
    response = people.get("/fhir/Patient", params={"identifier": "270020300000109"})
    assert [e["resource"]["name"][0]["family"] for e in response.json()["entry"]] == ["Lefèvre"]


def test_sort_on_a_name_pages_without_the_name_in_the_links(people: TestClient) -> None:
    families: list[str] = []
    url: str | None = "/fhir/Patient?_sort=-family&_count=1"
    while url:
        response = people.get(url)
        assert response.status_code == 200, response.text
        bundle = response.json()
        families += [e["resource"]["name"][0]["family"] for e in bundle.get("entry", [])]
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        for link in links.values():
            query = parse_qs(urlsplit(link).query)
            assert not any(word in str(query).lower() for word in ("lef", "mart", "ngstr"))
        url = links.get("next")
    # -family: the highest normalized family first (accents and case folded: angstrom < lefebvre
    # < lefevre < martin), as on plaintext.
    assert families == ["Martin", "Lefèvre", "lefebvre", "Ångström"]
