"""Trial search without a token (issue 17 §3b; docs/auth.md, "Without a token"): a request
with no Authorization header searches and reads ResearchStudy, with the catalogue resources
the ECLAIRE queries include, and matches an anonymous profile, never stored, audited with an
anonymous agent; every other request without a token, and any request with a bad token,
answers 401 as before."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.http.helpers import send
from tests.trials.eclaire import example_unit
from tests.trials.match_world import World, alice_record, world  # noqa: F401  (fixture)

FROM_PARIS = {"name": "location", "valueString": "75001"}
INCLUDES = "_include=ResearchStudy:site&_include=ResearchStudy:sponsor&_include=ResearchStudy:enrollment"


@pytest.fixture
def anonymous(world: World) -> Iterator[TestClient]:  # noqa: F811
    """A client of the same started app that sends no Authorization header."""
    yield TestClient(world.client.app)


def _profile() -> dict[str, Any]:
    """Alice's record as an anonymous collection Bundle (no ids, references by fullUrl)."""
    patient, *rest = alice_record()
    subject = "urn:uuid:00000000-0000-4000-8000-000000000000"
    return {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": subject, "resource": {k: v for k, v in patient.items() if k != "id"}},
        *({"fullUrl": f"urn:uuid:00000000-0000-4000-8000-00000000000{n}",
           "resource": {**{k: v for k, v in r.items() if k != "id"}, "subject": {"reference": subject}}}
          for n, r in enumerate(rest, 1))]}


def _match(client: TestClient, *parameters: dict[str, Any], **headers: str) -> Any:
    body = {"resourceType": "Parameters", "parameter": list(parameters)}
    return send(client, "POST", "/fhir/ResearchStudy/$match", body, **headers)


def _store(world: World) -> tuple[Any, ...]:  # noqa: F811
    """What the store holds: the newest entry of its history (any write changes it), and how
    many resources of the types a match or a referral would write."""
    ehr = world.headers("ehr")
    [newest] = world.client.get("/fhir/_history?_count=1", headers=ehr).json()["entry"]
    return (newest["fullUrl"], newest["resource"]["meta"]["versionId"],
            *(world.client.get(f"/fhir/{t}?_summary=count", headers=ehr).json()["total"]
              for t in ("Patient", "Condition", "Observation", "Bundle", "ResearchSubject",
                        "Communication", "Group", "ResearchStudy")))


def test_trials_are_searched_and_read_without_a_token(anonymous: TestClient) -> None:
    found = anonymous.get(f"/fhir/ResearchStudy?_count=50&{INCLUDES}")
    assert found.status_code == 200, found.text
    entries = found.json()["entry"]
    matched = {e["resource"]["id"] for e in entries if e["search"]["mode"] == "match"}
    assert {"her2", "breast", "lung"} <= matched
    included = {f"{e['resource']['resourceType']}/{e['resource']['id']}"
                for e in entries if e["search"]["mode"] == "include"}
    assert {"Location/lyon", "Location/paris", "Group/her2-criteria"} <= included
    assert {r.split("/")[0] for r in included} <= {"Location", "Group", "Organization"}
    posted = anonymous.post("/fhir/ResearchStudy/_search", data={"_id": "her2"})
    assert posted.status_code == 200, posted.text
    assert [e["resource"]["id"] for e in posted.json()["entry"]] == ["her2"]
    read = anonymous.get("/fhir/ResearchStudy/her2")
    assert read.status_code == 200 and read.json()["id"] == "her2"
    assert anonymous.get("/fhir/ResearchStudy/nothing").status_code == 404


