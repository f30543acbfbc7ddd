"""`POST [base]/ResearchStudy/$match` over HTTP on each store (docs/matching.md): ranking,
explanations, sites and distances, filters, the anonymous profile never stored, access,
audit, and bad input answered with an OperationOutcome naming the parameter."""

from __future__ import annotations

from typing import Any

import pytest

from tests.http.helpers import send
from tests.trials.match_world import World, alice_record, world  # noqa: F401  (fixture)

PATIENT = {"name": "patient", "valueReference": {"reference": "Patient/alice"}}
FROM_PARIS = {"name": "location", "valueString": "75001"}


MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"


def _result(entry: dict[str, Any]) -> dict[str, Any]:
    """The match-result extension of an entry, as {part: value(s)}."""
    [extension] = [e for e in entry["search"]["extension"] if e["url"] != MATCH_GRADE]
    parts: dict[str, Any] = {}
    for part in extension["extension"]:
        value = next(v for k, v in part.items() if k.startswith("value") or k == "extension")
        parts.setdefault(part["url"], []).append(value)
    return parts


def _criteria(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for criterion in _result(entry)["criterion"]:
        parts: dict[str, Any] = {}
        for part in criterion:
            value = next(v for k, v in part.items() if k.startswith("value") or k == "extension")
            parts.setdefault(part["url"], []).append(value)
        out[parts["text"][0]] = parts
    return out


def _outcome(bundle: dict[str, Any]) -> list[str]:
    [outcome] = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    return [i["diagnostics"] for i in outcome["issue"]]


def _matches(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in bundle["entry"] if e["search"]["mode"] == "match"]


def _grade(entry: dict[str, Any]) -> str:
    [grade] = [e["valueCode"] for e in entry["search"]["extension"] if e["url"] == MATCH_GRADE]
    return str(grade)


def test_a_stored_patient_gets_ranked_explained_trials(world: World) -> None:
    response = world.match(PATIENT, FROM_PARIS)
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["type"] == "searchset"
    found = _matches(bundle)
    # breast: every criterion met; her2: ECOG, brain metastases and free text open; odd: a
    # diagnosis in a local code system, not evaluated. Then the ineligible: men (evaluated),
    # lung last (pruned by the index: another diagnosis). Closed and done are not recruiting.
    assert [e["resource"]["id"] for e in found] == ["breast", "her2", "odd", "men", "lung"]
    assert bundle["total"] == 5
    assert [e["search"]["score"] for e in found] == [1.0, pytest.approx(4 / 7, abs=1e-4), 0.5, 0, 0]
    assert [_result(e)["verdict"][0]["code"] for e in found] == [
        "eligible", "undetermined", "undetermined", "ineligible", "ineligible"]
    assert [_grade(e) for e in found] == ["probable", "possible", "possible", "certainly-not", "certainly-not"]

    her2 = _criteria(found[1])
    assert her2["Breast cancer"]["verdict"][0]["code"] == "met"
    assert her2["Breast cancer"]["evidence"] == [{"reference": "Condition/alice-c/_history/1"}]
    assert her2["HER2 positive"]["evidence"] == [{"reference": "Observation/alice-her2/_history/1"}]
    assert her2["ECOG 0-1"]["verdict"][0]["code"] == "unknown"
    assert "89247-1" in her2["ECOG 0-1"]["missing"][0]
    assert her2["Brain metastases"]["exclude"] == [True]
    assert her2["Brain metastases"]["verdict"][0]["code"] == "unknown"  # never proven absent
    assert her2["Adequate organ function"]["type"][0]["code"] == "free-text"
    assert _result(found[1])["criteria"] == [{"reference": "Group/her2-criteria/_history/1"}]

    # Nearest recruiting site: Lyon, placed by its postal code (the closed Paris site is ignored).
    assert _result(found[1])["site"] == [{"reference": "Location/lyon"}]
    assert 380 < _result(found[1])["distance"][0]["value"] < 400
    assert _result(found[0])["site"] == [{"reference": "Location/paris"}]
    assert _result(found[0])["distance"][0]["value"] < 5
    assert _result(found[0])["siteStatusDate"]
    assert any("1 proven ineligible by the index" in d and "1 evaluated ineligible; 0 ineligible "
               "trials not listed" in d for d in _outcome(bundle))
    odd = _criteria(found[2])["Local diagnosis"]
    assert odd["verdict"][0]["code"] == "unknown" and "no rule for code system" in odd["warning"][0]
    assert any(d.startswith("ResearchStudy/odd: criterion 2 (Local diagnosis): no rule for code system")
               for d in _outcome(bundle))


def test_an_ineligible_trial_is_listed_with_the_criterion_not_met_and_its_evidence(world: World) -> None:
    """Men-only: Alice's sex is not met, citing her Patient; lung, pruned by the index and
    never judged while ranked, is explained when listed: its diagnosis not met, citing hers."""
    found = {e["resource"]["id"]: e for e in _matches(world.match(PATIENT, FROM_PARIS).json())}
    men = _criteria(found["men"])
    assert men["Men"]["verdict"][0]["code"] == "not-met"
    assert men["Men"]["evidence"] == [{"reference": "Patient/alice/_history/1"}]
    assert men["Breast cancer"]["verdict"][0]["code"] == "met"
    assert _result(found["men"])["site"] == [{"reference": "Location/paris"}]
    lung = _criteria(found["lung"])
    assert lung["Lung cancer"]["verdict"][0]["code"] == "not-met"
    assert lung["Lung cancer"]["evidence"] == [{"reference": "Condition/alice-c/_history/1"}]
    assert _result(found["lung"])["site"] == [{"reference": "Location/bordeaux"}]


def test_count_bounds_the_ineligible_and_the_outcome_says_how_many_are_left(world: World) -> None:
    """The pruned trial is listed only when `count` reaches it; `total` counts every trial
    ranked, listed or not."""
    bundle = world.match(PATIENT, FROM_PARIS, {"name": "count", "valueInteger": 4}).json()
    assert [e["resource"]["id"] for e in _matches(bundle)] == ["breast", "her2", "odd", "men"]
    assert bundle["total"] == 5
    assert any("1 ineligible trials not listed (ranked after the last one listed" in d
               for d in _outcome(bundle))
    bundle = world.match(PATIENT, FROM_PARIS, {"name": "count", "valueInteger": 2}).json()
    assert [e["resource"]["id"] for e in _matches(bundle)] == ["breast", "her2"]
    assert bundle["total"] == 5
    assert any("2 ineligible trials not listed" in d for d in _outcome(bundle))


def test_the_pruned_are_counted_among_the_trials_the_filters_keep(world: World) -> None:
    """The outcome counts the trials the index proves ineligible as it counts those evaluated:
    among those the filters keep (a phase-2 search leaves the phase-3 lung trial out)."""
    told = " ".join(_outcome(world.match(PATIENT, FROM_PARIS).json()))
    assert "1 proven ineligible by the index" in told
    phase_2 = {"name": "phase", "valueCode": "phase-2"}
    told = " ".join(_outcome(world.match(PATIENT, FROM_PARIS, phase_2).json()))
    assert "0 proven ineligible by the index" in told


def test_the_patients_address_is_the_default_location(world: World) -> None:
    bundle = world.match(PATIENT).json()  # Alice lives in 75013
    assert _result(_matches(bundle)[0])["distance"][0]["value"] < 5


def test_filters(world: World) -> None:
    def ids(*parameters: dict[str, Any]) -> list[str]:
        response = world.match(PATIENT, *parameters)
        assert response.status_code == 200, response.text
        return [e["resource"]["id"] for e in _matches(response.json())]

    # The ineligible trials (men, lung) are filtered as the others.
    assert ids({"name": "phase", "valueCode": "phase-2"}) == ["her2", "men"]
    assert ids(FROM_PARIS, {"name": "radius", "valueDecimal": 50}) == ["breast", "odd", "men"]
    assert ids({"name": "location", "valueString": "45.76,4.84"}, {"name": "radius", "valueDecimal": 20}) == ["her2"]
    assert ids({"name": "recruiting-only", "valueBoolean": False}) == [
        "breast", "closed", "done", "her2", "odd", "men", "lung"]
    assert ids({"name": "count", "valueInteger": 1}) == ["breast"]


def _profile(*, address: bool = True) -> dict[str, Any]:
    resources = alice_record()
    if not address:
        resources[0] = {k: v for k, v in resources[0].items() if k != "address"}
    return {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": f"urn:uuid:00000000-0000-4000-8000-00000000000{n}",
         "resource": {**r, "subject": {"reference": "urn:uuid:00000000-0000-4000-8000-000000000000"}}
         if r["resourceType"] != "Patient" else {k: v for k, v in r.items() if k not in ("id", "meta")}}
        for n, r in enumerate(resources)]}


