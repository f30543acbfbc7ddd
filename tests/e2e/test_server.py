"""End to end over real HTTP against a real uvicorn process with two worker processes.

Covers the REST core as a client sees it, races between clients (http.html#concurrency,
#ccreate), graceful shutdown and the demo start-up.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


from tests.builders import INS_NIR, identified_patient, patient
from tests.e2e.conftest import Server

FHIR = {"Content-Type": "application/fhir+json"}


def test_crud_round_trip(server: Server) -> None:
    with server.client() as http:
        assert http.get("/metadata").json()["fhirVersion"] == "4.0.1"
        created = http.post("/Patient", content=json.dumps(patient()), headers=FHIR)
        assert created.status_code == 201
        assert created.headers["location"].startswith(f"{server.base}/fhir/Patient/")
        id = created.json()["id"]
        assert http.get(f"/Patient/{id}").json() == created.json()
        assert http.delete(f"/Patient/{id}").status_code == 204
        assert http.get(f"/Patient/{id}").status_code == 410
        assert http.get("/healthz", headers={"X-Request-ID": "abc-1"}).headers["x-request-id"] == "abc-1"


def test_racing_conditional_creates_make_one_resource(server: Server) -> None:
    nir = "155113301234506"
    headers = {**FHIR, "If-None-Exist": f"identifier={INS_NIR}|{nir}"}
    body = json.dumps(identified_patient(nir))

    def push(_: int) -> int:
        with server.client(timeout=30) as http:
            return http.post("/Patient", content=body, headers=headers).status_code

    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(push, range(24)))
    assert statuses.count(201) == 1, statuses
    assert statuses.count(200) == 23
    with server.client() as http:
        history = http.get("/Patient/_history", params={"_count": 100}).json()
    ids = {e["resource"]["id"] for e in history["entry"]
           if "resource" in e and e["resource"].get("identifier", [{}])[0].get("value") == nir}
    assert len(ids) == 1


def test_racing_version_aware_updates_one_wins(server: Server) -> None:
    with server.client() as http:
        http.put("/Patient/race", content=json.dumps(patient(id="race")), headers=FHIR)

    def update(n: int) -> int:
        body = json.dumps(patient(id="race", gender="male" if n % 2 else "other"))
        with server.client(timeout=30) as http:
            return http.put("/Patient/race", content=body,
                            headers={**FHIR, "If-Match": 'W/"1"'}).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(update, range(8)))
    assert statuses.count(200) == 1, statuses
    assert statuses.count(412) == 7
    with server.client() as http:
        assert http.get("/Patient/race").json()["meta"]["versionId"] == "2"


def test_demo_start_and_graceful_shutdown(tmp_path: Path) -> None:
    demo = Server(tmp_path, workers=1, demo=True, log_level="info")
    try:
        with demo.client() as http:
            helene = http.get("/Patient/helene-dupont")
            assert helene.status_code == 200
            assert helene.json()["name"][0]["given"] == ["Hélène"]
            assert http.get("/ResearchStudy/essai-sein-her2").status_code == 200
    finally:
        # uvicorn re-raises the SIGTERM it handled once shutdown is complete.
        assert demo.stop() in (0, -15)
    log = (tmp_path / "server.log").read_text()
    assert "Application shutdown complete." in log
    # Structured JSON logs; no query strings or resource content in them.
    records = [json.loads(line) for line in log.splitlines() if line]
    assert all("request_id" in record for record in records)
    access = [r for r in records if r["logger"] == "fhir_server.access"]
    assert {"method", "path", "status", "duration_ms"} <= set(access[0])
    assert "Hélène" not in log
