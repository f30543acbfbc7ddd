"""No committed write without its audit record, whatever kills the server (issue 14: "in 2 of
3 kill -9 cycles a committed transaction had no AuditEvent"; docs/audit.md, "Writes and
crashes").

A real server process takes transactions from several clients and is killed with SIGKILL
mid-load, three times; after the last restart every Patient the store holds is named by an
AuditEvent, and `fhir-server audit verify` finds the chain intact. The same with single
creates, reads, updates and deletes (the perf harness's mix, issue 15): every write the server
acknowledged is stored, and every request it answered has its AuditEvent.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx2 as httpx

from tests.builders import patient
from tests.e2e.conftest import Server

SYSTEM = "urn:example:audit-crash"
CLIENTS = 4
PER_BUNDLE = 20


def _bundle(client: int, n: int) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient(identifier=[{"system": SYSTEM, "value": f"{client}-{n}-{i}"}]),
         "request": {"method": "POST", "url": "Patient"}} for i in range(PER_BUNDLE)]}


def _load(server: Server, client: int, stop: threading.Event) -> None:
    """Post transactions until the server dies."""
    headers = {**server.auth(), "Content-Type": "application/fhir+json"}
    with httpx.Client(timeout=30) as http:
        n = 0
        while not stop.is_set():
            try:
                http.post(f"{server.base}/fhir", json=_bundle(client, n), headers=headers)
            except httpx.TransportError:
                return
            n += 1


def _all(server: Server, path: str) -> list[dict[str, Any]]:
    """Every resource a search finds, page after page."""
    found: list[dict[str, Any]] = []
    url: str | None = f"{server.base}/fhir/{path}"
    with httpx.Client(timeout=60, headers=server.auth()) as http:
        while url:
            page = http.get(url)
            assert page.status_code == 200, page.text
            body = page.json()
            found += [e["resource"] for e in body.get("entry", [])]
            url = next((link["url"] for link in body.get("link", []) if link["relation"] == "next"), None)
    return found


def _kill_mid_load(data: Path, load: Callable[[Server, int, threading.Event], None] = _load,
                   loaded: Callable[[], bool] = lambda: True) -> None:
    """Start the server, `load` it from CLIENTS threads, kill it with SIGKILL at a random
    moment once `loaded()` says the load is under way (a minute at most)."""
    server = Server(data, workers=1)
    stop = threading.Event()
    loaders = [threading.Thread(target=load, args=(server, c, stop)) for c in range(CLIENTS)]
    try:
        for loader in loaders:
            loader.start()
        deadline = time.monotonic() + 60
        while not loaded() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(random.uniform(1.0, 2.0))
        server.process.kill()
        server.process.wait(timeout=30)
    finally:
        stop.set()
        for loader in loaders:
            loader.join(timeout=60)
        server.stop()


def _verify(data: Path) -> None:
    """`fhir-server audit verify` finds the chain intact."""
    verdict = subprocess.run([sys.executable, "-m", "fhir_server.cli", "audit", "verify"],
                             env={**os.environ, "FHIR_SERVER_DATA_DIR": str(data)},
                             capture_output=True, text=True, timeout=120)
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr


def _mix(answered: list[tuple[str, str, int]], server: Server, client: int,
         stop: threading.Event) -> None:
    """Create, read, update and delete Patients, one request at a time, until the server dies;
    each answered request goes into `answered` as (interaction, id, status)."""
    headers = {**server.auth(), "Content-Type": "application/fhir+json"}
    with httpx.Client(base_url=f"{server.base}/fhir", timeout=30, headers=headers) as http:
        while not stop.is_set():
            try:
                created = http.post("/Patient", json=patient())
                id = created.headers.get("Location", "//?/").split("/")[-3]
                answered.append(("create", id, created.status_code))
                if created.status_code != 201:
                    return
                for interaction, method, body in (("read", "GET", None),
                                                  ("update", "PUT", {**patient(), "id": id}),
                                                  ("delete", "DELETE", None)):
                    response = http.request(method, f"/Patient/{id}", json=body)
                    answered.append((interaction, id, response.status_code))
            except httpx.TransportError:
                return


def test_the_mix_loses_no_acknowledged_write_nor_the_record_of_an_answered_request(
        tmp_path: Path) -> None:
    """Single creates, reads, updates and deletes (the perf harness's mix) from several clients,
    the server killed with SIGKILL mid-load: every write it acknowledged is there after the
    restart, and every request it answered has its AuditEvent."""
    answered: list[tuple[str, str, int]] = []
    _kill_mid_load(tmp_path, partial(_mix, answered), loaded=lambda: len(answered) >= 40)
    assert all(status < 300 for _, _, status in answered), answered
    server = Server(tmp_path, workers=1)
    try:
        with server.client(timeout=30) as http:
            for interaction, id, _ in answered:
                if interaction in ("create", "update"):
                    version = 1 if interaction == "create" else 2
                    assert http.get(f"/Patient/{id}/_history/{version}").status_code == 200, (interaction, id)
                elif interaction == "delete":
                    assert http.get(f"/Patient/{id}").status_code == 410, id
        events = _all(server, "AuditEvent?subtype=create,read,update,delete&_count=1000"
                              "&_elements=subtype,entity")
    finally:
        server.stop()
    recorded: dict[tuple[str, str], int] = {}
    for event in events:
        for entity in event.get("entity", []):
            key = (event["subtype"][0]["code"], entity.get("what", {}).get("reference", ""))
            recorded[key] = recorded.get(key, 0) + 1
    print(f"\n{len(answered)} requests answered before the kill")
    assert len(answered) > 20, "too few requests answered before the kill"
    for interaction, id, _ in answered:
        assert recorded.get((interaction, f"Patient/{id}"), 0) >= 1, (interaction, id)
    _verify(tmp_path)


def test_every_committed_write_has_its_audit_record_after_sigkill(tmp_path: Path) -> None:
    for _ in range(3):
        started = time.monotonic()
        _kill_mid_load(tmp_path)
        print(f"\ncycle in {time.monotonic() - started:.1f} s")
    server = Server(tmp_path, workers=1)
    try:
        started = time.monotonic()
        stored = {f"Patient/{p['id']}" for p in
                  _all(server, f"Patient?identifier={SYSTEM}|&_count=1000&_elements=id")}
        events = _all(server, "AuditEvent?subtype=transaction&_count=1000&_elements=entity")
        print(f"\nread back in {time.monotonic() - started:.1f} s")
    finally:
        server.stop()
    named = {e["what"]["reference"] for event in events for e in event.get("entity", []) if "what" in e}
    assert stored, "nothing was committed before the kills"
    unaudited = stored - named
    print(f"\n{len(stored)} Patients committed, {len(unaudited)} without an AuditEvent")
    assert not unaudited
    _verify(tmp_path)
