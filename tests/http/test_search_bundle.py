"""The searchset Bundle over HTTP: entries, modes, total, links, paging, result parameters.

FHIR R4 search.html (#return, #count, #total, #summary, #elements, #include, #revinclude,
#errors, #system, #compartments), http.html#search (GET, POST `_search`), bundle.html
(`Bundle.type` searchset, `entry.fullUrl`, `entry.search.mode`, `Bundle.total`, `Bundle.link`).

The page sizes are small here (module `settings`) so that paging is cheap to exercise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from fastapi.testclient import TestClient

from fhir_server.settings import Settings
from tests.builders import LOINC, condition, lab_observation, observation, organization, patient
from tests.http.helpers import create, issue, send

BASE = "http://testserver/fhir"
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def settings(tmp_path: Path, signing_keys: bytes) -> Settings:
    (tmp_path / "signing-keys.json").write_bytes(signing_keys)
    return Settings(data_dir=tmp_path, base_url=BASE, default_page_size=3, max_page_size=5,
                    publish_definitions=False)


# -- helpers ---------------------------------------------------------------------------


def search(client: TestClient, url: str, **headers: str) -> dict[str, Any]:
    """GET a search (absolute link URLs accepted) and return its Bundle; the status must be 200."""
    response = client.get(url.removeprefix("http://testserver"), headers=headers)
    assert response.status_code == 200, response.text
    bundle: dict[str, Any] = response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    return bundle


def links(bundle: dict[str, Any]) -> dict[str, str]:
    return {link["relation"]: link["url"] for link in bundle.get("link", [])}


def self_params(bundle: dict[str, Any]) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(links(bundle)["self"]).query, keep_blank_values=True)


def by_mode(bundle: dict[str, Any], mode: str) -> list[dict[str, Any]]:
    return [e for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


def ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in by_mode(bundle, mode)]


def new_id(client: TestClient, resource: dict[str, Any]) -> str:
    response = create(client, resource)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def patients(client: TestClient, count: int, **extra: Any) -> list[str]:
    return [new_id(client, patient(given=f"P{n:02d}", **extra)) for n in range(count)]


# -- the Bundle itself -----------------------------------------------------------------


def test_searchset_entries_are_absolute_matches(client: TestClient) -> None:
    """bundle.html: type searchset; fullUrl is the absolute URL of the resource; mode match."""
    pid = new_id(client, patient())
    bundle = search(client, "/fhir/Patient")
    assert bundle["type"] == "searchset"
    [entry] = bundle["entry"]
    assert entry["fullUrl"] == f"{BASE}/Patient/{pid}"
    assert entry["search"] == {"mode": "match"}
    assert entry["resource"]["id"] == pid
    assert "request" not in entry and "response" not in entry  # bdl-3/bdl-4: only for batch/history
    assert all(link["url"].startswith(f"{BASE}/Patient") for link in bundle["link"])


def test_empty_result_is_an_empty_searchset(client: TestClient) -> None:
    """search.html: no match is not an error; a searchset with no entries and a self link."""
    bundle = search(client, "/fhir/Patient?family=Nobody")
    assert "entry" not in bundle or bundle["entry"] == []
    assert set(links(bundle)) == {"self"}


def test_total_only_when_asked(client: TestClient) -> None:
    """search.html#total: `_total=accurate|estimate` give Bundle.total; `none` and absent do not."""
    patients(client, 4)
    assert "total" not in search(client, "/fhir/Patient")
    assert "total" not in search(client, "/fhir/Patient?_total=none")
    assert search(client, "/fhir/Patient?_total=accurate")["total"] == 4
    estimate = search(client, "/fhir/Patient?_total=estimate")["total"]
    assert isinstance(estimate, int) and estimate >= 0
    # The total counts matches only, never included resources or the outcome (bundle.html#total).
    pid = new_id(client, patient(family="Total"))
    new_id(client, observation(f"Patient/{pid}"))
    bundle = search(client, "/fhir/Observation?_total=accurate&_include=Observation:subject&foo=1")
    assert bundle["total"] == 1
    assert len(bundle["entry"]) == 3  # match, include, outcome


def test_summary_count_gives_total_without_entries(client: TestClient) -> None:
    """search.html#summary: `_summary=count` returns only the count: total, no entries, no paging."""
    patients(client, 7)
    bundle = search(client, "/fhir/Patient?_summary=count")
    assert bundle["total"] == 7
    assert "entry" not in bundle or bundle["entry"] == []
    assert set(links(bundle)) == {"self"}
    assert ("_summary", "count") in self_params(bundle)