def _store_size(world: World) -> dict[str, int]:
    return {t: world.client.get(f"/fhir/{t}?_summary=count", headers=world.headers("ehr")).json()["total"]
            for t in ("Patient", "Condition", "Observation", "Bundle", "ResearchSubject")}


def test_an_anonymous_profile_is_matched_and_never_stored(world: World) -> None:
    before = _store_size(world)
    response = world.match({"name": "bundle", "resource": _profile(address=False)})
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert [e["resource"]["id"] for e in _matches(bundle)] == ["breast", "her2", "odd", "men", "lung"]
    her2 = _criteria(_matches(bundle)[1])
    assert her2["Breast cancer"]["evidence"] == [{"reference": "urn:uuid:00000000-0000-4000-8000-000000000001"}]
    # No location anywhere: no distance, and a warning says so.
    assert "distance" not in _result(_matches(bundle)[0])
    assert any("No location" in d for d in _outcome(bundle))
    assert _store_size(world) == before


def test_the_caller_must_be_allowed_to_search_trials(world: World) -> None:
    tokens = world.client.app.state.tokens  # type: ignore[attr-defined]
    issued = tokens.issue(subject="ehr", client_id="ehr", scope="system/Observation.rs")
    response = send(world.client, "POST", "/fhir/ResearchStudy/$match",
                    {"resourceType": "Parameters", "parameter": [PATIENT]},
                    Authorization=f"Bearer {issued['access_token']}")
    assert response.status_code == 403


