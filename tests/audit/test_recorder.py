"""The recorder: events recorded together share one commit and one link of the chain, and a
batch a crash interrupted is completed by the next start (audit/recorder.py)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server.access import Principal, Role, parse_scopes, server_principal
from fhir_server.audit.chain import Chain, verify
from fhir_server.audit.events import request_events
from fhir_server.audit.recorder import AuditRecorder, index_entries
from fhir_server.audit.trail import Trail
from fhir_server.search import extract
from fhir_server.store.base import Outbox, Query, Store, Write
from fhir_server.store.mongo import MongoStore
from fhir_server.store.sqlite import SqliteStore
from tests.store.mongo_double import DoubleClient

pytestmark = pytest.mark.anyio


def _event(n: int) -> dict[str, Any]:
    return {"resourceType": "AuditEvent", "type": {"code": "rest"}, "recorded": "2026-01-01T00:00:00Z",
            "agent": [{"requestor": True, "name": f"agent {n}"}], "source": {"observer": {"display": "x"}}}


@pytest.fixture(params=["sqlite", "mongodb-double"])
async def recorder(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AuditRecorder]:
    """A recorder on an audit store of each kind (its chain is always a SQLite file)."""
    store: Store = (SqliteStore(tmp_path / "audit.db") if request.param == "sqlite"
                    else MongoStore(DoubleClient()))
    await store.migrate()
    await store.open()
    recorder = AuditRecorder(store, Chain(tmp_path / "audit-chain.db"))
    yield recorder
    recorder.close()
    await store.close()


async def _verdict(recorder: AuditRecorder) -> list[str]:
    page = await recorder.store.search(Query("AuditEvent", count=1000))
    events = {v.id: orjson.loads(v.body) for v in page.matches if v.body}
    return verify(recorder.chain.links(), events, events).problems


async def test_concurrent_events_share_a_commit_and_a_link(recorder: AuditRecorder) -> None:
    ids = await asyncio.gather(*(recorder.record(_event(n)) for n in range(50)))
    links = recorder.chain.links()
    assert sorted(id for link in links for id in link.event_ids) == sorted(ids)
    assert len(links) < 10  # the first alone, then whoever waited, together
    assert await _verdict(recorder) == []


async def test_a_failed_batch_fails_each_of_its_waiters_and_stores_nothing(
        recorder: AuditRecorder) -> None:
    taken = await recorder.record(_event(0))
    results = await asyncio.gather(recorder.record_all([_event(1)], ids=[taken]),
                                   recorder.record(_event(2)), return_exceptions=True)
    assert all(isinstance(r, Exception) for r in results)  # the same batch: both refused
    assert await recorder.store.count("AuditEvent") == 1
    assert await _verdict(recorder) == []


async def test_close_waits_for_the_link_being_written(
        recorder: AuditRecorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shutdown cancels requests whose link is being written on the chain's thread: closing
    the chain's connections under it crashed the interpreter (a test worker died of it)."""
    writing, go_on = threading.Event(), threading.Event()
    append = recorder.chain.append

    def held(events: list[dict[str, Any]]) -> str:
        writing.set()
        go_on.wait(10)
        return append(events)

    monkeypatch.setattr(recorder.chain, "append", held)
    request = asyncio.ensure_future(recorder.record(_event(0)))
    assert await asyncio.to_thread(writing.wait, 10)
    request.cancel()  # as the server's shutdown does
    closing = threading.Thread(target=recorder.close)
    closing.start()
    closing.join(0.3)
    assert closing.is_alive()  # waits for the link ...
    go_on.set()
    closing.join(10)
    assert not closing.is_alive()
    assert [len(link.event_ids) for link in recorder.chain.links()] == [1]  # ... written whole


async def test_a_batch_is_one_commit_of_its_events_and_its_note_then_one_link(
        recorder: AuditRecorder) -> None:
    first = await recorder.record_all([_event(0), _event(1)], ids=["a-1", "a-2"])
    # The note of the first batch, durable with its events, is removed by the next batch.
    assert await recorder.store.outbox("chain/") == [
        (f"chain/{recorder.owner.name}/a-1", b"a-1 a-2")]
    await recorder.record_all([_event(2)], ids=["b-1"])
    assert await recorder.store.outbox("chain/") == [(f"chain/{recorder.owner.name}/b-1", b"b-1")]
    assert [link.event_ids for link in recorder.chain.links()] == [tuple(first), ("b-1",)]
    assert await _verdict(recorder) == []