def test_count_zero_is_summary_count(client: TestClient) -> None:
    """search.html#count: `_count=0` SHALL be treated as `_summary=count` (total, no entries, no links)."""
    patients(client, 4)
    bundle = search(client, "/fhir/Patient?_count=0")
    assert "entry" not in bundle or bundle["entry"] == []
    assert set(links(bundle)) == {"self"}
    assert bundle.get("total") == 4


# -- self link and parameters not understood ---------------------------------------------


def test_self_link_shows_the_parameters_applied(client: TestClient) -> None:
    """search.html#self: the self link lists the parameters processed; unknown ones are left out."""
    bundle = search(client, "/fhir/Patient?family=Dupont&foo=bar&gender=female&_count=2")
    params = self_params(bundle)
    assert ("family", "Dupont") in params
    assert ("gender", "female") in params
    assert ("_count", "2") in params
    assert all(name != "foo" for name, _ in params)
    # The page size used is shown even when the client did not give one.
    assert ("_count", "3") in self_params(search(client, "/fhir/Patient"))


def test_unknown_parameter_is_reported_in_an_outcome_entry(client: TestClient) -> None:
    """search.html#errors: an ignored parameter is reported as an OperationOutcome, mode outcome."""
    new_id(client, patient())
    bundle = search(client, "/fhir/Patient?foo=bar&gender=female")
    assert len(ids(bundle)) == 1  # the search still ran on the parameters understood
    [entry] = by_mode(bundle, "outcome")
    outcome = entry["resource"]
    assert outcome["resourceType"] == "OperationOutcome"
    [problem] = outcome["issue"]
    assert problem["severity"] == "warning"
    assert problem["expression"] == ["foo"]
    assert entry["fullUrl"].startswith("urn:uuid:")
    # A known parameter with an unreadable value is reported the same way.
    bad = search(client, "/fhir/Patient?birthdate=yesterday")
    assert [i["expression"] for e in by_mode(bad, "outcome") for i in e["resource"]["issue"]] == [["birthdate"]]


def test_strict_handling_refuses_unknown_parameters(client: TestClient) -> None:
    """search.html#errors: with `Prefer: handling=strict`, an unknown parameter is a 400 error."""
    response = client.get("/fhir/Patient?foo=bar", headers={"Prefer": "handling=strict"})
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"
    problem = issue(response)
    assert problem["severity"] == "error"
    assert problem["expression"] == ["foo"]
    lenient = client.get("/fhir/Patient?foo=bar", headers={"Prefer": "handling=lenient"})
    assert lenient.status_code == 200
    assert client.get("/fhir/Patient?gender=male", headers={"Prefer": "handling=strict"}).status_code == 200


# -- page size and paging ----------------------------------------------------------------


def test_count_default_and_maximum(client: TestClient, settings: Settings) -> None:
    """search.html#count: the server's default page size, and `_count` capped at its maximum."""
    patients(client, settings.max_page_size + 2)
    assert len(ids(search(client, "/fhir/Patient"))) == settings.default_page_size
    assert len(ids(search(client, "/fhir/Patient?_count=2"))) == 2
    capped = search(client, "/fhir/Patient?_count=1000")
    assert len(ids(capped)) == settings.max_page_size
    assert ("_count", str(settings.max_page_size)) in self_params(capped)
    bad = search(client, "/fhir/Patient?_count=many")
    assert [i["expression"] for e in by_mode(bad, "outcome") for i in e["resource"]["issue"]] == [["_count"]]


def _walk(client: TestClient, url: str, relation: str) -> list[list[str]]:
    """The match ids of each page reached by following `relation` links from `url`."""
    pages = []
    for _ in range(50):
        bundle = search(client, url)
        pages.append(ids(bundle))
        if relation not in links(bundle):
            return pages
        url = links(bundle)[relation]
    raise AssertionError("paging does not end")


def test_next_links_return_every_match_exactly_once(client: TestClient) -> None:
    """search.html#paging: following `next` visits every match once; `previous` walks back."""
    made = set(patients(client, 11))
    new_id(client, organization())  # not a Patient: never on the pages
    pages = _walk(client, "/fhir/Patient?gender=female", "next")
    assert [len(p) for p in pages] == [3, 3, 3, 2]
    seen = [pid for page in pages for pid in page]
    assert len(seen) == len(set(seen)) == 11
    assert set(seen) == made

    first = search(client, "/fhir/Patient?gender=female")
    assert "previous" not in links(first)
    last_url = links(first)["next"]
    for _ in range(2):
        last_url = links(search(client, last_url))["next"]
    last = search(client, last_url)
    assert "next" not in links(last)
    assert _walk(client, last_url, "previous") == pages[::-1]
    for relation in ("next", "previous"):  # paging links keep the search (search.html#paging)
        params = parse_qsl(urlsplit(links(search(client, links(first)["next"]))[relation]).query)
        assert ("gender", "female") in params and ("_count", "3") in params