def test_access_and_audit(world: World) -> None:
    # The physician whom Alice's consent names reaches her; nobody reaches Bob.
    assert world.match(PATIENT, who="physician").status_code == 200
    assert world.match(PATIENT, who="alice").status_code == 200
    unknown = world.match({"name": "patient", "valueReference": {"reference": "Patient/nobody"}})
    out_of_reach = world.match({"name": "patient", "valueReference": {"reference": "Patient/bob"}},
                               who="physician")
    assert unknown.status_code == out_of_reach.status_code == 404
    assert unknown.json()["resourceType"] == "OperationOutcome"
    events = world.client.get("/fhir/AuditEvent?patient=Patient/alice&subtype=operation&_sort=-date&_count=1",
                              headers=world.headers("ehr")).json()["entry"]
    event = events[0]["resource"]
    assert event["agent"][0]["who"] == {"reference": "Patient/alice"}
    assert "Patient/alice" in {e["what"]["reference"] for e in event["entity"] if "what" in e}


BAD = [
    ([PATIENT, {"name": "bundle", "resource": {"resourceType": "Bundle", "type": "collection"}}], 400, "patient"),
    ([FROM_PARIS], 400, "bundle"),
    ([PATIENT, {"name": "radius", "valueDecimal": 0}], 400, "radius"),
    ([PATIENT, {"name": "radius", "valueDecimal": -5}], 400, "radius"),
    ([PATIENT, {"name": "location", "valueString": "Paris"}], 400, "location"),
    ([PATIENT, {"name": "location", "valueString": "99999"}], 400, "location"),
    ([PATIENT, {"name": "location", "valueString": "95.1,2"}], 400, "location"),
    ([PATIENT, {"name": "count", "valueInteger": 0}], 400, "count"),
    ([PATIENT, {"name": "colour", "valueString": "blue"}], 400, "colour"),
    ([PATIENT, {"name": "recruiting-only", "valueString": "yes"}], 400, "recruiting-only"),
    ([{"name": "patient", "valueReference": {"reference": "Group/x"}}], 400, "patient"),
    ([{"name": "bundle", "resource": {"resourceType": "Bundle", "type": "transaction"}}], 400, "bundle"),
]


@pytest.mark.parametrize("parameters, status, named", BAD)
def test_bad_input_names_the_parameter(world: World, parameters: list[dict[str, Any]], status: int,
                                       named: str) -> None:
    before = _store_size(world)
    response = world.match(*parameters)
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert f"'{named}'" in outcome["issue"][0]["diagnostics"]
    assert _store_size(world) == before