def test_revinclude_reaches_no_patient_data(world: World, anonymous: TestClient) -> None:  # noqa: F811
    # A referral names the trial: a ResearchSubject and a Communication about Alice.
    for resource in (
        {"resourceType": "ResearchSubject", "id": "alice-her2-subject", "status": "candidate",
         "study": {"reference": "ResearchStudy/her2"}, "individual": {"reference": "Patient/alice"}},
        {"resourceType": "Group", "id": "her2-cohort", "type": "person", "actual": True,
         "characteristic": [{"code": {"text": "in study"}, "valueReference": {"reference": "ResearchStudy/her2"},
                             "exclude": False}],
         "member": [{"entity": {"reference": "Patient/alice"}}]},
    ):
        response = send(world.client, "PUT", f"/fhir/{resource['resourceType']}/{resource['id']}", resource,
                        **world.headers("ehr"))
        assert response.status_code in (200, 201), response.text
    as_ehr = world.client.get("/fhir/ResearchStudy?_id=her2&_revinclude=ResearchSubject:study"
                              "&_revinclude=Group:value-reference", headers=world.headers("ehr")).json()
    assert len(as_ehr["entry"]) == 3  # the ResearchSubject and the cohort come back with a token
    public = anonymous.get("/fhir/ResearchStudy?_id=her2&_revinclude=ResearchSubject:study"
                           "&_revinclude=Group:value-reference&_include=ResearchStudy:enrollment")
    assert public.status_code == 200, public.text
    assert [(e["resource"]["resourceType"], e["resource"].get("id")) for e in public.json()["entry"]
            if e["search"]["mode"] != "outcome"] == [("ResearchStudy", "her2"), ("Group", "her2-criteria")]


def test_an_anonymous_profile_is_matched_and_never_stored(world: World,  # noqa: F811
                                                           anonymous: TestClient) -> None:
    before = _store(world)
    response = _match(anonymous, {"name": "bundle", "resource": _profile()}, FROM_PARIS)
    assert response.status_code == 200, response.text
    found = [e["resource"]["id"] for e in response.json()["entry"] if e["search"]["mode"] == "match"]
    assert found == ["breast", "her2", "odd", "men", "lung"]  # the ineligible last
    assert _store(world) == before


def test_matching_a_stored_patient_needs_a_token(world: World,  # noqa: F811
                                                 anonymous: TestClient) -> None:
    before = _store(world)
    for id in ("alice", "nobody"):  # the same answer: nothing told about who exists
        response = _match(anonymous, {"name": "patient", "valueReference": {"reference": f"Patient/{id}"}})
        assert response.status_code == 401, response.text
        assert response.json()["resourceType"] == "OperationOutcome"
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="fhir"'
    assert _store(world) == before


NEEDS_A_TOKEN = [
    ("GET", "/fhir/Patient/alice"), ("GET", "/fhir/Patient"), ("GET", "/fhir/Patient?_id=alice"),
    ("GET", "/fhir/Communication"), ("GET", "/fhir/AuditEvent"), ("GET", "/fhir/$export"),
    ("GET", "/fhir/Patient/$export"), ("GET", "/fhir/Patient/alice/$everything"),
    ("GET", "/fhir/_history"), ("GET", "/fhir/ResearchStudy/_history"),
    ("GET", "/fhir/ResearchStudy/her2/_history"), ("GET", "/fhir/ResearchStudy/her2/_history/1"),
    ("POST", "/fhir/ResearchStudy/her2/$match"), ("POST", "/fhir/ResearchStudy"),
    ("PUT", "/fhir/ResearchStudy/her2"), ("DELETE", "/fhir/ResearchStudy/her2"),
    ("GET", "/fhir/Location"), ("GET", "/fhir/Group/her2-criteria"), ("GET", "/fhir"),
    ("POST", "/fhir"), ("GET", "/fhir/Patient/alice/ResearchSubject"),
    ("POST", "/fhir/ResearchStudy/her2/$refer"), ("POST", "/fhir/Patient/_search"),
    # Which trials have candidates would tell about patients; chains are refused alike.
    ("GET", "/fhir/ResearchStudy?_has:ResearchSubject:study:status=candidate"),
    ("GET", "/fhir/ResearchStudy?site.name=paris"),
]