def test_paging_ends_on_a_full_last_page(client: TestClient) -> None:
    """search.html#paging: when the matches fill the last page exactly, it has no `next` link."""
    patients(client, 9)
    pages = _walk(client, "/fhir/Patient", "next")
    assert [len(p) for p in pages] == [3, 3, 3]
    assert len({pid for page in pages for pid in page}) == 9


def test_paging_with_a_sort_having_ties(client: TestClient) -> None:
    """search.html#sort + #paging: a sort with equal keys still pages each match exactly once."""
    made = []
    for n in range(8):
        made.append(new_id(client, patient(given=f"S{n}", birthDate=f"19{60 + n % 3}-01-01")))
    pages = _walk(client, "/fhir/Patient?_sort=-birthdate&_count=3", "next")
    seen = [pid for page in pages for pid in page]
    assert sorted(seen) == sorted(made)
    last = "/fhir/Patient?_sort=-birthdate&_count=3"
    for _ in range(len(pages) - 1):
        last = links(search(client, last))["next"]
    assert _walk(client, last, "previous") == pages[::-1]
    years = [search(client, f"/fhir/Patient?_id={pid}")["entry"][0]["resource"]["birthDate"] for pid in seen]
    assert years == sorted(years, reverse=True)


def test_malformed_cursor_is_a_400(client: TestClient) -> None:
    """search.html#paging: a paging link the server cannot read is a client error, never a 500."""
    patients(client, 4)
    for cursor in ("garbage", "W10", "%%%", "W3RydWUsImEiLDFd"):
        response = client.get("/fhir/Patient", params={"_cursor": cursor})
        assert response.status_code == 400, cursor
        assert issue(response)["expression"] == ["_cursor"]
    # A cursor of another search (a sort with more keys) is not silently misread.
    sorted_page = search(client, "/fhir/Patient?_sort=birthdate,_id&_count=2")
    cursor = dict(parse_qsl(urlsplit(links(sorted_page)["next"]).query))["_cursor"]
    assert client.get("/fhir/Patient", params={"_cursor": cursor}).status_code == 400


# -- _summary and _elements ----------------------------------------------------------------

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}


def test_summary_modes(client: TestClient) -> None:
    """search.html#summary: true (summary elements), text (text, id, meta, mandatory), data (no text)."""
    narrative = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Hélène</div>'}
    new_id(client, patient(text=narrative, maritalStatus={"text": "Mariée"},
                           identifier=[{"system": "urn:x", "value": "1"}]))
    full = search(client, "/fhir/Patient")["entry"][0]["resource"]
    summary = search(client, "/fhir/Patient?_summary=true")["entry"][0]["resource"]
    assert {"name", "gender", "birthDate", "identifier"} <= set(summary)
    assert "maritalStatus" not in summary and "text" not in summary  # not summary elements
    assert SUBSETTED in summary["meta"]["tag"]
    text = search(client, "/fhir/Patient?_summary=text")["entry"][0]["resource"]
    assert set(text) == {"resourceType", "id", "meta", "text"}
    assert SUBSETTED in text["meta"]["tag"]
    data = search(client, "/fhir/Patient?_summary=data")["entry"][0]["resource"]
    assert "text" not in data and data["maritalStatus"] == {"text": "Mariée"}
    assert SUBSETTED in data["meta"]["tag"]
    unchanged = search(client, "/fhir/Patient?_summary=false")["entry"][0]["resource"]
    assert unchanged == full and "tag" not in full["meta"]


def test_elements_subset_and_tag(client: TestClient) -> None:
    """search.html#elements: only the listed elements (plus mandatory ones), tagged SUBSETTED."""
    pid = new_id(client, patient())
    new_id(client, observation(f"Patient/{pid}", effectiveDateTime="2024-03-01"))
    person = search(client, "/fhir/Patient?_elements=gender")["entry"][0]["resource"]
    assert set(person) == {"resourceType", "id", "meta", "gender"}
    assert SUBSETTED in person["meta"]["tag"]
    obs = search(client, "/fhir/Observation?_elements=subject,value")["entry"][0]["resource"]
    # status and code are mandatory (1..1): servers SHOULD return them anyway.
    assert set(obs) == {"resourceType", "id", "meta", "subject", "valueQuantity", "status", "code"}
    assert ("_elements", "subject,value") in self_params(search(client, "/fhir/Observation?_elements=subject,value"))
    # The stored resource is untouched.
    assert "tag" not in client.get(f"/fhir/Patient/{pid}").json()["meta"]


