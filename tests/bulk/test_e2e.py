"""Bulk Data `$export` end to end over real uvicorn on the Synthea sample: system, Patient and
Group exports whose per-type counts equal the store's; `_since` after deletes fills `deleted`;
another client's token refused; a patient who withdrew their consent absent; and a server
killed with SIGKILL mid-export that, restarted, finishes the job with every resource exactly
once (docs/export.md)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson
import pytest

from fhir_server import clock
from tests.builders import consent
from tests.bulk.helpers import download, export, kick_off, status_path, token_of, wait
from tests.conftest import SHARED
from tests.e2e.conftest import Server

SMALL_FILES = {"FHIR_SERVER_EXPORT_FILE_RESOURCES": "10"}


def _client(server: Server) -> httpx.Client:
    """A client of the server's root (paths start /fhir), with every system scope."""
    return httpx.Client(base_url=server.base, headers=server.auth(), timeout=60)


def _load(client: httpx.Client) -> None:
    for path in sorted((SHARED / "synthea").glob("*.json")):
        response = client.post("/fhir", content=path.read_bytes(),
                               headers={"Content-Type": "application/fhir+json"}, timeout=120)
        assert response.status_code == 200, response.text


def _total(client: httpx.Client, resource_type: str, query: str = "") -> int:
    body = client.get(f"/fhir/{resource_type}?_summary=count{query}").json()
    return int(body["total"])


def _count(resources: list[dict[str, Any]]) -> Counter[str]:
    return Counter(str(r["resourceType"]) for r in resources)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    running = Server(tmp_path_factory.mktemp("bulk-e2e"), workers=2, env=SMALL_FILES)
    try:
        with _client(running) as client:
            _load(client)
        yield running
    finally:
        running.stop()


def test_system_patient_and_group_exports_count_what_the_store_holds(server: Server) -> None:
    with _client(server) as client:
        system = _count(download(client, export(client, "/fhir/$export")))
        synthea_types = {e["resource"]["resourceType"] for p in (SHARED / "synthea").glob("*.json")
                         for e in orjson.loads(p.read_bytes())["entry"]}
        assert synthea_types <= system.keys()
        for resource_type, count in system.items():
            assert _total(client, resource_type) == count, resource_type
        patients = _count(download(client, export(client, "/fhir/Patient/$export")))
        assert patients["Patient"] == _total(client, "Patient")
        assert "Organization" not in patients and "Practitioner" not in patients
        ids = sorted(r["id"] for r in download(client, export(client, "/fhir/$export?_type=Patient")))[:3]
        group = {"resourceType": "Group", "id": "cohort", "type": "person", "actual": True,
                 "member": [{"entity": {"reference": f"Patient/{id}"}} for id in ids]}
        assert client.put("/fhir/Group/cohort", content=orjson.dumps(group),
                          headers={"Content-Type": "application/fhir+json"}).status_code == 201
        grouped = _count(download(client, export(client, "/fhir/Group/cohort/$export")))
        assert grouped["Patient"] == 3
        members = ",".join(f"Patient/{id}" for id in ids)
        assert grouped["Observation"] == _total(client, "Observation", f"&subject={members}")


def test_since_after_deletes_fills_deleted_and_other_clients_are_refused(server: Server) -> None:
    with _client(server) as client:
        since = clock.instant()
        time.sleep(0.05)
        gone = client.get("/fhir/Condition?_count=2").json()["entry"]
        for entry in gone:
            assert client.delete(f"/fhir/Condition/{entry['resource']['id']}").status_code in (200, 204)
        status = status_path(kick_off(client, f"/fhir/$export?_type=Condition&_since={since}"))
        manifest = wait(client, status).json()
        assert manifest["output"] == []
        deleted = {e["request"]["url"] for b in download(client, manifest, key="deleted") for e in b["entry"]}
        assert deleted == {f"Condition/{e['resource']['id']}" for e in gone}
        other = token_of(server, "system/*.rs", client_id="another")
        assert client.get(f"/fhir{status}", headers=other).status_code == 404
        url = manifest["deleted"][0]["url"].split("/fhir", 1)[1]
        assert client.get(f"/fhir{url}", headers=other).status_code == 404
        assert client.get(f"/fhir{url}").status_code == 200


def test_a_patient_who_withdrew_consent_is_absent(server: Server) -> None:
    with _client(server) as client:
        kept, withdrawn = sorted(r["id"] for r in download(client, export(client, "/fhir/$export?_type=Patient")))[:2]
        for id in (kept, withdrawn):
            body = {**consent(id, actor="Practitioner/e2e-doctor"), "id": f"consent-{id}"}
            assert client.put(f"/fhir/Consent/consent-{id}", content=orjson.dumps(body),
                              headers={"Content-Type": "application/fhir+json"}).status_code == 201
        body = {**consent(withdrawn, actor="Practitioner/e2e-doctor", status="inactive"),
                "id": f"consent-{withdrawn}"}
        assert client.put(f"/fhir/Consent/consent-{withdrawn}", content=orjson.dumps(body),
                          headers={"Content-Type": "application/fhir+json"}).status_code == 200
        doctor = token_of(server, "user/*.rs", client_id="portal", fhir_user="Practitioner/e2e-doctor")
        found = download(client, export(client, "/fhir/Patient/$export?_type=Patient,Condition", doctor), doctor)
        assert {r["id"] for r in found if r["resourceType"] == "Patient"} == {kept}
        assert all(r["subject"]["reference"] == f"Patient/{kept}" for r in found
                   if r["resourceType"] == "Condition")


def test_a_server_killed_mid_export_finishes_it_after_restart_every_resource_once(
        tmp_path: Path) -> None:
    first = Server(tmp_path, workers=1, env=SMALL_FILES)
    try:
        expected, status = _start_and_kill(first)
    finally:
        if first.process.poll() is None:
            first.stop()
    second = Server(tmp_path, workers=1, env=SMALL_FILES)
    try:
        with _client(second) as client:
            done = wait(client, status, timeout=180)
            assert done.status_code == 200, done.text
            resources = download(client, done.json())
            keys = [f"{r['resourceType']}/{r['id']}" for r in resources]
            assert len(keys) == len(set(keys))  # exactly once
            assert _count(resources) == expected
    finally:
        second.stop()


def _start_and_kill(first: Server) -> tuple[Counter[str], str]:
    """Load the sample, count an export, start another and SIGKILL the server mid-way: the
    expected counts and the second job's status path."""
    with _client(first) as client:
        _load(client)
        expected = _count(download(client, export(client, "/fhir/$export?_type=Patient,Observation,Condition")))
        status = status_path(kick_off(client, "/fhir/$export?_type=Patient,Observation,Condition"))
        while True:
            polled = client.get(f"/fhir{status}")
            assert polled.status_code == 202, "the export ended before the kill"
            if int(polled.headers["X-Progress"].split(" files")[0].rsplit(" ", 1)[1]) >= 5:
                break
            time.sleep(0.01)
    first.process.kill()  # SIGKILL: no shutdown, the job's lease is left to expire
    first.process.wait()
    first.log.close()
    return expected, status
