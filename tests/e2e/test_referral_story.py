"""The platform's story over real HTTP, with real tokens from the server's own endpoints: an
EHR pushes a patient; the referring physician records the consents and refers the patient to a
trial; the investigator site system fetches the referral and its frozen record and is refused
the live Patient; it answers; the physician sees the answer; the patient withdraws consent and
the physician loses access; the patient reads who accessed their data; a tampered audit
record is detected."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2 as httpx
import orjson
import pyotp

from fhir_server.app import body_codec
from fhir_server.settings import Settings
from tests.auth.conftest import Backend, es384
from tests.builders import condition, consent, identified_patient, observation
from tests.e2e.conftest import Server

REDIRECT = "https://portal.example.org/callback"
PASSWORD = "correct horse battery staple"
OUTCOMES = "https://oncotrials.example.org/fhir/CodeSystem/referral-outcome"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _cli(data_dir: Path, *args: str) -> None:
    env = {**os.environ, "FHIR_SERVER_DATA_DIR": str(data_dir)}
    done = subprocess.run([sys.executable, "-m", "fhir_server.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def _backend(server: Server, name: str, scope: str, *extra: str) -> Backend:
    client = es384(name)
    jwks = server.data_dir / f"{name}.jwks.json"
    jwks.write_bytes(orjson.dumps(client.jwks()))
    _cli(server.data_dir, "client", "add-backend", name, "--scope", scope, "--jwks", str(jwks), *extra)
    return client


def _backend_token(server: Server, client: Backend, scope: str) -> dict[str, str]:
    token_url = f"{server.base}/auth/token"
    issued = httpx.post(token_url, data={
        "grant_type": "client_credentials", "scope": scope, "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": client.assertion(audience=token_url)})
    assert issued.status_code == 200, issued.text
    return {"Authorization": f"Bearer {issued.json()['access_token']}"}


def _user_token(server: Server, username: str, scope: str) -> dict[str, str]:
    """Sign in through the login, second-factor and consent pages; exchange the code."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    with httpx.Client(base_url=server.base) as browser:
        params = {"response_type": "code", "client_id": "portal", "redirect_uri": REDIRECT,
                  "scope": scope, "state": "st", "aud": f"{server.base}/fhir",
                  "code_challenge": challenge, "code_challenge_method": "S256"}
        page = browser.get(f"/auth/authorize?{urlencode(params)}")
        assert page.status_code == 200, page.text
        found = re.search(r'name="pending" value="([^"]+)"', page.text)
        assert found is not None
        pending = found.group(1)
        second = browser.post("/auth/login", data={"pending": pending, "username": username,
                                                   "password": PASSWORD})
        assert second.status_code == 200, second.text
        secret = re.search(r'id="secret">([A-Z2-7]+)<', second.text)
        assert secret is not None, "first sign-in enrols the second factor"
        totp = pyotp.TOTP(secret.group(1))
        approve = browser.post("/auth/totp", data={"pending": pending, "code": totp.now()})
        assert approve.status_code == 200, approve.text
        back = browser.post("/auth/consent", data={"pending": pending, "decision": "approve"})
        assert back.status_code == 302, back.text
        code = parse_qs(urlsplit(back.headers["location"]).query)["code"][0]
        issued = browser.post("/auth/token", data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "client_id": "portal", "code_verifier": verifier})
        assert issued.status_code == 200, issued.text
        return {"Authorization": f"Bearer {issued.json()['access_token']}"}


def _put(fhir: httpx.Client, headers: dict[str, str], resource: dict[str, Any]) -> None:
    response = fhir.put(f"/{resource['resourceType']}/{resource['id']}", json=resource, headers=headers)
    assert response.status_code in (200, 201), response.text


