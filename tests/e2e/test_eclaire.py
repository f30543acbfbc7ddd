"""ECLAIRE over real HTTP (uvicorn): the IG's flux 1 and flux 2 queries verbatim
(ResearchStudy search with `_include` of site, sponsor and enrollment, `_lastUpdated=ge…`,
`identifier`, `_count` up to 5000 with `total`, `_content`, the status example whose system
is a ValueSet URL), and `fhir-server trials sync` from an ECLAIRE-like base: twice gives no new
version, one change gives one version, a vanished trial is closed, never deleted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from fhir_server import cli
from tests.e2e.conftest import Server
from tests.trials.eclaire import example_unit

INCLUDES = "_include=ResearchStudy:site&_include=ResearchStudy:sponsor&_include=ResearchStudy:enrollment"
TRIALS = ("2022-500014-26-00", "2022-500020-33-00")


def _put_all(client: httpx.Client, resources: list[dict[str, Any]]) -> None:
    unique = {f"{r['resourceType']}/{r['id']}": r for r in resources}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": r, "request": {"method": "PUT", "url": url}} for url, r in unique.items()]}
    response = client.post("", json=bundle, headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An ECLAIRE-like base: our server, open to anyone as ECLAIRE's API is, with two trials
    (two sites each)."""
    server = Server(tmp_path_factory.mktemp("eclaire"), workers=1, env={"FHIR_SERVER_AUTH": "off"})
    try:
        with server.client() as client:
            _put_all(client, [r for number in TRIALS for r in example_unit(number)])
        yield server
    finally:
        server.stop()


def _get(server: Server, query: str) -> dict[str, Any]:
    with server.client() as client:
        response = client.get(f"/ResearchStudy?{query}")
    assert response.status_code == 200, response.text
    return response.json()


def _by_mode(bundle: dict[str, Any]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for entry in bundle.get("entry", ()):
        r = entry["resource"]
        found.setdefault(entry["search"]["mode"], []).append(f"{r['resourceType']}/{r.get('id')}")
    return {mode: sorted(refs) for mode, refs in found.items()}


def _included(number: str) -> list[str]:
    return [f"Group/{number}-enrollment-group", f"Location/{number}-site-0",
            f"Location/{number}-site-1", f"Organization/{number}-secondary-sponsor"]


def test_flux_1_scenario_1_every_trial_with_its_sites_sponsor_and_enrollment(base: Server) -> None:
    found = _by_mode(_get(base, INCLUDES))
    assert found["match"] == [f"ResearchStudy/{n}-example" for n in TRIALS]
    assert found["include"] == sorted(r for n in TRIALS for r in _included(n))


def test_flux_1_scenario_2_trials_updated_since_a_date(base: Server) -> None:
    assert len(_by_mode(_get(base, f"_lastUpdated=ge2022-11-06T15:00&{INCLUDES}"))["match"]) == 2
    assert "match" not in _by_mode(_get(base, f"_lastUpdated=ge2999-01-01T00:00&{INCLUDES}"))


def test_flux_1_scenario_3_one_trial_by_identifier(base: Server) -> None:
    found = _by_mode(_get(base, f"identifier=2022-500020-33-00&{INCLUDES}"))
    assert found == {"match": ["ResearchStudy/2022-500020-33-00-example"],
                     "include": _included("2022-500020-33-00")}


def test_count_up_to_5000_with_the_total(base: Server) -> None:
    bundle = _get(base, f"_count=5000&{INCLUDES}")
    assert bundle["total"] == 2  # without asking: ECLAIRE consumers read it
    assert "_count=5000" in bundle["link"][0]["url"]
    assert _get(base, "_count=1")["total"] == 2
    assert "total" not in _get(base, "_total=none")


def test_flux_2_status_with_a_value_set_as_system_matches_nothing_and_names_the_code_system(
        base: Server) -> None:
    bundle = _get(base, f"status=http://hl7.org/fhir/ValueSet/research-study-status|active&{INCLUDES}")
    assert "match" not in _by_mode(bundle)
    [outcome] = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    [issue] = outcome["issue"]
    assert issue["severity"] == "warning" and issue["expression"] == ["status"]
    assert "http://hl7.org/fhir/research-study-status" in issue["diagnostics"]
    assert "status=active matches" in issue["diagnostics"]
    right = _by_mode(_get(base, f"status=active&{INCLUDES}"))
    assert len(right["match"]) == 2


def test_flux_2_recruitment_status_condition_and_sponsor(base: Server) -> None:
    recruiting = "recruitment-status=https://interop.esante.gouv.fr/ig/fhir/eclaire/CodeSystem/" \
                 "eclaire-status-recruitment-code-system|recruiting"
    assert len(_by_mode(_get(base, recruiting))["match"]) == 2
    assert len(_by_mode(_get(base, "condition=http://terminology.hl7.org/CodeSystem/mdr|10065430"))["match"]) == 2
    sponsor = _by_mode(_get(base, "sponsor=Organization/2022-500014-26-00-secondary-sponsor"))
    assert sponsor["match"] == ["ResearchStudy/2022-500014-26-00-example"]
    assert _by_mode(_get(base, "associated-party=Organization/2022-500020-33-00-secondary-sponsor"))[
        "match"] == ["ResearchStudy/2022-500020-33-00-example"]


def test_flux_2_content_searches_the_whole_study_with_the_includes(base: Server) -> None:
    """`_content` as flux 2 lists it (the IG gives no example): every term of the query, case
    and accents aside, anywhere in the study; the includes come with the matches."""
    found = _by_mode(_get(base, f"_content=giredestrant SÉIN&{INCLUDES}"))
    assert found == {"match": [f"ResearchStudy/{n}-example" for n in TRIALS],
                     "include": sorted(r for n in TRIALS for r in _included(n))}
    assert _by_mode(_get(base, f"_content=giredestrant melanome&{INCLUDES}")) == {}
    with_status = _get(base, "_content=phesgo&recruitment-status=https://interop.esante.gouv.fr/ig/"
                       "fhir/eclaire/CodeSystem/eclaire-status-recruitment-code-system|recruiting")
    assert with_status["total"] == 2


def _sync(data: Path, base: Server, monkeypatch: pytest.MonkeyPatch, *extra: str) -> None:
    monkeypatch.setenv("FHIR_SERVER_DATA_DIR", str(data))
    monkeypatch.setenv("FHIR_SERVER_PUBLISH_DEFINITIONS", "false")
    assert cli.main(["trials", "sync", f"{base.base}/fhir", *extra]) == 0


def test_sync_twice_gives_no_new_version_one_change_one_version_and_vanished_trials_are_closed(
        base: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _sync(tmp_path, base, monkeypatch)
    assert "10 created" in capsys.readouterr().err  # all but ctis, which no _include reaches
    assert (tmp_path / "catalogue-sync.json").exists()
    _sync(tmp_path, base, monkeypatch)
    assert "10 unchanged" in capsys.readouterr().err  # ge the last instant: re-read, not re-written
    with base.client() as client:
        [study, *_] = example_unit(TRIALS[0], title="Titre corrigé")
        assert client.put(f"/ResearchStudy/{study['id']}", json=study).status_code == 200
    _sync(tmp_path, base, monkeypatch)
    assert "updated" in (out := capsys.readouterr().err) and "1 updated" in out and "created" not in out
    local = Server(tmp_path, workers=1, env={"FHIR_SERVER_AUTH": "off"})
    try:
        with local.client() as client:
            history = client.get(f"/ResearchStudy/{TRIALS[0]}/_history").json()
            assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]
            assert history["entry"][0]["resource"]["title"] == "Titre corrigé"
    finally:
        local.stop()
    with base.client() as client:
        assert client.delete(f"/ResearchStudy/{TRIALS[1]}-example").status_code in (200, 204)
    _sync(tmp_path, base, monkeypatch, "--full")
    assert "1 vanished trials marked closed" in capsys.readouterr().err
    local = Server(tmp_path, workers=1, env={"FHIR_SERVER_AUTH": "off"})
    try:
        with local.client() as client:
            closed = client.get(f"/ResearchStudy/{TRIALS[1]}").json()
            assert closed["status"] == "closed-to-accrual"
    finally:
        local.stop()


def _load(server: Server, body: dict[str, Any], scope: str = "system/*.cruds") -> httpx.Response:
    with httpx.Client(base_url=f"{server.base}/fhir",
                      headers={"Authorization": f"Bearer {server.token(scope)}"}) as client:
        return client.post("/ResearchStudy/$load", json=body,
                           headers={"Content-Type": "application/fhir+json"})


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("secured"), workers=1)
    try:
        yield server
    finally:
        server.stop()