# -- POST _search, system and compartment search ---------------------------------------------


def test_post_search_with_form_body(client: TestClient) -> None:
    """http.html#search: POST [type]/_search, form body and query string both apply."""
    target = new_id(client, patient(given="Anne"))
    new_id(client, patient(given="Anne", gender="male"))
    new_id(client, patient(given="Zoé"))
    response = send(client, "POST", "/fhir/Patient/_search?gender=female", body=b"given=anne&_count=2",
                    content_type=FORM)
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["type"] == "searchset"
    assert ids(bundle) == [target]
    params = self_params(bundle)
    assert ("gender", "female") in params and ("given", "anne") in params and ("_count", "2") in params
    # The self link is a GET URL that gives the same result (search.html#self).
    assert ids(search(client, links(bundle)["self"])) == [target]
    system = send(client, "POST", "/fhir/_search", body=b"_type=Patient&_id=" + target.encode(),
                  content_type=FORM)
    assert system.status_code == 200 and ids(system.json()) == [target]


def test_post_search_needs_a_form(client: TestClient) -> None:
    """http.html#search: the POST body is application/x-www-form-urlencoded; else 415."""
    for content_type in ("application/fhir+json", "application/json", "text/plain"):
        response = send(client, "POST", "/fhir/Patient/_search", body=b"gender=female", content_type=content_type)
        assert response.status_code == 415, content_type
        assert response.json()["resourceType"] == "OperationOutcome"
    charset = send(client, "POST", "/fhir/Patient/_search", body=b"gender=female",
                   content_type=f"{FORM}; charset=utf-8")
    assert charset.status_code == 200


def test_system_search_by_type_and_id(client: TestClient) -> None:
    """search.html#system: GET [base]?_type=... and GET [base]?_id=... across types."""
    pid = new_id(client, patient())
    oid = new_id(client, observation(f"Patient/{pid}"))
    org = new_id(client, organization())
    both = search(client, "/fhir?_type=Patient,Observation")
    assert sorted(e["fullUrl"] for e in both["entry"]) == sorted(
        [f"{BASE}/Patient/{pid}", f"{BASE}/Observation/{oid}"])
    assert ("_type", "Patient,Observation") in self_params(both)
    by_id = search(client, f"/fhir?_id={org}")
    assert [e["fullUrl"] for e in by_id["entry"]] == [f"{BASE}/Organization/{org}"]
    assert links(by_id)["self"].startswith(f"{BASE}?")
    everything = search(client, "/fhir?_total=accurate")
    assert everything["total"] == 3
    typed = search(client, "/fhir?_type=Observation&code=" + f"{LOINC}|29463-7")
    assert ids(typed) == [oid] and not by_mode(typed, "outcome")
    unknown = search(client, "/fhir?_type=NotAType")
    assert [i["expression"] for e in by_mode(unknown, "outcome") for i in e["resource"]["issue"]] == [["_type"]]


def test_patient_compartment_search(client: TestClient) -> None:
    """search.html#compartments: GET Patient/[id]/[type] is confined to that patient's data."""
    mine = new_id(client, patient(given="Hélène"))
    other = new_id(client, patient(given="Other"))
    own = [new_id(client, observation(f"Patient/{mine}", effectiveDateTime=f"2024-0{n}-01")) for n in (1, 2)]
    new_id(client, observation(f"Patient/{other}"))
    # Measured by the patient herself about someone else: in her compartment through `performer`.
    performed = new_id(client, observation(f"Patient/{other}", performer=[{"reference": f"Patient/{mine}"}]))
    own.append(performed)
    own_condition = new_id(client, condition(f"Patient/{mine}"))
    new_id(client, condition(f"Patient/{other}"))
    bundle = search(client, f"/fhir/Patient/{mine}/Observation")
    assert sorted(ids(bundle)) == sorted(own)
    assert links(bundle)["self"].startswith(f"{BASE}/Patient/{mine}/Observation")
    assert all(e["fullUrl"].startswith(f"{BASE}/Observation/") for e in bundle["entry"])
    assert ids(search(client, f"/fhir/Patient/{mine}/Condition")) == [own_condition]
    counted = search(client, f"/fhir/Patient/{mine}/Observation?_total=accurate&_count=2")
    assert counted["total"] == 3
    second = search(client, links(counted)["next"])  # paging stays inside the compartment
    assert links(second)["self"].startswith(f"{BASE}/Patient/{mine}/Observation?")
    assert sorted(ids(counted) + ids(second)) == sorted(own)
    assert ids(search(client, f"/fhir/Patient/{mine}/Observation?date=ge2024-02")) == [own[1]]
    assert ids(search(client, f"/fhir/Patient/{mine}/Observation?performer=Patient/{mine}")) == [performed]
    assert ids(search(client, f"/fhir/Patient/{mine}/Patient")) == [mine]


