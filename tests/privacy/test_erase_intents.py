"""An erasure cut short (the process killed after the store lost the patient, before their
keys, ledger entry or AuditEvent): announced in the ledger's intents first, it is finished at
the next start (services/erase.py `reconcile`), on both stores."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.access import server_principal
from fhir_server.app import create_app
from fhir_server.crypto import ErasureLedger, patient_scope
from fhir_server.crypto.ledger import LedgerError
from fhir_server.services import erase as erase_service
from fhir_server.services.erase import reconcile
from tests.conftest import authorized
from tests.privacy.conftest import Server


class Killed(RuntimeError):
    """The process dying at that point: nothing of the erasure after it runs."""


def _ledger(server: Server) -> ErasureLedger:
    return server.client.app.state.context.erasures.ledger  # type: ignore[attr-defined]


def _erasure_reasons(client: TestClient, patient: str) -> list[str]:
    events = client.get(f"/fhir/AuditEvent?entity-name=Patient/{patient}").json().get("entry", [])
    return [d["valueString"] for e in events for d in e["resource"]["entity"][0]["detail"]
            if d["type"] == "reason"]


def _restart(server: Server) -> Any:
    """The server started again on the same files (its store, key ring, ledger)."""
    return authorized(TestClient(create_app(server.settings)))


def _start_again(server: Server) -> list[str]:
    """What a start does before serving (`reconcile`), run in the server's own loop."""
    ctx = server.client.app.state.context  # type: ignore[attr-defined]
    return server.client.portal.call(  # type: ignore[union-attr]
        reconcile, replace(ctx, principal=server_principal("fhir-server")))


def _killed(server: Server, reason: str = "asked by the patient") -> None:
    """Erase Patient/a with the process "dying" part way: the request fails with a 500."""
    assert server.erase("a", reason=reason).status_code == 500


def _kill_at(monkeypatch: pytest.MonkeyPatch, target: object, name: str) -> None:
    def killed(*args: object, **kwargs: object) -> None:
        raise Killed(name)
    monkeypatch.setattr(target, name, killed)