def test_load_operation_stores_trials_idempotently_and_refuses_a_bundle_failing_a_profile(
        secured: Server) -> None:
    bad = example_unit("2022-500009-09-00")
    bad[0]["sponsor"] = {"reference": "Organization/x"}
    good = example_unit("2022-500008-08-00")
    mixed = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in [*good, *bad]]}
    refused = _load(secured, mixed)
    assert refused.status_code == 422
    # (with dom-6 warnings, since issue 20: the IG's examples carry no narrative)
    assert [i["expression"] for i in refused.json()["issue"] if i["severity"] == "error"] == [
        ["Bundle.entry[6].resource.sponsor"]]
    with secured.client() as client:
        assert client.get("/Group/2022-500008-08-00-enrollment-group").status_code == 404
    bundle = {**mixed, "entry": [{"resource": r} for r in good]}
    first = _load(secured, bundle)
    assert first.status_code == 200, first.text
    assert {p["name"]: p["valueInteger"] for p in first.json()["parameter"]} == {
        "created": 6, "updated": 0, "unchanged": 0}
    again = {p["name"]: p["valueInteger"] for p in _load(secured, bundle).json()["parameter"]}
    assert again == {"created": 0, "updated": 0, "unchanged": 6}


def test_load_operation_needs_write_access_to_the_catalogue_and_a_bundle(secured: Server) -> None:
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": r} for r in example_unit("2022-500007-07-00")]}
    refused = _load(secured, bundle, scope="system/ResearchStudy.cu")
    assert refused.status_code == 403 and refused.json()["resourceType"] == "OperationOutcome"
    assert _load(secured, {"resourceType": "Patient"}).status_code == 400
    with secured.client() as client:
        assert client.get("/ResearchStudy/2022-500007-07-00").status_code == 404