@pytest.mark.parametrize(("method", "path"), NEEDS_A_TOKEN)
def test_everything_else_needs_a_token(world: World, anonymous: TestClient,  # noqa: F811
                                       method: str, path: str) -> None:
    before = _store(world)
    body = {"resourceType": "ResearchStudy", "id": "her2", "status": "active"}
    response = send(anonymous, method, path, body if method in ("POST", "PUT") else None)
    assert response.status_code == 401, (path, response.text)
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="fhir"'
    assert response.json()["resourceType"] == "OperationOutcome"
    assert _store(world) == before


def test_metadata_stays_public(anonymous: TestClient) -> None:
    assert anonymous.get("/fhir/metadata").status_code == 200


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer not-a-token", "Basic dXNlcjpwdw=="])
def test_a_header_present_but_invalid_stays_401(anonymous: TestClient, header: str) -> None:
    for response in (anonymous.get("/fhir/ResearchStudy", headers={"Authorization": header}),
                     anonymous.get("/fhir/ResearchStudy/her2", headers={"Authorization": header}),
                     _match(anonymous, {"name": "bundle", "resource": _profile()}, Authorization=header)):
        assert response.status_code == 401, response.text


def test_public_requests_are_audited_with_an_anonymous_agent(world: World,  # noqa: F811
                                                             anonymous: TestClient) -> None:
    assert anonymous.get("/fhir/ResearchStudy/breast").status_code == 200
    events = world.client.get("/fhir/AuditEvent?entity=ResearchStudy/breast&_sort=-date&_count=1",
                              headers=world.headers("ehr")).json()["entry"]
    agent = events[0]["resource"]["agent"][0]
    assert agent["who"] == {"display": "anonymous"}
    assert agent["altId"] == agent["name"] == "anonymous"


def test_public_trial_search_can_be_turned_off(world: World, anonymous: TestClient) -> None:  # noqa: F811
    app = world.client.app
    settings = app.state.settings  # type: ignore[attr-defined]
    app.state.settings = settings.model_copy(update={"public_trial_search": False})  # type: ignore[attr-defined]
    try:
        for response in (anonymous.get("/fhir/ResearchStudy"), anonymous.get("/fhir/ResearchStudy/her2"),
                         _match(anonymous, {"name": "bundle", "resource": _profile()})):
            assert response.status_code == 401, response.text
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="fhir"'
    finally:
        app.state.settings = settings  # type: ignore[attr-defined]
    assert anonymous.get("/fhir/ResearchStudy/her2").status_code == 200


SUMMARY = "http://hl7.org/fhir/5.0/StructureDefinition/extension-ResearchStudy.descriptionSummary"
LABEL = "http://hl7.org/fhir/5.0/StructureDefinition/extension-ResearchStudy.label"


def _plain_language(study: dict[str, Any]) -> tuple[list[str], list[str]]:
    """A trial's brief summaries, and its titles for the public (ECLAIRE label `human-use`)."""
    summaries = [e["valueMarkdown"] for e in study.get("extension", []) if e["url"] == SUMMARY]
    titles = [next(p["valueString"] for p in e["extension"] if p["url"] == "value")
              for e in study.get("extension", []) if e["url"] == LABEL
              and any(c["code"] == "human-use" for p in e["extension"] if p["url"] == "type"
                      for c in p["valueCodeableConcept"]["coding"])]
    return summaries, titles


def test_french_plain_language_summaries_come_as_the_catalogue_has_them(
        world: World, anonymous: TestClient) -> None:  # noqa: F811
    # The ECLAIRE example: one summary and one title for the public, in French, no language
    # tagged; the server returns them as stored, whatever language is asked for.
    for resource in example_unit("2022-500014-26-00", sites=1):
        response = send(world.client, "PUT", f"/fhir/{resource['resourceType']}/{resource['id']}",
                        resource, **world.headers("ehr"))
        assert response.status_code in (200, 201), response.text
    expected = (["Ceci est un test de ressource pour Eclaire"],
                ["Giredestrant et Phesgo dans le cancer du sein avancé HER2+ RE+"])
    for language in ("fr", "en", "fr-FR, en;q=0.5"):
        read = anonymous.get("/fhir/ResearchStudy/2022-500014-26-00-example",
                             headers={"Accept-Language": language})
        assert read.status_code == 200, read.text
        assert _plain_language(read.json()) == expected
        matched = _match(anonymous, {"name": "bundle", "resource": _profile()},
                         {"name": "recruiting-only", "valueBoolean": False}, **{"Accept-Language": language})
        assert matched.status_code == 200, matched.text
        [trial] = [e["resource"] for e in matched.json()["entry"]
                   if e["search"]["mode"] == "match" and e["resource"]["id"] == "2022-500014-26-00-example"]
        assert _plain_language(trial) == expected


