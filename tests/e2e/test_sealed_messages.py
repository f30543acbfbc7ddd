"""Sealed message end to end over real uvicorn (two workers), with real tokens: the referring
physician's app enrols its key, fetches the investigators' keys, seals a referral note (JWE,
RFC 7516) to them and to itself, and refers; the investigator site system (a backend client
whose registered JWKS holds an encryption key) fetches the referral and opens the note with
its private key. The patient's own reads and every file of the server's data directory
(SQLite databases with their WAL, the log) never show the plaintext (docs/sealed-messages.md)."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx2 as httpx
import orjson
from joserfc.jwk import ECKey

from fhir_server.crypto.seal import open_sealed, seal
from tests.auth.conftest import Backend, es384
from tests.builders import consent
from tests.e2e.conftest import Server
from tests.e2e.test_referral_story import REDIRECT, _backend, _backend_token, _cli, _ehr_push, _put, _user_token

MARKER = "Sealed-Marker: HER2 3+ relapse, ECOG 1 (8f3q)"
TEAM = "CareTeam/onco-bordeaux"


def _forms(text: str) -> list[bytes]:
    """The marker as the server could hold it: UTF-8, JSON-escaped, and base64 at each of the
    three alignments (inside an attachment's data)."""
    raw = text.encode()
    encoded = [base64.b64encode(b"x" * shift + raw)[4 if shift else 0:][:-4] for shift in range(3)]
    return [raw, orjson.dumps(text)[1:-1], *encoded]


def _no_marker(data: bytes) -> bool:
    return not any(form in data for form in _forms(MARKER))


def test_sealed_referral_is_read_by_its_recipients_only(tmp_path: Path) -> None:
    server = Server(tmp_path, workers=2)
    try:
        _cli(tmp_path, "client", "add-app", "portal", "--redirect-uri", REDIRECT, "--scope",
             "openid fhirUser launch/patient patient/*.cruds user/*.cruds")
        ehr_client = _backend(server, "ehr-chu", "system/*.cruds")
        # The site system signs its assertions with one key and opens sealed content with
        # another (use enc); only the public halves are registered.
        site_client = es384("site-bordeaux")
        site_enc = ECKey.generate_key("P-256", {"kid": "bordeaux-enc-1", "use": "enc"})
        (tmp_path / "site.jwks.json").write_bytes(orjson.dumps(
            {"keys": [*site_client.jwks()["keys"], site_enc.as_dict(private=False)]}))
        _cli(tmp_path, "client", "add-backend", "site-bordeaux", "--scope",
             "system/*.rs system/Communication.c", "--jwks", str(tmp_path / "site.jwks.json"),
             "--acts-for", TEAM)

        with (httpx.Client(base_url=f"{server.base}/fhir", timeout=30) as fhir,
              httpx.Client(base_url=f"{server.base}/keys", timeout=30) as keys):
            _story(server, fhir, keys, site_client, site_enc, ehr_client)
    finally:
        server.stop()
    # Nor does any file the server wrote: databases, their WAL and shared memory, the log.
    written = [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".jwks.json")]
    assert any(p.name == "fhir.db" for p in written)
    assert [p.name for p in written if not _no_marker(p.read_bytes())] == []


def _story(server: Server, fhir: httpx.Client, keys: httpx.Client, site_client: Backend,
           site_enc: ECKey, ehr_client: Backend) -> None:
    """Refer with a sealed note; the site system opens it; the patient never sees it."""
    ehr = _backend_token(server, ehr_client, "system/*.cruds")
    _put(fhir, ehr, {"resourceType": "Practitioner", "id": "dr-martin", "active": True})
    _put(fhir, ehr, {"resourceType": "CareTeam", "id": "onco-bordeaux", "status": "active"})
    _put(fhir, ehr, {"resourceType": "ResearchStudy", "id": "her2-phase2", "status": "active"})
    patient = _ehr_push(fhir, ehr)
    for scope in ("patient-privacy", "research"):  # the EHR records the patient's agreements
        agreement = consent(patient, scope, actor="Practitioner/dr-martin" if scope != "research" else None)
        assert fhir.post("/Consent", json=agreement, headers=ehr).status_code == 201
    _cli(server.data_dir, "user", "add", "dr", "--fhir-user", "Practitioner/dr-martin", "--password",
         "correct horse battery staple")
    _cli(server.data_dir, "user", "add", "helene", "--fhir-user", f"Patient/{patient}", "--password",
         "correct horse battery staple")

    # The physician's app enrols its key and seals the note to itself and the CareTeam.
    physician = _user_token(server, "dr", "openid fhirUser user/*.cruds")
    app_key = ECKey.generate_key("P-256", {"use": "enc"})
    enrolled = keys.put("/me", content=orjson.dumps(app_key.as_dict(private=False)),
                        headers={**physician, "Content-Type": "application/json"})
    assert enrolled.status_code == 200, enrolled.text
    own = keys.get("/me", headers=physician).json()["keys"]
    team = keys.get(f"/{TEAM}", headers=physician).json()["keys"]
    assert [k["kid"] for k in team] == ["bordeaux-enc-1"]
    refer = {"resourceType": "Parameters", "parameter": [
        {"name": "patient", "valueReference": {"reference": f"Patient/{patient}"}},
        {"name": "recipient", "valueReference": {"reference": TEAM}}]}

    def sealed_note(jwks: list[dict[str, object]]) -> dict[str, object]:
        jwe = seal(MARKER, jwks)
        return {"name": "sealedNote", "valueAttachment": {
            "contentType": "application/jose+json", "data": base64.b64encode(jwe.encode()).decode()}}

    refused = fhir.post("/ResearchStudy/her2-phase2/$refer", headers=physician,
                        json={**refer, "parameter": [*refer["parameter"], sealed_note(own)]})
    assert refused.status_code == 400 and "bordeaux-enc-1" in refused.text
    sent = fhir.post("/ResearchStudy/her2-phase2/$refer", headers=physician,
                     json={**refer, "parameter": [*refer["parameter"], sealed_note(own + team)]})
    assert sent.status_code == 201, sent.text
    assert _no_marker(sent.content)

    # The site system fetches its referral and opens the note; the physician's app can too.
    site = _backend_token(server, site_client, "system/*.rs system/Communication.c")
    inbox = fhir.get("/Communication", params={"recipient": TEAM, "status": "in-progress"},
                     headers=site).json()
    (referral,) = [e["resource"] for e in inbox["entry"]]
    assert referral["id"] == sent.json()["id"]
    (attachment,) = [p["contentAttachment"] for p in referral["payload"] if "contentAttachment" in p]
    jwe = base64.b64decode(attachment["data"])
    assert open_sealed(jwe, site_enc.as_dict(private=True)) == MARKER.encode()
    assert open_sealed(jwe, app_key.as_dict(private=True)) == MARKER.encode()

    # The patient's own reads never show it.
    me = _user_token(server, "helene", "openid fhirUser launch/patient patient/*.cruds")
    for path, params in (("/Communication", {}), ("/Communication", {"subject": f"Patient/{patient}"}),
                         (f"/Communication/{referral['id']}", {}), ("/Bundle", {}),
                         ("/AuditEvent", {"patient": f"Patient/{patient}", "_count": "200"}),
                         (f"/Patient/{patient}/Communication", {})):
        read = fhir.get(path, params=params, headers=me)
        assert read.status_code in (200, 404), (path, read.text)
        assert _no_marker(read.content), path
