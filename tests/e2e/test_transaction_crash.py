"""A transaction interrupted by SIGKILL leaves no trace (FHIR R4 http.html#transaction:
"either accept all actions ... or reject all resources"; ARCHITECTURE: a failed transaction
leaves no trace, an acknowledged write is durable).

The server runs as one process (no worker supervisor), so SIGKILL stops everything at once.
The kill is timed from SQLite's write lock: once the server holds it, the transaction's rows
are being written, uncommitted; the kill comes a moment later, well before the commit.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson

from tests.builders import observation, patient
from tests.e2e.conftest import Server

ENTRIES = 6000  # about 1.5 s of writes here after 0.9 s of validation
SYSTEM = "urn:example:crash-test"
FHIR_JSON = {"Content-Type": "application/fhir+json"}


def _large_transaction() -> bytes:
    subject = f"urn:uuid:{uuid.uuid4()}"
    entries: list[dict[str, Any]] = [
        {"fullUrl": subject, "resource": patient(identifier=[{"system": SYSTEM, "value": "patient"}]),
         "request": {"method": "POST", "url": "Patient"}}]
    entries += [{"resource": observation(subject, value=i, identifier=[{"system": SYSTEM, "value": str(i)}]),
                 "request": {"method": "POST", "url": "Observation"}} for i in range(ENTRIES - 1)]
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})


def _chunks(body: bytes, sent: threading.Event) -> Iterator[bytes]:
    """Stream the body, marking when its last byte has been handed to the socket."""
    step = 256 * 1024
    for start in range(0, len(body), step):
        yield body[start:start + step]
    sent.set()


def _wait_for_write_lock(database: Path, timeout: float) -> bool:
    """Poll until another connection holds the database's write lock (True) or time runs out."""
    probe = sqlite3.connect(database, timeout=0, isolation_level=None)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                probe.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:  # "database is locked": the server is writing
                return True
            probe.execute("ROLLBACK")
            time.sleep(0.01)
        return False
    finally:
        probe.close()


def _count(server: Server, resource_type: str) -> int:
    response = httpx.get(f"{server.base}/fhir/{resource_type}", headers=server.auth(),
                         params={"identifier": f"{SYSTEM}|", "_summary": "count"}, timeout=30)
    assert response.status_code == 200, response.text
    return int(response.json()["total"])


def _post(server: Server, content: Any) -> httpx.Response:
    return httpx.post(f"{server.base}/fhir", content=content,
                      headers={**FHIR_JSON, **server.auth()}, timeout=120)


def test_sigkill_during_a_transaction_stores_all_or_nothing(tmp_path: Path) -> None:
    body = _large_transaction()
    server = Server(tmp_path, workers=1)
    try:
        kept = httpx.put(f"{server.base}/fhir/Patient/kept", headers={**FHIR_JSON, **server.auth()},
                         timeout=30,
                         content=orjson.dumps(patient(id="kept")))
        assert kept.status_code == 201
        sent = threading.Event()
        with ThreadPoolExecutor(1) as pool:
            request: Future[httpx.Response] = pool.submit(_post, server, _chunks(body, sent))
            assert sent.wait(timeout=60), "the body was never sent"
            assert _wait_for_write_lock(tmp_path / "fhir.db", timeout=60), "the server never wrote"
            time.sleep(0.2)  # let it write part of the entries, uncommitted
            answered_before_kill = request.done()
            server.process.kill()
            server.process.wait(timeout=30)
            try:
                request.result(timeout=60)
            except httpx.TransportError:
                pass
    finally:
        server.stop()

    restarted = Server(tmp_path, workers=1)
    try:
        observations, patients = _count(restarted, "Observation"), _count(restarted, "Patient")
        case = "none (killed before commit)" if observations == 0 else "all (killed after commit)"
        print(f"\ntransaction of {ENTRIES} entries after SIGKILL: {case}; "
              f"response before kill: {answered_before_kill}")
        assert (observations, patients) in {(0, 0), (ENTRIES - 1, 1)}
        # The write acknowledged before the crash survived, and the store still takes the transaction.
        assert httpx.get(f"{restarted.base}/fhir/Patient/kept", headers=restarted.auth(),
                         timeout=30).status_code == 200
        if observations == 0:
            assert _post(restarted, body).status_code == 200
            assert _count(restarted, "Observation") == ENTRIES - 1
    finally:
        restarted.stop()