def test_compartment_search_errors(client: TestClient) -> None:
    """compartmentdefinition-patient: a type outside the compartment is a 400; other compartments 501."""
    mine = new_id(client, patient())
    outside = client.get(f"/fhir/Patient/{mine}/Organization")
    assert outside.status_code == 400
    assert outside.json()["resourceType"] == "OperationOutcome"
    encounter = client.get("/fhir/Encounter/1/Observation")
    assert encounter.status_code == 501
    assert encounter.json()["resourceType"] == "OperationOutcome"
    assert client.get(f"/fhir/Patient/{mine}/NotAType").status_code == 404


# -- _include and _revinclude ------------------------------------------------------------------


def test_include_once_with_mode_include(client: TestClient) -> None:
    """search.html#include: included resources appear once, search.mode include, after no match."""
    pid = new_id(client, patient())
    obs = [new_id(client, lab_observation(f"Patient/{pid}", "718-7", f"2024-0{n}-01", 12.5, "g/dL"))
           for n in (1, 2, 3)]
    bundle = search(client, "/fhir/Observation?_include=Observation:subject")
    assert sorted(ids(bundle)) == sorted(obs)
    assert ids(bundle, "include") == [pid]
    [included] = by_mode(bundle, "include")
    assert included["fullUrl"] == f"{BASE}/Patient/{pid}"
    assert ("_include", "Observation:subject") in self_params(bundle)
    # Included resources are not counted by `_count`: three matches fit a page of three.
    assert len(bundle["entry"]) == 4


def test_revinclude_and_iterate(client: TestClient) -> None:
    """search.html#revinclude, #iterate: reverse includes and `:iterate` follow references once."""
    org = new_id(client, organization())
    pid = new_id(client, patient(managingOrganization={"reference": f"Organization/{org}"}))
    other = new_id(client, patient(given="Other"))
    obs = {new_id(client, observation(f"Patient/{pid}")) for _ in range(2)}
    new_id(client, observation(f"Patient/{other}"))
    bundle = search(client, f"/fhir/Patient?_id={pid}&_revinclude=Observation:subject")
    assert ids(bundle) == [pid]
    assert set(ids(bundle, "include")) == obs and len(ids(bundle, "include")) == 2
    chained = search(client, "/fhir/Observation?subject=Patient/" + pid
                     + "&_include=Observation:subject&_include:iterate=Patient:organization")
    assert sorted(ids(chained, "include")) == sorted([pid, org])
    [org_entry] = [e for e in by_mode(chained, "include") if e["resource"]["resourceType"] == "Organization"]
    assert org_entry["fullUrl"] == f"{BASE}/Organization/{org}"


def test_include_never_duplicates_a_match(client: TestClient) -> None:
    """search.html#include: a resource both matched and included is listed once, as a match."""
    pid = new_id(client, patient())
    member = new_id(client, observation(f"Patient/{pid}"))
    panel = new_id(client, observation(f"Patient/{pid}", hasMember=[{"reference": f"Observation/{member}"}]))
    bundle = search(client, "/fhir/Observation?_include=Observation:has-member&_include=Observation:subject")
    assert sorted(ids(bundle)) == sorted([member, panel])
    assert ids(bundle, "include") == [pid]
    urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(urls) == len(set(urls))
    system = search(client, "/fhir?_type=Patient,Observation&_include=Observation:subject")
    urls = [e["fullUrl"] for e in system["entry"]]
    assert len(urls) == len(set(urls)) == 3
    assert not by_mode(system, "include")


def test_bad_include_is_reported(client: TestClient) -> None:
    """search.html#include: an include the server cannot honour is reported, not silently dropped."""
    bundle = search(client, "/fhir/Observation?_include=Observation:status")
    assert [i["expression"] for e in by_mode(bundle, "outcome") for i in e["resource"]["issue"]] == [["_include"]]
    strict = client.get("/fhir/Observation?_include=Observation:nope", headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
