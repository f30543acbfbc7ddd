"""The trial story over real HTTP (uvicorn), with real tokens from the server's own endpoints:
a catalogue system loads the ECLAIRE example trial; a curator drafts its eligibility and an
administrator approves it; a reload of the changed trial keeps that curation; the physician's
patient, pushed by the EHR with their agreements, is matched eligible with evidence; the
physician refers; the investigator site system fetches the referral; the investigator's
inverse `$match` gives counts only (docs/matching.md, docs/catalogue.md, docs/referrals.md)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import httpx2 as httpx

from fhir_server import clock
from fhir_server.trials.catalogue_sites import with_site_status
from tests.builders import consent
from tests.e2e.conftest import Server
from tests.e2e.test_referral_story import (PASSWORD, REDIRECT, _backend, _backend_token, _cli, _ehr_push,
                                           _put, _user_token)
from tests.trials.eclaire import example_unit

TRIAL = "2022-500014-26-00"
SITE = f"Location/{TRIAL}-site-0"
TEAM = "CareTeam/onco-bordeaux"
CRITERIA = "Inclusion criteria:\n- Women\n- Breast cancer\n- Adults 18 years or older"


def _catalogue(today: date, title: str | None = None) -> dict[str, Any]:
    """The IG example trial as a $load Bundle: its first site recruiting (confirmed `today`)
    and managed by the CHU whose team receives referrals."""
    unit = example_unit(TRIAL, title=title)
    unit[0] = with_site_status(unit[0], SITE, "recruiting", today)
    for resource in unit:
        if f"{resource['resourceType']}/{resource['id']}" == SITE:
            resource["managingOrganization"] = {"reference": "Organization/chu-bordeaux"}
    unit.append({"resourceType": "Organization", "id": "chu-bordeaux", "name": "CHU de Bordeaux"})
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in unit]}


def _counts(parameters: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["valueInteger"] for p in parameters["parameter"] if "valueInteger" in p}


def _parts(extension: dict[str, Any], url: str) -> list[Any]:
    """The values of the sub-extensions `url` of `extension`."""
    return [next(v for k, v in e.items() if k.startswith("value"))
            for e in extension["extension"] if e["url"] == url]


def _matched(fhir: httpx.Client, headers: dict[str, str], patient: str) -> list[dict[str, Any]]:
    response = fhir.post("/ResearchStudy/$match", headers=headers, json={
        "resourceType": "Parameters", "parameter": [
            {"name": "patient", "valueReference": {"reference": f"Patient/{patient}"}}]})
    assert response.status_code == 200, response.text
    return [e for e in response.json()["entry"] if e["search"]["mode"] == "match"]


def test_trial_story(tmp_path: Path) -> None:
    server = Server(tmp_path, workers=1)
    try:
        _cli(tmp_path, "client", "add-app", "portal", "--redirect-uri", REDIRECT, "--scope",
             "openid fhirUser launch/patient patient/*.cruds user/*.cruds")
        ehr = _backend_token(server, _backend(server, "ehr-chu", "system/*.cruds"), "system/*.cruds")
        site_client = _backend(server, "site-bordeaux", "system/*.rs system/Communication.c",
                               "--acts-for", TEAM)
        fhir = httpx.Client(base_url=f"{server.base}/fhir", timeout=60)
        today = clock.now().date()

        # The catalogue system loads the trial; a curator drafts its criteria, a person approves.
        loaded = fhir.post("/ResearchStudy/$load", json=_catalogue(today), headers=ehr)
        assert loaded.status_code == 200, loaded.text
        assert _counts(loaded.json())["created"] == 7
        drafted = fhir.post(f"/ResearchStudy/{TRIAL}/$draft-criteria", headers=ehr, json={
            "resourceType": "Parameters", "parameter": [{"name": "text", "valueString": CRITERIA}]})
        assert drafted.status_code == 201, drafted.text
        assert [c["code"]["text"] for c in drafted.json()["characteristic"]] == [
            "Women", "Breast cancer", "Adults 18 years or older"]
        _cli(tmp_path, "user", "add", "curator", "--fhir-user", "Practitioner/curator",
             "--password", PASSWORD, "--admin")
        curator = _user_token(server, "curator", "openid fhirUser user/*.cruds")
        group = drafted.json()["id"]
        approved = fhir.post(f"/Group/{group}/$approve-criteria", headers=curator)
        assert approved.status_code == 200, approved.text

        # The source changes the trial's title: the reload keeps the approved criteria.
        reloaded = fhir.post("/ResearchStudy/$load", json=_catalogue(today, "A new title"), headers=ehr)
        assert _counts(reloaded.json()) == {"created": 0, "updated": 1, "unchanged": 6}
        study = fhir.get(f"/ResearchStudy/{TRIAL}", headers=ehr).json()
        assert study["title"] == "A new title" and {"reference": f"Group/{group}"} in study["enrollment"]

        # The EHR pushes the physician, the trial's team and the patient with data.
        _put(fhir, ehr, {"resourceType": "Practitioner", "id": "dr-martin", "active": True})
        _put(fhir, ehr, {"resourceType": "CareTeam", "id": "onco-bordeaux", "status": "active",
                         "managingOrganization": [{"reference": "Organization/chu-bordeaux"}]})
        patient = _ehr_push(fhir, ehr)
        _cli(tmp_path, "user", "add", "dr", "--fhir-user", "Practitioner/dr-martin", "--password", PASSWORD)
        _cli(tmp_path, "user", "add", "helene", "--fhir-user", f"Patient/{patient}", "--password", PASSWORD)
        physician = _user_token(server, "dr", "openid fhirUser user/*.cruds")
        hosting = fhir.post("/Consent", json=consent(patient, actor="Practitioner/dr-martin"), headers=physician)
        assert hosting.status_code == 201, hosting.text
        me = _user_token(server, "helene", "openid fhirUser launch/patient patient/*.cruds")
        accepted = {k: v for k, v in hosting.json().items() if k != "meta"} | {"status": "active"}
        assert fhir.put(f"/Consent/{accepted['id']}", json=accepted, headers=me).status_code == 200
        sharing = fhir.post("/Consent", json=consent(patient, "research"), headers=physician)
        assert sharing.status_code == 201, sharing.text

        # $match: the trial is eligible, each criterion met with version-pinned evidence.
        [entry] = _matched(fhir, physician, patient)
        assert entry["resource"]["id"] == TRIAL
        result, grade = entry["search"]["extension"]
        assert _parts(result, "verdict")[0]["code"] == "eligible" and grade["valueCode"] == "probable"
        assert _parts(result, "site") == [{"reference": SITE}]
        assert _parts(result, "criteria") == [{"reference": f"Group/{group}/_history/2"}]  # as approved
        criteria = {_parts(c, "text")[0]: c for c in result["extension"] if c["url"] == "criterion"}
        assert sorted(criteria) == ["Adults 18 years or older", "Breast cancer", "Women"]
        for text, criterion in criteria.items():
            assert _parts(criterion, "verdict")[0]["code"] == "met", text
            evidence = [e["reference"] for e in _parts(criterion, "evidence")]
            kind = "Condition" if text == "Breast cancer" else "Patient"
            assert len(evidence) == 1 and evidence[0].startswith(f"{kind}/") and "/_history/" in evidence[0], text

        # The physician refers; the investigator site system fetches the referral.
        refer = {"resourceType": "Parameters", "parameter": [
            {"name": "patient", "valueReference": {"reference": f"Patient/{patient}"}},
            {"name": "recipient", "valueReference": {"reference": TEAM}}]}
        sent = fhir.post(f"/ResearchStudy/{TRIAL}/$refer", json=refer, headers=physician)
        assert sent.status_code == 201, sent.text
        site = _backend_token(server, site_client, "system/*.rs system/Communication.c")
        inbox = fhir.get("/Communication", params={"recipient": TEAM, "status": "in-progress",
                                                   "_include": "Communication:payload"}, headers=site).json()
        by_mode = {e["search"]["mode"]: e["resource"] for e in inbox["entry"]}
        assert by_mode["match"]["id"] == sent.json()["id"]
        assert by_mode["match"]["about"] == [{"reference": f"ResearchStudy/{TRIAL}"}]
        assert by_mode["include"]["type"] == "collection"
        assert fhir.get(f"/Patient/{patient}", headers=site).status_code == 404

        # The investigator's inverse $match: counts only, no identity, no record.
        counted = fhir.post(f"/ResearchStudy/{TRIAL}/$match", headers=site,
                            json={"resourceType": "Parameters"})
        assert counted.status_code == 200, counted.text
        body = counted.json()
        assert body["resourceType"] == "Parameters"
        figures = _counts(body)
        assert set(figures) == {"population", "pruned", "evaluated", "eligible", "undetermined"}
        assert all(n % 5 == 0 for n in figures.values())  # disclosure control
        sites = [p for p in body["parameter"] if p["name"] == "site"]
        assert {"name": "site", "valueReference": {"reference": SITE}} in [q for p in sites for q in p["part"]]
        text = json.dumps(body)
        assert patient not in text and "Patient/" not in text and "Condition/" not in text
        assert not any(p["name"] == "candidate" for p in body["parameter"])  # no pre-screening consent
        fhir.close()
    finally:
        server.stop()