def _ehr_push(fhir: httpx.Client, ehr: dict[str, str]) -> str:
    """The hospital pushes the patient's record as a transaction; the patient's id."""
    nir = "285037512345688"
    entries: list[dict[str, Any]] = [
        {"fullUrl": "urn:uuid:0b8e6f3c-0000-4000-8000-000000000001",
         "resource": identified_patient(nir),
         "request": {"method": "POST", "url": "Patient",
                     "ifNoneExist": f"identifier=urn:oid:1.2.250.1.213.1.4.8|{nir}"}},
        {"resource": condition("urn:uuid:0b8e6f3c-0000-4000-8000-000000000001"),
         "request": {"method": "POST", "url": "Condition"}},
        {"resource": observation("urn:uuid:0b8e6f3c-0000-4000-8000-000000000001"),
         "request": {"method": "POST", "url": "Observation"}},
    ]
    pushed = fhir.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": entries},
                       headers=ehr)
    assert pushed.status_code == 200, pushed.text
    return str(pushed.json()["entry"][0]["response"]["location"].split("/")[1])


def test_referral_story(tmp_path: Path) -> None:
    server = Server(tmp_path, workers=1)
    try:
        _cli(tmp_path, "client", "add-app", "portal", "--redirect-uri", REDIRECT, "--scope",
             "openid fhirUser launch/patient patient/*.cruds user/*.cruds")
        ehr_client = _backend(server, "ehr-chu", "system/*.cruds")
        site_client = _backend(server, "site-bordeaux", "system/*.rs system/Communication.c",
                               "--acts-for", "CareTeam/onco-bordeaux")
        ehr = _backend_token(server, ehr_client, "system/*.cruds")
        fhir = httpx.Client(base_url=f"{server.base}/fhir", timeout=30)

        # The EHR pushes the practitioners, the trial's team and study, then the patient.
        _put(fhir, ehr, {"resourceType": "Practitioner", "id": "dr-martin", "active": True})
        _put(fhir, ehr, {"resourceType": "CareTeam", "id": "onco-bordeaux", "status": "active"})
        _put(fhir, ehr, {"resourceType": "ResearchStudy", "id": "her2-phase2", "status": "active",
                         "title": "HER2+ metastatic breast cancer, phase II"})
        patient = _ehr_push(fhir, ehr)
        _cli(tmp_path, "user", "add", "dr", "--fhir-user", "Practitioner/dr-martin", "--password", PASSWORD)
        _cli(tmp_path, "user", "add", "helene", "--fhir-user", f"Patient/{patient}", "--password", PASSWORD)

        # The physician records the patient's two agreements, then refers.
        physician = _user_token(server, "dr", "openid fhirUser user/*.cruds")
        assert fhir.get(f"/Patient/{patient}", headers=physician).status_code == 404
        hosting = fhir.post("/Consent", json=consent(patient, actor="Practitioner/dr-martin"),
                            headers=physician)
        assert hosting.status_code == 201, hosting.text
        # The record exists already: the agreement is proposed until the patient accepts it.
        assert hosting.json()["status"] == "proposed"
        assert fhir.get(f"/Patient/{patient}", headers=physician).status_code == 404
        me = _user_token(server, "helene", "openid fhirUser launch/patient patient/*.cruds")
        accepted = {k: v for k, v in hosting.json().items() if k != "meta"} | {"status": "active"}
        assert fhir.put(f"/Consent/{accepted['id']}", json=accepted, headers=me).status_code == 200
        assert fhir.get(f"/Patient/{patient}", headers=physician).status_code == 200
        refer = {"resourceType": "Parameters", "parameter": [
            {"name": "patient", "valueReference": {"reference": f"Patient/{patient}"}},
            {"name": "recipient", "valueReference": {"reference": "CareTeam/onco-bordeaux"}}]}
        refused = fhir.post("/ResearchStudy/her2-phase2/$refer", json=refer, headers=physician)
        assert refused.status_code == 403  # no sharing agreement yet
        sharing = fhir.post("/Consent", json=consent(patient, "research"), headers=physician)
        assert sharing.status_code == 201, sharing.text
        sent = fhir.post("/ResearchStudy/her2-phase2/$refer", json=refer, headers=physician)
        assert sent.status_code == 201, sent.text
        referral = sent.json()

        # The investigator site system fetches its new referrals with their frozen records.
        site = _backend_token(server, site_client, "system/*.rs system/Communication.c")
        inbox = fhir.get("/Communication", params={
            "recipient": "CareTeam/onco-bordeaux", "status": "in-progress",
            "_include": "Communication:payload"}, headers=site).json()
        by_mode = {e["search"]["mode"]: e["resource"] for e in inbox["entry"]}
        assert by_mode["match"]["id"] == referral["id"]
        frozen = by_mode["include"]
        assert frozen["resourceType"] == "Bundle" and frozen["type"] == "collection"
        assert {e["resource"]["resourceType"] for e in frozen["entry"]} == {"Patient", "Condition", "Observation"}
        assert fhir.get(f"/Patient/{patient}", headers=site).status_code == 404
        assert fhir.get("/Observation", headers=site).json().get("entry") is None

        # It answers; the physician sees the answer and the referral's new state.
        answer = {"resourceType": "Communication", "status": "completed",
                  "inResponseTo": [{"reference": f"Communication/{referral['id']}"}],
                  "reasonCode": [{"coding": [{"system": OUTCOMES, "code": "preselected"}]}],
                  "payload": [{"contentString": "Screening visit proposed on 14 December."}]}
        answered = fhir.post("/Communication", json=answer, headers=site)
        assert answered.status_code == 201, answered.text
        thread = fhir.get("/Communication", params={
            "in-response-to": f"Communication/{referral['id']}"}, headers=physician).json()
        assert [e["resource"]["reasonCode"][0]["coding"][0]["code"] for e in thread["entry"]] == ["preselected"]
        summary = fhir.get("/ResearchStudy/her2-phase2/$referral-summary", headers=site).json()
        counts = {p["part"][0]["valueCoding"]["code"]: p["part"][1]["valueInteger"]
                  for p in summary["parameter"] if p["name"] == "outcome"}
        assert counts["preselected"] == 1 and counts["referred"] == 0

        # The patient withdraws their consent: the physician loses access at once.
        mine = fhir.get(f"/Consent/{hosting.json()['id']}", headers=me).json()
        withdrawn = fhir.put(f"/Consent/{mine['id']}", json={**mine, "status": "inactive"}, headers=me)
        assert withdrawn.status_code == 200, withdrawn.text
        assert fhir.get(f"/Patient/{patient}", headers=physician).status_code == 404
        assert fhir.get("/Observation", headers=physician).json().get("entry") is None

        # The patient reads who accessed their data: the physician, the site system, when, how.
        trail = fhir.get("/AuditEvent", params={"patient": f"Patient/{patient}", "_count": "200"},
                         headers=me).json()
        who = {e["resource"]["agent"][0]["who"].get("reference") or e["resource"]["agent"][0]["altId"]
               for e in trail["entry"]}
        assert {"Practitioner/dr-martin", "site-bordeaux", "ehr-chu"} <= who
        assert all("recorded" in e["resource"] for e in trail["entry"])
        fhir.close()
    finally:
        server.stop()

    # A changed audit record is detected.
    _cli(tmp_path, "audit", "verify")
    codec = body_codec(Settings(data_dir=tmp_path))  # changed by someone holding the keys
    conn = sqlite3.connect(tmp_path / "audit.db")
    id, body = conn.execute("SELECT id, body FROM history ORDER BY rowid LIMIT 1").fetchone()
    event = orjson.loads(codec.open("AuditEvent", id, 1, body))
    event["outcome"] = "0" if event.get("outcome") != "0" else "4"
    resealed = codec.seal("AuditEvent", id, 1, orjson.dumps(event), ())
    conn.execute("UPDATE history SET body = ? WHERE id = ?", (resealed, id))
    conn.commit()
    conn.close()
    env = {**os.environ, "FHIR_SERVER_DATA_DIR": str(tmp_path)}
    verify = subprocess.run([sys.executable, "-m", "fhir_server.cli", "audit", "verify"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert verify.returncode == 1 and "was changed" in verify.stdout