def _kill_after_the_store_erasure(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = server.client.app.state.context.erasures.keys  # type: ignore[attr-defined]
    keys.current(patient_scope("a"))
    with monkeypatch.context() as patch:
        _kill_at(patch, erase_service, "_shred")  # after the store's erasure, before the keys
        _killed(server, "GDPR request 7")
    ledger = _ledger(server)
    assert ledger.find("a") is None  # nothing but the intent was written
    assert [i["patient"] for i in ledger.intended()] == ["a"]
    assert keys.keys_of(patient_scope("a"))  # the keys the erasure was to destroy
    assert server.client.get("/fhir/Patient/a").status_code == 404


def _finished(client: TestClient) -> None:
    erasures = client.app.state.context.erasures  # type: ignore[attr-defined]
    entry = erasures.ledger.find("a")
    assert entry is not None and entry["reason"] == "GDPR request 7" and entry["keys_destroyed"] == 1
    assert erasures.ledger.intended() == []
    assert erasures.keys.keys_of(patient_scope("a")) == []
    assert client.get("/fhir/Patient/a").status_code == 404
    assert client.get("/fhir/Patient/b").status_code == 200
    assert _erasure_reasons(client, "a") == ["GDPR request 7"]


def test_a_kill_after_the_store_erasure_is_finished_at_the_next_start(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    _kill_after_the_store_erasure(server, monkeypatch)
    assert _start_again(server) == ["a"]
    _finished(server.client)
    assert _start_again(server) == []


def test_a_server_started_again_finishes_it_before_serving(
        sqlite_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    _kill_after_the_store_erasure(sqlite_server, monkeypatch)
    with _restart(sqlite_server) as client:
        _finished(client)


def test_a_kill_after_the_ledger_entry_records_the_missing_audit_event_once(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    erasures = server.client.app.state.context.erasures  # type: ignore[attr-defined]
    with monkeypatch.context() as patch:
        _kill_at(patch, erasures, "record")
        _killed(server, "GDPR request 8")
    assert _ledger(server).find("a") is not None and _ledger(server).intended()
    assert _erasure_reasons(server.client, "a") == []
    _start_again(server)
    assert _erasure_reasons(server.client, "a") == ["GDPR request 8"]
    assert _ledger(server).intended() == []
    assert len([e for e in _ledger(server).entries() if e["patient"] == "a"]) == 1


def test_a_failed_request_then_a_second_one_destroys_the_keys(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request that failed part way leaves its intent; the next request for the patient,
    finding the store already empty, still finishes the erasure rather than answering the
    last one's output."""
    assert server.erase("a").status_code == 200  # an earlier erasure: the ledger has an entry
    server.client.put("/fhir/Patient/a", json={"resourceType": "Patient", "id": "a"},
                      headers={"Content-Type": "application/fhir+json"})
    keys = server.client.app.state.context.erasures.keys  # type: ignore[attr-defined]
    assert keys.keys_of(patient_scope("a"))  # the reused id's new key
    with monkeypatch.context() as patch:
        _kill_at(patch, erase_service, "_shred")
        _killed(server)
    response = server.erase("a")
    assert response.status_code == 200, response.text
    assert keys.keys_of(patient_scope("a")) == []
    assert _ledger(server).intended() == []


def test_a_forged_intent_stops_the_start(sqlite_server: Server) -> None:
    ledger = _ledger(sqlite_server)
    folder = ledger.path.with_name(ledger.path.name + ".intents")
    folder.mkdir(exist_ok=True)
    forged = {"patient": "b", "started": "2026-01-01T00:00:00Z", "reason": "x", "by": "x",
              "client": None, "job": None, "token": "00", "mac": "0" * 64}
    (folder / f"{b'b'.hex()}.00.json").write_text(json.dumps(forged))
    with pytest.raises(LedgerError, match="does not verify"):
        with _restart(sqlite_server):
            pass


def test_a_ledger_that_does_not_verify_stops_an_erasure_at_its_entry(sqlite_server: Server) -> None:
    """An erasure that removes something reads the ledger only to append its entry (the
    retention's erasures have no `begin`, which reads it first): a ledger changed since
    stops it there, after the store's erasure and the keys, its intent left for the next
    start, which refuses to serve until the ledger is mended."""
    assert sqlite_server.erase("b").status_code == 200  # an entry to tamper with
    ledger = _ledger(sqlite_server)
    ledger.path.write_bytes(ledger.path.read_bytes().replace(b'"b"', b'"x"'))
    keys = sqlite_server.client.app.state.context.erasures.keys  # type: ignore[attr-defined]
    keys.current(patient_scope("a"))
    ctx = replace(sqlite_server.client.app.state.context,  # type: ignore[attr-defined]
                  principal=server_principal("fhir-server"))
    with pytest.raises(LedgerError, match="does not verify"):
        sqlite_server.client.portal.call(  # type: ignore[union-attr]
            partial(erase_service.sweep, ctx, "a", "retention"))
    assert sqlite_server.client.get("/fhir/Patient/a").status_code == 404
    assert keys.keys_of(patient_scope("a")) == []
    assert [i["patient"] for i in ledger.intended()] == ["a"]
    with pytest.raises(LedgerError, match="does not verify"):
        with _restart(sqlite_server):
            pass


def test_intents_name_files_safely_and_settle_older_ones(tmp_path: Path) -> None:
    ledger = ErasureLedger(tmp_path / "ledger.jsonl", b"k" * 32)
    first = {"patient": "..", "started": "2026-01-01T00:00:00.000001Z", "reason": "r"}
    second = {**first, "started": "2026-01-01T00:00:00.000002Z"}
    other = {**first, "patient": "x"}
    for intent in (first, second, other):
        ledger.intend(intent)
    assert {p.parent for p in (tmp_path / "ledger.jsonl.intents").iterdir()} == {
        tmp_path / "ledger.jsonl.intents"}
    assert len(ledger.intended()) == 3
    ledger.settle(second)  # the first started before it: settled with it
    assert [i["patient"] for i in ledger.intended()] == ["x"]
    assert oct((tmp_path / "ledger.jsonl.intents").stat().st_mode & 0o777) == "0o700"


def test_two_workers_starting_at_once_finish_an_intent_once(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--workers 2`: both processes run `reconcile` at start on the same ledger and store;
    the intent is finished by one of them, not by each (one ledger entry, one AuditEvent)."""
    _kill_after_the_store_erasure(server, monkeypatch)
    ctx = replace(server.client.app.state.context,  # type: ignore[attr-defined]
                  principal=server_principal("fhir-server"))

    async def both() -> list[list[str]]:
        # the other worker: the same files, its own in-process lock
        other = replace(ctx, erasures=replace(ctx.erasures, lock=asyncio.Lock()))
        return list(await asyncio.gather(reconcile(ctx), reconcile(other)))

    assert sorted(server.client.portal.call(both)) == [[], ["a"]]  # type: ignore[union-attr]
    _finished(server.client)
    assert len([e for e in _ledger(server).entries() if e["patient"] == "a"]) == 1


def test_an_id_reused_before_the_intent_is_finished_is_erased_with_it(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another worker creates Patient/a again between the kill and the restart. Its data is
    sealed under the data key the unfinished erasure must destroy (the key of the scope, never
    rotated in between), so it cannot be kept readable: finishing the erasure erases it too,
    and says so (the ledger entry's counts, one AuditEvent), as a request erasing again does."""
    _kill_after_the_store_erasure(server, monkeypatch)
    keys = server.client.app.state.context.erasures.keys  # type: ignore[attr-defined]
    before = keys.keys_of(patient_scope("a"))
    created = server.client.put("/fhir/Patient/a", json={"resourceType": "Patient", "id": "a"},
                                headers={"Content-Type": "application/fhir+json"})
    assert created.status_code == 201
    assert keys.keys_of(patient_scope("a")) == before  # sealed under the key to destroy
    assert _start_again(server) == ["a"]
    _finished(server.client)
    entries = [e for e in _ledger(server).entries() if e["patient"] == "a"]
    assert len(entries) == 1 and entries[0]["resources"] == {"Patient": 1}


def _key_ids(server: Server) -> list[str]:
    """Patient/a's data keys, retired ones included, as the ledger lists them (hex)."""
    keys = server.client.app.state.context.erasures.keys  # type: ignore[attr-defined]
    return sorted(k.hex() for k in keys.keys_of(patient_scope("a"), retired=True))


def test_a_kill_after_the_keys_still_lists_them_in_the_ledger(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after the keys were destroyed, before the ledger entry: the entry written at the
    next start lists the keys all the same (start-up and `restore` destroy them again from it
    when datakeys.db comes back from a key backup; `audit verify` tells shredded events by it)."""
    server.client.app.state.context.erasures.keys.current(patient_scope("a"))  # type: ignore[attr-defined]
    ids = _key_ids(server)
    assert ids
    with monkeypatch.context() as patch:
        _kill_at(patch, _ledger(server), "append_each")
        _killed(server, "GDPR request 7")
    assert _start_again(server) == ["a"]
    _finished(server.client)
    entry = _ledger(server).find("a")
    assert entry is not None and sorted(entry["keys"]) == ids


def test_an_erasure_lists_a_rotated_patients_retired_keys(server: Server) -> None:
    """After `keys rotate --data`, the patient's older key is retired, not yet pruned, and
    still opens their older AuditEvents' details and older backups: the erasure destroys it
    and the ledger lists it, or a key backup put back would make it readable again."""
    keys = server.client.app.state.context.erasures.keys  # type: ignore[attr-defined]
    scope = patient_scope("a")
    keys.current(scope)
    keys.retire(scope, keep=keys.rotate(scope))
    ids = _key_ids(server)
    assert len(ids) == 2
    assert server.erase("a").status_code == 200
    entry = _ledger(server).find("a")
    assert entry is not None and sorted(entry["keys"]) == ids and entry["keys_destroyed"] == 2
    assert keys.keys_of(scope, retired=True) == []


def test_a_kill_before_the_store_erasure_is_finished_at_the_next_start(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed right after the intent, the store untouched: the next start erases it all."""
    server.client.app.state.context.erasures.keys.current(patient_scope("a"))  # type: ignore[attr-defined]
    with monkeypatch.context() as patch:
        _kill_at(patch, erase_service, "compartment")  # the store erasure's queries
        _killed(server, "GDPR request 7")
    assert server.client.get("/fhir/Patient/a").status_code == 200  # nothing erased yet
    assert _start_again(server) == ["a"]
    _finished(server.client)
    entry = _ledger(server).find("a")
    assert entry is not None and entry["resources"] == {
        "Patient": 1, "Observation": 3, "Condition": 1}


def test_a_kill_in_the_middle_of_the_store_erasure_is_finished_at_the_next_start(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed between two batches of the store's erasure (the compartment's, then the
    Patient's): SQLite rolls its transaction back, MongoDB keeps what it removed, the Patient
    among what is left; the next start removes the rest."""
    import fhir_server.store.mongo.erase as mongo_erase
    import fhir_server.store.sqlite.erase as sqlite_erase

    server.client.app.state.context.erasures.keys.current(patient_scope("a"))  # type: ignore[attr-defined]
    with monkeypatch.context() as patch:
        for module in (mongo_erase, sqlite_erase):
            calls: list[int] = []

            def once(*args: Any, _first: Any = module._remove_batch, _calls: list[int] = calls) -> Any:
                _calls.append(1)
                if len(_calls) > 1:
                    raise Killed("between batches")
                return _first(*args)
            patch.setattr(module, "_remove_batch", once)
        _killed(server, "GDPR request 7")
    assert server.client.get("/fhir/Patient/a").status_code == 200  # removed last: still there
    assert _start_again(server) == ["a"]
    _finished(server.client)
    for path in ("Observation?subject=Patient/a", "Condition?subject=Patient/a"):
        assert server.client.get(f"/fhir/{path}").json().get("entry", []) == []


@pytest.mark.parametrize("killed_at", ["_shred", "record"])
def test_the_audit_event_of_an_erasure_finished_at_start_names_who_asked(
        server: Server, monkeypatch: pytest.MonkeyPatch, killed_at: str) -> None:
    """The AuditEvent says who asked for the erasure (the issue: who, when, why, counts), also
    when the next start finished it (all of it, or only its AuditEvent): the administrator
    who asked, not the server."""
    erasures = server.client.app.state.context.erasures  # type: ignore[attr-defined]
    with monkeypatch.context() as patch:
        _kill_at(patch, erase_service if killed_at == "_shred" else erasures, killed_at)
        _killed(server)
    _start_again(server)
    events = server.client.get("/fhir/AuditEvent?entity-name=Patient/a").json()["entry"]
    erasures = [e["resource"] for e in events if e["resource"].get("action") == "D"]
    assert len(erasures) == 1
    agent = erasures[0]["agent"][0]
    assert agent["who"] == {"reference": "Practitioner/admin"}
    assert agent["altId"] == "portal" and agent["name"] != "fhir-server"


def test_an_erasure_finished_at_start_forgets_the_archived_reports(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """A requested erasure also removes the patient's archived second-opinion reports (kept
    whole, under the outbox's key, not the patient's): finished at the next start, too."""
    from fhir_server.services import lifecycle

    ctx = replace(server.client.app.state.context,  # type: ignore[attr-defined]
                  principal=server_principal("fhir-server"))
    assert ctx.erasures.forget is not None
    key = f"{lifecycle.PREFIX}archive/DiagnosticReport/op-a"
    server.client.portal.call(lambda: lifecycle.keep_records(ctx, put={key: {  # type: ignore[union-attr]
        "reference": "DiagnosticReport/op-a", "archived": "2026-01-01", "patient": "a",
        "resource": {"resourceType": "DiagnosticReport", "id": "op-a", "conclusion": "x"}}}))
    _kill_after_the_store_erasure(server, monkeypatch)
    _start_again(server)
    _finished(server.client)
    assert server.client.portal.call(lifecycle.records, ctx, "archive") == {}  # type: ignore[union-attr]


def test_a_hold_placed_after_the_kill_does_not_stop_the_erasure_begun(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """A legal hold is checked when the request begins. One placed between the kill and the
    restart finds the patient's record already gone from the store: the start finishes the
    erasure (keys, entry, AuditEvent) rather than leave it half done, readable in backups."""
    _kill_after_the_store_erasure(server, monkeypatch)
    erasures = server.client.app.state.context.erasures  # type: ignore[attr-defined]

    class Held:
        async def held(self, patient_id: str) -> str | None:
            return "a trial's legal hold"

    monkeypatch.setattr(erasures, "hold", Held())
    assert _start_again(server) == ["a"]
    _finished(server.client)