def test_two_patients_in_a_profile(world: World) -> None:
    profile = _profile()
    profile["entry"].append({"fullUrl": "urn:uuid:00000000-0000-4000-8000-000000000009",
                             "resource": {"resourceType": "Patient", "gender": "male"}})
    response = world.match({"name": "bundle", "resource": profile})
    assert response.status_code == 422
    assert "'bundle'" in response.json()["issue"][0]["diagnostics"]
    assert "2 Patients" in response.json()["issue"][0]["diagnostics"]


def test_a_profile_entry_about_someone_else(world: World) -> None:
    profile = _profile()
    profile["entry"][1]["resource"]["subject"] = {"reference": "Patient/bob"}
    response = world.match({"name": "bundle", "resource": profile})
    assert response.status_code == 422
    assert "'bundle'" in response.json()["issue"][0]["diagnostics"]


def test_radius_without_any_location(world: World) -> None:
    response = world.match({"name": "bundle", "resource": _profile(address=False)},
                           {"name": "radius", "valueDecimal": 10})
    assert response.status_code == 422
    assert "'radius'" in response.json()["issue"][0]["diagnostics"]


def test_not_a_parameters_body(world: World) -> None:
    response = send(world.client, "POST", "/fhir/ResearchStudy/$match",
                    {"resourceType": "Patient"}, **world.headers("ehr"))
    assert response.status_code == 400



def test_the_same_input_gives_the_same_bytes(world: World) -> None:
    """Output is deterministic: two calls on the same input differ only in what each answer
    makes anew: the Bundle's `id` and `meta.lastUpdated` (it has no `timestamp`) and the
    `urn:uuid:` fullUrl of its OperationOutcome entry (a resource without id, made for this
    answer). The rest (order, scores, criteria, evidence, sites, distances, the outcome's
    issues) is byte-identical."""
    def answer(*parameters: dict[str, Any]) -> bytes:
        response = world.match(*parameters)
        assert response.status_code == 200, response.text
        bundle = response.json()
        raw = response.content
        # Those members cut out of the bytes as sent (not re-serialised: that could hide an
        # order difference); each value is unique to its member (count=1).
        [outcome] = [e["fullUrl"] for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
        for key, value in (("id", bundle["id"]), ("lastUpdated", bundle["meta"]["lastUpdated"]),
                           ("fullUrl", outcome)):
            member = f'"{key}":"{value}"'.encode()
            assert member in raw, member
            raw = raw.replace(member, b"", 1)
        return raw

    for parameters in ([PATIENT, FROM_PARIS, {"name": "recruiting-only", "valueBoolean": False}],
                       [{"name": "bundle", "resource": _profile()}]):
        first = answer(*parameters)
        assert answer(*parameters) == first


def test_the_catalogue_is_read_once_until_a_catalogue_write(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each request reads through its own audited store: the catalogue kept in memory is the
    app's store's, so a second call reads no trial again; a Location written reloads the
    catalogue but reads no trial's criteria again; a Group written, only its trial's."""
    from fhir_server.trials import match_catalogue

    read: list[str] = []
    real = match_catalogue.read_trial
    monkeypatch.setattr(match_catalogue, "read_trial", lambda id, groups: read.append(id) or real(id, groups))
    assert world.match(PATIENT).status_code == 200
    read.clear()
    assert world.match(PATIENT).status_code == 200
    assert read == []
    paris = send(world.client, "GET", "/fhir/Location/paris").json()
    assert send(world.client, "PUT", "/fhir/Location/paris", {**paris, "name": "Paris centre"}).status_code == 200
    assert world.match(PATIENT).status_code == 200
    assert read == []
    criteria = send(world.client, "GET", "/fhir/Group/her2-criteria").json()
    assert send(world.client, "PUT", "/fhir/Group/her2-criteria", {**criteria, "name": "HER2+"}).status_code == 200
    response = world.match(PATIENT)
    assert read == ["her2"]
    [her2] = [e for e in response.json()["entry"] if e["resource"].get("id") == "her2"]
    assert _result(her2)["criteria"] == [{"reference": "Group/her2-criteria/_history/2"}]
