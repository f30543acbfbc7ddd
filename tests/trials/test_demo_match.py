"""The demo data set tells the matching story (README, `bin/demo`; docs/matching.md): the demo
patient's `$match`, stored and anonymous, ranks the breast trial with every criterion
explained, one datum left unknown, and the nearest recruiting site; then the two trials she
cannot join, each with the criterion not met and its evidence: the trial an exclusion rules
out (evaluated), and the lung trial (pruned by the index, explained because listed)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from fhir_server import clock
from fhir_server.app import create_app
from fhir_server.settings import Settings
from tests.builders import consent
from tests.http.helpers import send
from tests.store.conftest import STORES

# Long after the site statuses written in demo-data.json went stale (90 days): the demo
# confirms them on the day it is loaded.
LOADED = datetime(2028, 3, 1, 9, tzinfo=UTC)
HELENE = "Patient/helene-dupont"
MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"  # $match sets it, the inverse not


@pytest.fixture(params=["sqlite", "mongodb-double"])
def demo(request: pytest.FixtureRequest, tmp_path: Path, signing_keys: bytes) -> Iterator[TestClient]:
    """The server as `bin/demo` starts it (demo data, authentication off), on each store, its
    clock stopped at LOADED for one test (longer, it would date the other tests' tokens)."""
    (tmp_path / "signing-keys.json").write_bytes(signing_keys)
    settings = Settings(data_dir=tmp_path, base_url="http://testserver/fhir", auth="off",
                        demo_data=True, figures_daily=False)
    store = None if request.param == "sqlite" else STORES[request.param](tmp_path)
    with clock.frozen(LOADED), TestClient(create_app(settings, store)) as client:
        yield client


def _match(client: TestClient, parameter: dict[str, Any]) -> dict[str, Any]:
    body = {"resourceType": "Parameters", "parameter": [parameter]}
    response = send(client, "POST", "/fhir/ResearchStudy/$match", body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _parts(extension: list[dict[str, Any]]) -> dict[str, Any]:
    """An extension's parts as {url: value}, nested parts as their own list."""
    return {p["url"]: next(v for k, v in p.items() if k.startswith("value") or k == "extension")
            for p in extension}


def _story(bundle: dict[str, Any]) -> dict[str, Any]:
    """What a newcomer reads: each listed trial's verdict, score, site and criteria, and the
    outcome's counts."""
    listed, outcome = [], []
    for entry in bundle["entry"]:
        if entry["search"]["mode"] == "outcome":
            outcome = [issue["diagnostics"] for issue in entry["resource"]["issue"]]
            continue
        result = _parts(entry["search"]["extension"][0]["extension"])
        criteria = [_parts(c["extension"]) for c in entry["search"]["extension"][0]["extension"]
                    if c["url"] == "criterion"]
        listed.append({
            "id": entry["resource"]["id"], "score": entry["search"]["score"],
            "verdict": result["verdict"]["code"], "site": result.get("site", {}).get("reference"),
            "distance": result.get("distance", {}).get("value"), "confirmed": result.get("siteStatusDate"),
            "grade": next((e["valueCode"] for e in entry["search"]["extension"] if e["url"] == MATCH_GRADE), None),
            "criteria": [(c["text"], c["verdict"]["code"], c.get("evidence", {}).get("reference"),
                          c.get("missing")) for c in criteria]})
    return {"listed": listed, "outcome": outcome}


def _demo_data() -> list[dict[str, Any]]:
    """The entries of demo-data.json."""
    return list(orjson.loads(files("fhir_server.demo").joinpath("demo-data.json").read_bytes())["entry"])


def _helene_entries() -> list[dict[str, Any]]:
    """The demo patient's record: her Patient and the resources about her."""
    return [e for e in _demo_data()
            if e["fullUrl"] == HELENE or e["resource"].get("subject", {}).get("reference") == HELENE]


def _expected(pinned: str) -> list[tuple[str, str, str | None, str | None]]:
    """The breast trial's criteria for Hélène, evidence cited as `Type/id` + `pinned`."""
    def cited(reference: str) -> str:
        return reference + pinned

    return [
        ("Âge ≥ 18 ans", "met", cited(HELENE), None),
        ("Femmes", "met", cited(HELENE), None),
        ("Cancer du sein (CIM-10 C50)", "met", cited("Condition/cond-helene-breast"), None),
        ("Tumeur HER2 positive", "met", cited("Observation/obs-helene-her2"), None),
        ("Indice de performance ECOG 0 ou 1", "met", cited("Observation/obs-helene-ecog"), None),
        # an exclusion shown absent by the recorded cM0
        ("Maladie métastatique", "met", cited("Observation/obs-helene-tnm-m"), None),
        # no echocardiography recorded: a missing datum is unknown, never not met
        ("Fraction d'éjection ventriculaire gauche ≥ 50 %", "unknown", None, "Observation LOINC 10230-1"),
        ("Fonctions hématologique, hépatique et rénale adéquates", "unknown", None,
         "a person's assessment (free-text criterion, never evaluated automatically)"),
    ]


@pytest.mark.parametrize("form", ["patient", "bundle"])
def test_the_demo_patient_gets_the_breast_trial_explained_first(demo: TestClient, form: str) -> None:
    parameter = ({"name": "patient", "valueReference": {"reference": HELENE}} if form == "patient"
                 else {"name": "bundle", "resource": {"resourceType": "Bundle", "type": "collection",
                                                      "entry": _helene_entries()}})
    story = _story(_match(demo, parameter))
    breast, anti_her2, lung = story["listed"]
    assert (breast["id"], breast["verdict"], breast["score"], breast["grade"]) == (
        "essai-sein-her2", "undetermined", 0.75, "possible")
    assert breast["criteria"] == _expected("/_history/1" if form == "patient" else "")
    # Lyon (Hélène lives in 69007), not Bordeaux; confirmed recruiting on the day of loading
    assert breast["site"] == "Location/site-lyon"
    assert 0 < breast["distance"] < 10
    assert breast["confirmed"] == "2028-03-01"
    # Then the two she cannot join, each with the criterion not met and what shows it.
    cited = _cited(form)
    assert (anti_her2["id"], anti_her2["verdict"], anti_her2["score"], anti_her2["grade"]) == (
        "essai-sein-naif-anti-her2", "ineligible", 0, "certainly-not")
    assert _not_met(anti_her2) == [
        ("Traitement anti-HER2 antérieur (anticorps monoclonal, ATC L01FD)",
         cited("MedicationStatement/med-helene-trastuzumab"))]
    assert (lung["id"], lung["verdict"], lung["score"], lung["grade"]) == (
        "essai-poumon-immuno", "ineligible", 0, "certainly-not")
    assert _not_met(lung) == [("Cancer bronchique (CIM-10 C34)", cited("Condition/cond-helene-breast"))]
    assert story["outcome"] == [
        "Trials: 2 evaluated, 1 proven ineligible by the index without evaluation (an inclusion "
        "diagnosis the patient's recorded diagnoses miss), 1 evaluated ineligible; 0 ineligible "
        "trials not listed (ranked after the last one listed: raise 'count', up to 200, to see them)."]


def _cited(form: str) -> Any:
    """How an entry of Hélène's record is cited: version-pinned when stored, else its fullUrl."""
    return (lambda reference: reference + "/_history/1") if form == "patient" else (lambda reference: reference)


def _not_met(listed: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(text, evidence) for text, verdict, evidence, _ in listed["criteria"] if verdict == "not-met"]


def test_the_lung_trial_is_the_lung_patients(demo: TestClient) -> None:
    story = _story(_match(demo, {"name": "patient", "valueReference": {"reference": "Patient/jean-moreau"}}))
    lung, *others = story["listed"]
    assert [(o["verdict"], o["grade"]) for o in others] == [("ineligible", "certainly-not")] * 2
    assert (lung["id"], lung["verdict"], lung["score"]) == ("essai-poumon-immuno", "undetermined", 0.75)
    assert (lung["site"], lung["confirmed"]) == ("Location/site-bordeaux", "2028-03-01")
    assert [c[:2] for c in lung["criteria"]] == [
        ("Âge ≥ 18 ans", "met"), ("Cancer bronchique (CIM-10 C34)", "met"),
        ("Indice de performance ECOG 0 ou 1", "met"),
        ("Immunothérapie anti-PD-1 / PD-L1 antérieure", "unknown")]  # never proven absent by silence


def test_a_referring_physician_finds_the_demo_patient_for_the_breast_trial(
        tmp_path: Path, signing_keys: bytes) -> None:
    """The other way round (README: sign in as Dr Claire Martin, push Hélène's two Consents as
    the EHR): the breast trial's inverse `$match` lists her, the lung trial's counts her out."""
    (tmp_path / "signing-keys.json").write_bytes(signing_keys)
    settings = Settings(data_dir=tmp_path, base_url="http://testserver/fhir", demo_data=True,
                        figures_daily=False)
    with TestClient(create_app(settings)) as client:
        def bearer(**claims: str) -> dict[str, str]:
            issued = client.app.state.tokens.issue(client_id="portal", **claims)  # type: ignore[attr-defined]
            return {"Authorization": f"Bearer {issued['access_token']}"}

        ehr = bearer(subject="ehr", scope="system/*.cruds")
        claire = bearer(subject="claire", scope="user/*.cruds", fhir_user="Practitioner/dr-martin")
        for id, body in (("helene-privacy", consent("helene-dupont", actor="Practitioner/dr-martin")),
                         ("helene-research", consent("helene-dupont", "research"))):
            assert send(client, "PUT", f"/fhir/Consent/{id}", {**body, "id": id}, **ehr).status_code == 201

        def inverse(study: str) -> dict[str, Any]:
            response = send(client, "POST", f"/fhir/ResearchStudy/{study}/$match",
                            {"resourceType": "Parameters"}, **claire)
            assert response.status_code == 200, response.text
            return _story(response.json())

        [helene] = inverse("essai-sein-her2")["listed"]
        assert (helene["id"], helene["verdict"], helene["score"]) == ("helene-dupont", "undetermined", 0.75)
        assert helene["criteria"] == _expected("/_history/1")
        assert helene["site"] == "Location/site-lyon"
        lung = inverse("essai-poumon-immuno")
        assert lung["listed"] == [] and "1 proven ineligible by the index" in lung["outcome"][0]
