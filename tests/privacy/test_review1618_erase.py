"""Review of `$erase` under `Prefer: respond-async` (issues 16 and 18): the status URL is polled
over HTTP, and with several workers (`serve --workers 2`) a poll may reach a process that did
not start the job. It must answer as the one that did: 202 while the erasure runs, then its
outcome (an erasure, or, under a legal hold, the pseudonymisation and why), and 404 to anyone
but the caller who asked. Simulated here by forgetting the starting process's own jobs."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

from fhir_server.model.errors import Kind, fail

from tests.http.helpers import send
from tests.privacy.conftest import Server
from tests.trials.conftest import Platform, platform  # noqa: F401 (fixture)

REASON = {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "my right"}]}


def _another_worker(client: TestClient) -> None:
    """What a process that did not start the jobs knows of them: nothing in memory."""
    client.app.state.context.erasures.jobs.clear()  # type: ignore[attr-defined]


def _poll(client: TestClient, url: str, headers: dict[str, str]) -> Any:
    for _ in range(300):
        response = client.get(url, headers=headers)
        if response.status_code != 202:
            return response
        time.sleep(0.02)
    raise AssertionError("the erasure did not end")


def test_another_worker_answers_202_while_it_runs_then_the_outcome(server: Server) -> None:
    client = server.client
    lock = client.app.state.context.erasures.lock  # type: ignore[attr-defined]
    client.portal.call(lock.acquire)  # type: ignore[union-attr]  # the erasure waits for it
    try:
        response = server.erase("a", caller="patient-a", Prefer="respond-async")
        assert response.status_code == 202, response.text
        url = response.headers["content-location"].removeprefix("http://testserver")
        _another_worker(client)
        running = client.get(url, headers=server.headers("patient-a"))
        assert running.status_code == 202, running.text
        assert client.get(url, headers=server.headers("patient-b")).status_code == 404
    finally:
        client.portal.call(lock.release)  # type: ignore[union-attr]
    done = _poll(client, url, server.headers("patient-a"))
    assert done.status_code == 200, done.text
    assert done.json()["parameter"][0] == {"name": "patient", "valueReference": {"reference": "Patient/a"}}
    assert client.get(url, headers=server.headers("patient-b")).status_code == 404
    assert client.get(url, headers=server.headers("admin")).status_code == 404


def test_another_worker_tells_the_person_why_their_record_was_pseudonymised(platform: Platform) -> None:  # noqa: F811
    client = platform.client
    assert platform.refer("shared").status_code == 201  # a trial's legal hold from now on
    response = send(client, "POST", "/fhir/Patient/shared/$erase", REASON, Prefer="respond-async",
                    **platform.headers("patient", "shared"))
    assert response.status_code == 202, response.text
    url = response.headers["content-location"].removeprefix("http://testserver")
    _another_worker(client)
    done = _poll(client, url, platform.headers("patient", "shared"))
    assert done.status_code == 200, done.text
    names = [p["name"] for p in done.json()["parameter"]]
    assert "legalHold" in names and "pseudonymisedAt" in names
    assert client.get(url, headers=platform.headers("patient", "minor")).status_code == 404


def test_another_worker_answers_the_error_the_job_met(server: Server) -> None:
    class Failing:
        async def held(self, patient_id: str) -> str | None:
            raise fail(Kind.CONFLICT, "conflict", "The record changed while it was being erased.")

    erasures = server.client.app.state.context.erasures  # type: ignore[attr-defined]
    assert erasures.instead is not None  # so the hold is asked in the background, not before the 202
    erasures.hold = Failing()
    response = server.erase("a", caller="patient-a", Prefer="respond-async")
    assert response.status_code == 202, response.text
    url = response.headers["content-location"].removeprefix("http://testserver")
    _another_worker(server.client)
    failed = _poll(server.client, url, server.headers("patient-a"))
    assert failed.status_code == 409, failed.text
    assert failed.json()["issue"][0]["diagnostics"] == "The record changed while it was being erased."
    assert server.client.get("/fhir/Patient/a", headers=server.headers("ehr")).status_code == 200