def test_an_iterated_include_never_walks_through_what_the_public_may_not_see(
        world: World, anonymous: TestClient) -> None:  # noqa: F811
    # A candidate of the trial, managed by a hospital and followed by a GP: neither the
    # ResearchSubject nor the Patient is public, but their Organization and Practitioner types
    # are includable. The ECLAIRE queries iterate nothing; from the sites, an iterated walk
    # would list the people working there.
    for resource in (
        {"resourceType": "Organization", "id": "dana-hospital", "name": "Dana's hospital"},
        {"resourceType": "Practitioner", "id": "dana-gp", "name": [{"family": "Dana's GP"}]},
        {"resourceType": "Patient", "id": "dana", "managingOrganization": {"reference": "Organization/dana-hospital"},
         "generalPractitioner": [{"reference": "Practitioner/dana-gp"}]},
        {"resourceType": "ResearchSubject", "id": "dana-her2", "status": "candidate",
         "study": {"reference": "ResearchStudy/her2"}, "individual": {"reference": "Patient/dana"}},
    ):
        response = send(world.client, "PUT", f"/fhir/{resource['resourceType']}/{resource['id']}", resource,
                        **world.headers("ehr"))
        assert response.status_code in (200, 201), response.text
    before = _store(world)
    walk = ("_id=her2&_revinclude:iterate=ResearchSubject:study&_include:iterate=ResearchSubject:individual"
            "&_include:iterate=Patient:organization&_include:iterate=Patient:general-practitioner")
    as_ehr = world.client.get(f"/fhir/ResearchStudy?{walk}", headers=world.headers("ehr")).json()
    assert {"Organization/dana-hospital", "Practitioner/dana-gp"} <= {
        f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in as_ehr["entry"]}
    for query in (walk, "_id=her2&_include=ResearchStudy:site&_revinclude:iterate=PractitionerRole:location",
                  "_id=her2&_include:iterate=ResearchStudy:site"):
        response = anonymous.get(f"/fhir/ResearchStudy?{query}")
        assert response.status_code == 401, (query, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
        assert "iterate" in response.json()["issue"][0]["diagnostics"]
    assert _store(world) == before


def test_an_anonymous_profile_past_the_entry_limit_is_refused_before_it_is_validated(
        world: World, anonymous: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    # Validating a profile costs about 0.1 ms of CPU an entry, on the event loop, for anyone
    # without a token: 15 MB (40,000 entries) took 5 s. The limit comes first.
    from fhir_server.services import crud
    validated: list[str] = []
    check = crud.check_resource
    monkeypatch.setattr(crud, "check_resource", lambda *a: validated.append("yes") or check(*a))
    profile = _profile()
    observation = profile["entry"][-1]
    profile["entry"] += [{**observation, "fullUrl": f"urn:uuid:00000000-0000-4000-8001-{n:012d}"}
                         for n in range(1000)]
    before = _store(world)
    response = _match(anonymous, {"name": "bundle", "resource": profile})
    assert response.status_code == 422, response.text
    [issue] = response.json()["issue"]
    assert issue["code"] == "too-costly" and "bundle" in issue["diagnostics"]
    assert issue["expression"] == ["Parameters.parameter.where(name='bundle')"]
    assert validated == [] and _store(world) == before
    profile["entry"] = profile["entry"][:1000]
    assert _match(anonymous, {"name": "bundle", "resource": profile}).status_code == 200
