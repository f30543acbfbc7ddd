"""Patient/[id]/$erase over HTTP (services/erase.py): who may, what it removes, what it
answers (200, 202 and polling, 400, 403, 404, 409), what it records; on each store."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from functools import partial
from typing import Any

import orjson
import pytest

from fhir_server import cli, clock
from fhir_server.access import server_principal
from fhir_server.crypto import ErasureLedger, patient_scope
from fhir_server.notify import enqueue
from fhir_server.services.erase import sweep
from tests.builders import observation, patient
from tests.http.helpers import send
from tests.privacy.conftest import Server

A_KEYS = ["Patient/a", "Observation/a-obs0", "Observation/a-obs1", "Observation/a-obs2",
          "Condition/a-cond"]


def _gone(server: Server) -> None:
    for key in A_KEYS:
        assert server.client.get(f"/fhir/{key}").status_code == 404, key
        assert server.client.get(f"/fhir/{key}/_history").json().get("total", 0) == 0
    found = server.client.get("/fhir/Observation?subject=Patient/a").json()
    assert found.get("entry", []) == []


def _untouched(server: Server) -> None:
    for key in A_KEYS:
        assert server.client.get(f"/fhir/{key}").status_code == 200, key


def _counts(output: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return {p["part"][0]["valueCode"]: (p["part"][1]["valueInteger"], p["part"][2]["valueInteger"])
            for p in output["parameter"] if p["name"] == "erased"}


def test_an_administrator_erases_the_compartment(server: Server) -> None:
    keys = server.client.app.state.context.erasures.keys  # type: ignore[attr-defined]
    keys.current(patient_scope("a"))  # the key the patient's versions are sealed with
    response = server.erase("a")
    assert response.status_code == 200, response.text
    output = response.json()
    assert output["resourceType"] == "Parameters"
    assert _counts(output) == {"Patient": (1, 2), "Observation": (3, 3), "Condition": (1, 1)}
    assert {p["name"]: p.get("valueInteger") for p in output["parameter"]}["keysDestroyed"] == 1
    _gone(server)
    assert keys.keys_of(patient_scope("a")) == []
    assert server.client.get("/fhir/Patient/b").status_code == 200
    assert server.client.get("/fhir/Observation/b-obs0").status_code == 200


def test_erasing_again_answers_the_same(server: Server) -> None:
    first = server.erase("a")
    again = server.erase("a", name="$purge")  # R6's name
    assert again.status_code == 200 and again.json() == first.json()
    entries = server.client.app.state.context.erasures.ledger.entries()  # type: ignore[attr-defined]
    assert [e["patient"] for e in entries] == ["a"]


def test_an_unknown_patient_is_404(server: Server) -> None:
    response = server.erase("nobody")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("reason", [None, "   ", "x" * 501])
def test_a_reason_is_required(server: Server, reason: str | None) -> None:
    response = server.erase("a", reason=reason)
    assert response.status_code == 400
    assert "reason" in response.json()["issue"][0]["diagnostics"]
    _untouched(server)


def test_the_reason_may_be_in_the_url(server: Server) -> None:
    response = server.client.post("/fhir/Patient/a/$erase?reason=asked", headers=server.headers("admin"))
    assert response.status_code == 200, response.text


def test_a_body_that_is_not_parameters_is_400(server: Server) -> None:
    response = server.client.post("/fhir/Patient/a/$erase", headers={
        **server.headers("admin"), "Content-Type": "application/fhir+json"},
        content=orjson.dumps({"resourceType": "Patient"}))
    assert response.status_code == 400
    _untouched(server)


@pytest.mark.parametrize(("caller", "status"), [("physician", 403), ("ehr", 403), ("patient-b", 404)])
def test_callers_without_the_right(server: Server, caller: str, status: int) -> None:
    assert server.erase("a", caller=caller).status_code == status
    _untouched(server)


def test_the_patient_erases_their_own_record(server: Server) -> None:
    assert server.erase("a", caller="patient-a").status_code == 200
    _gone(server)


def test_asynchronous_erasure(server: Server) -> None:
    response = server.erase("a", Prefer="respond-async")
    assert response.status_code == 202
    status_url = response.headers["content-location"]
    assert status_url.startswith("http://testserver/fhir/$erase-status/")
    other = server.client.get(status_url, headers=server.headers("physician"))
    assert other.status_code == 404  # not their job
    done = server.poll(status_url)
    assert done.status_code == 200, done.text
    assert _counts(done.json())["Observation"] == (3, 3)
    _gone(server)
    assert server.poll(status_url).json() == done.json()


def test_a_legal_hold_refuses(server: Server) -> None:
    class Hold:
        async def held(self, patient_id: str) -> str | None:
            return "litigation 2026-17" if patient_id == "a" else None

    server.client.app.state.context.erasures.hold = Hold()  # type: ignore[attr-defined]
    # a hold with nothing to do instead (the retention's pseudonymisation: test_retention.py)
    server.client.app.state.context.erasures.instead = None  # type: ignore[attr-defined]
    response = server.erase("a")
    assert response.status_code == 409
    assert "litigation 2026-17" in response.json()["issue"][0]["diagnostics"]
    _untouched(server)


def test_the_erasure_is_audited_and_the_chain_verifies(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    server.erase("a", reason="GDPR request 42")
    response = server.client.get("/fhir/AuditEvent?entity-name=Patient/a&_count=100")
    assert response.status_code == 200, response.text
    bundle = response.json()
    erasures = [e["resource"] for e in bundle["entry"] if e["resource"]["action"] == "D"
                and any(d.get("valueString") == "$erase" for x in e["resource"].get("entity", [])
                        for d in x.get("detail", []))]
    assert len(erasures) == 1
    event = erasures[0]
    assert event["agent"][0]["who"] == {"reference": "Practitioner/admin"}
    details = {d["type"]: d["valueString"] for d in event["entity"][0]["detail"]}
    assert details["reason"] == "GDPR request 42"
    assert details["Observation"] == "3 resources, 3 versions"
    assert b"Zwxqvtrudel" not in orjson.dumps(event)
    assert "Patient/a" not in [e.get("what", {}).get("reference") for e in event["entity"]]
    # The events about the patient's data were sealed under the destroyed key: shredded,
    # their links still in the chain, which verifies around them.
    assert cli.main(["audit", "verify"]) == 0
    err = capsys.readouterr().err
    assert "intact" in err and "erased with their patient's key" in err


def test_a_damaged_event_is_not_taken_for_a_shredded_one(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    """Only events whose key was destroyed count as shredded: an event whose ciphertext was
    changed is a problem."""
    conn = sqlite3.connect(server.settings.data_dir / "audit.db")  # the audit store: SQLite
    id, body = conn.execute("SELECT id, body FROM history ORDER BY seq LIMIT 1").fetchone()
    conn.execute("UPDATE history SET body = ? WHERE id = ?", (body[:-1] + bytes([body[-1] ^ 1]), id))
    conn.commit()
    conn.close()
    assert cli.main(["audit", "verify"]) == 1
    assert f"AuditEvent/{id} (link" in capsys.readouterr().out


def test_an_asynchronous_request_is_checked_before_it_is_accepted(server: Server) -> None:
    assert server.erase("nobody", Prefer="respond-async").status_code == 404
    assert server.erase("a", reason=None, Prefer="respond-async").status_code == 400
    assert server.erase("a", caller="ehr", Prefer="respond-async").status_code == 403
    _untouched(server)


def test_a_finished_job_forgotten_by_this_process_is_answered_from_the_ledger(server: Server) -> None:
    status_url = server.erase("a", Prefer="respond-async").headers["content-location"]
    done = server.poll(status_url)
    server.client.app.state.context.erasures.jobs.clear()  # type: ignore[attr-defined]
    assert server.poll(status_url).json() == done.json()
    assert server.client.get(status_url, headers=server.headers("patient-b")).status_code == 404
    unknown = status_url.rsplit("/", 1)[0] + "/0b8e7c2e-3f35-4d7a-9f55-2d1f7a8d8d11"
    assert server.client.get(unknown, headers=server.headers("admin")).status_code == 404


def _reason_of(output: dict[str, Any]) -> str:
    return next(p["valueString"] for p in output["parameter"] if p["name"] == "reason")


def test_a_patient_created_again_under_the_same_id_is_erased_again(server: Server) -> None:
    client = server.client
    first = server.erase_and_settle("a")
    assert send(client, "PUT", "/fhir/Patient/a", {**patient(family="Newcomer"), "id": "a"}).status_code == 201
    assert send(client, "PUT", "/fhir/Observation/a-new",
                {**observation("Patient/a"), "id": "a-new"}).status_code == 201
    again = server.erase("a", reason="asked again")
    assert again.status_code == 200 and _reason_of(again.json()) == "asked again"
    assert _counts(again.json()) == {"Observation": (1, 1), "Patient": (1, 1)}
    assert client.get("/fhir/Patient/a").status_code == 404
    assert client.get("/fhir/Observation/a-new").status_code == 404
    entries = client.app.state.context.erasures.ledger.entries()  # type: ignore[attr-defined]
    assert [(e["patient"], e["reason"]) for e in entries] == [
        ("a", _reason_of(first.json())), ("a", "asked again")]
    # Nothing written since: the same answer again, nothing recorded.
    assert server.erase("a", reason="a third time").json() == again.json()
    assert len(client.app.state.context.erasures.ledger.entries()) == 2  # type: ignore[attr-defined]


def test_a_result_written_after_the_erasure_is_erased_again(server: Server) -> None:
    client = server.client
    keys = client.app.state.context.erasures.keys  # type: ignore[attr-defined]
    server.erase_and_settle("a")
    late = send(client, "POST", "/fhir/Observation", observation("Patient/a"))
    assert late.status_code == 201
    assert keys.keys_of(patient_scope("a"))  # sealed under a new key of the compartment
    again = server.erase("a", reason="a late result")
    assert again.status_code == 200 and _reason_of(again.json()) == "a late result"
    assert _counts(again.json()) == {"Observation": (1, 1)}
    assert next(p["valueInteger"] for p in again.json()["parameter"]
                if p["name"] == "keysDestroyed") == 1
    assert keys.keys_of(patient_scope("a")) == []
    assert client.get(f"/fhir/Observation/{late.json()['id']}").status_code == 404
    assert client.get("/fhir/Observation?subject=Patient/a").json().get("entry", []) == []


def test_the_server_starts_again_after_erasing_the_patient_of_the_last_write(sqlite_server: Server) -> None:
    """The audit outbox keeps the last unit of work's record until the next one: if that was
    about the erased patient, its AuditEvent is shredded, and start-up recovery must take it
    as recorded (it was), not fail to start. (SQLite: a restart reopens its files.)"""
    server = sqlite_server
    from fastapi.testclient import TestClient

    from fhir_server.app import create_app
    from tests.conftest import authorized

    body = {**observation("Patient/a"), "id": "a-last"}
    assert send(server.client, "PUT", "/fhir/Observation/a-last", body).status_code == 201
    assert server.erase_and_settle("a").status_code == 200
    server.client.__exit__(None, None, None)  # the server stops with that record pending
    with authorized(TestClient(create_app(server.settings))) as client:
        assert client.get("/fhir/Patient/a").status_code == 404
        assert client.get("/fhir/Patient/b").status_code == 200


def test_erasure_forgets_the_patients_notifications(server: Server) -> None:
    """The patient's notification preferences (stored under `Patient/<id>` in clear) and the
    notices waiting for them go with the erasure; another person's stay."""
    schedule = server.client.app.state.schedule  # type: ignore[attr-defined]
    for caller in ("patient-a", "patient-b"):
        changed = server.client.put("/notifications/preferences", json={"optedOut": True},
                                    headers=server.headers(caller))
        assert changed.status_code == 200, changed.text
    portal = server.client.portal  # type: ignore[attr-defined]
    for person in ("Patient/a", "Patient/b"):
        portal.call(partial(enqueue, schedule, person=person, template="new-message", params={},
                            not_before=clock.now(), key=f"message/{person}"))
    assert server.erase("a").status_code == 200
    assert portal.call(schedule.preference, "Patient/a") is None
    assert portal.call(schedule.preference, "Patient/b") is not None
    assert [d.key for d in portal.call(schedule.items, "message/")] == ["message/Patient/b"]


def test_an_erasure_that_removes_something_reads_the_ledger_once(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read of the ledger costs time in proportion to the erasures ever made, and a
    retention run makes thousands: an erasure that removes something reads it only to append
    its entry; one that finds nothing reads it to answer what the last one did."""
    ctx = replace(server.client.app.state.context,  # type: ignore[attr-defined]
                  principal=server_principal("fhir-server"))
    call = server.client.portal.call  # type: ignore[union-attr]
    call(partial(sweep, ctx, "b", "asked by the patient"))  # the ledger is no longer empty
    reads: list[bool] = []
    verified = ErasureLedger._read_verified
    monkeypatch.setattr(ErasureLedger, "_read_verified",
                        lambda self, fd: reads.append(True) or verified(self, fd))
    first = call(partial(sweep, ctx, "a", "asked by the patient"))
    assert len(reads) == 1  # its append
    again = call(partial(sweep, ctx, "a", "asked by the patient"))
    assert again == first and len(reads) == 2  # the last erasure found, nothing appended
    assert [e["patient"] for e in ctx.erasures.ledger.entries()] == ["b", "a"]