async def test_a_batch_stored_but_not_linked_is_linked_at_the_next_start(
        recorder: AuditRecorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    await recorder.record(_event(0))

    def crash(events: object) -> str:
        raise OSError("killed before the link")

    monkeypatch.setattr(recorder.chain, "append", crash)
    with pytest.raises(OSError):
        await recorder.record_all([_event(1), _event(2)], ids=["lost-1", "lost-2"])
    monkeypatch.undo()
    assert await recorder.store.count("AuditEvent") == 3  # stored with their note, unlinked
    assert "AuditEvent/lost-1 is not in the chain (added outside the recorder)" in await _verdict(recorder)
    recorder.close()  # the process ends: its name is free for recovery
    after = AuditRecorder(recorder.store, Chain(tmp_path / "audit-chain.db"))
    assert await after.recover() == 2
    assert await _verdict(after) == []
    assert await after.store.outbox("chain/") == []
    assert recorder.chain.links()[-1].event_ids == ("lost-1", "lost-2")
    after.close()


async def test_recovery_links_a_noted_batch_once(recorder: AuditRecorder, tmp_path: Path) -> None:
    # A dead recorder's notes: one batch linked before it died (its note not yet removed), one
    # stored and never linked.
    await recorder.record_all([_event(0)], ids=["linked"])
    (tmp_path / "audit-owners" / "4242-dead.lock").touch()
    stored = {**_event(1), "id": "stored"}
    await recorder.store.commit([
        Write("AuditEvent", "stored", stored, extract(stored), "POST"),
        Outbox(put=(("chain/4242-dead/linked", b"linked"), ("chain/4242-dead/stored", b"stored")))])
    assert await recorder.recover() == 1
    assert [link.event_ids for link in recorder.chain.links()] == [("linked",), ("stored",)]
    assert await _verdict(recorder) == []
    assert [key for key, _ in await recorder.store.outbox("chain/")] == [
        f"chain/{recorder.owner.name}/linked"]  # its own, for its next batch to remove
    assert not (tmp_path / "audit-owners" / "4242-dead.lock").exists()


async def test_recovery_completes_the_notes_an_earlier_release_left_in_the_chain(
        recorder: AuditRecorder, tmp_path: Path) -> None:
    await recorder.record(_event(0))
    # A recorder of an earlier release died after noting its batch in the chain's file and
    # storing one of its two events.
    (tmp_path / "audit-owners" / "4242-dead.lock").touch()
    with sqlite3.connect(tmp_path / "audit-chain.db") as conn:
        conn.executemany("INSERT INTO pending (event_id, owner) VALUES (?, '4242-dead')",
                         [("stored-1",), ("never-stored",)])
    stored = {**_event(1), "id": "stored-1"}
    await recorder.store.commit([Write("AuditEvent", "stored-1", stored, extract(stored), "POST")])
    assert "AuditEvent/stored-1 is not in the chain (added outside the recorder)" in await _verdict(recorder)
    assert await recorder.recover() == 1
    assert await _verdict(recorder) == []
    assert recorder.chain.pending("4242-dead") == []
    assert not (tmp_path / "audit-owners" / "4242-dead.lock").exists()


async def test_recovery_leaves_the_notes_of_a_living_recorder_alone(
        recorder: AuditRecorder, tmp_path: Path) -> None:
    other = AuditRecorder(recorder.store, Chain(tmp_path / "audit-chain.db"))
    in_flight = {**_event(1), "id": "in-flight"}
    note = (f"chain/{other.owner.name}/in-flight", b"in-flight")
    await recorder.store.commit([Write("AuditEvent", "in-flight", in_flight, extract(in_flight), "POST"),
                                 Outbox(put=(note,))])
    assert await recorder.recover() == 0
    assert await recorder.store.outbox("chain/") == [note] and recorder.chain.links() == []
    other.close()


async def test_recovery_records_the_writes_whose_request_never_reached_the_trail(
        recorder: AuditRecorder, tmp_path: Path) -> None:
    clinical = SqliteStore(tmp_path / "fhir.db")
    await clinical.open()
    recorder.clinical = clinical
    (tmp_path / "audit-owners").mkdir()
    (tmp_path / "audit-owners" / "4242-dead.lock").touch()
    lost = [{**_event(1), "id": "lost"}, {**_event(2), "id": "lost-2"}]
    # The request that wrote twice: its latest record covers both writes.
    await clinical.commit([Outbox(put=(("audit/4242-dead/lost/1", orjson.dumps(lost[:1])),))])
    await clinical.commit([Outbox(put=(("audit/4242-dead/lost/2", orjson.dumps(lost)),))])
    # A request whose events were recorded before the crash, its record not yet removed.
    await recorder.record_all([_event(3)], ids=["kept"])
    await clinical.commit([Outbox(put=(("audit/4242-dead/kept/1", orjson.dumps([_event(4)])),))])
    assert await recorder.recover() == 2
    assert {v.id for v in (await recorder.store.search(Query("AuditEvent", count=10))).matches} == {
        "lost", "lost-2", "kept"}
    assert await clinical.outbox("audit/") == []
    assert await _verdict(recorder) == []
    await clinical.close()


def _request_events(principal: Principal | None, patients: int, query: str | None) -> list[dict[str, Any]]:
    trail = Trail()
    for n in range(patients):
        trail.owners[f"Patient/p{n}"] = frozenset({f"p{n}"})
        trail.owners[f"Observation/o{n}"] = frozenset({f"p{n}"})
    trail.owners["Practitioner/dr"] = frozenset()
    return request_events(interaction="search-type", status=200, recorded="2026-01-01T00:00:00Z",
                          principal=principal, address="10.0.0.1", trail=trail, query=query)


@pytest.mark.parametrize("principal", [
    server_principal("test"), None,
    Principal(Role.PATIENT, subject="p1", client_id="app", grant=parse_scopes("patient/*.rs"),
              patient="p1", fhir_user="Patient/p1", break_glass="emergency")])
@pytest.mark.parametrize(("patients", "query"), [(0, None), (1, None), (1, "a=b"), (20, "_count=20")])
def test_the_index_entries_of_a_batch_are_each_events_own(
        principal: Principal | None, patients: int, query: str | None) -> None:
    """Two requests in one batch, each event indexed with what a lone extraction finds."""
    batch = [{**event, "id": f"e{n}"} for n, event in enumerate(
        _request_events(principal, patients, query) + _request_events(principal, 2, "x=y"))]
    assert len({id(e["agent"]) for e in batch}) == 2  # a request's events share their parts
    found = index_entries(batch)
    assert [set(entries) for entries in found] == [set(extract(event)) for event in batch]
