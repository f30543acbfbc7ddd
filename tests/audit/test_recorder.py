"""The recorder: events recorded together share one commit and one link of the chain, and a
batch a crash interrupted is completed by the next start (audit/recorder.py)."""

from __future__ import annotations

import asyncio
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
from fhir_server.store.base import Outbox, Query, Write
from fhir_server.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio


def _event(n: int) -> dict[str, Any]:
    return {"resourceType": "AuditEvent", "type": {"code": "rest"}, "recorded": "2026-01-01T00:00:00Z",
            "agent": [{"requestor": True, "name": f"agent {n}"}], "source": {"observer": {"display": "x"}}}


@pytest.fixture
async def recorder(tmp_path: Path) -> AsyncIterator[AuditRecorder]:
    store = SqliteStore(tmp_path / "audit.db")
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


async def test_recovery_links_what_a_dead_recorder_stored_and_forgets_the_rest(
        recorder: AuditRecorder, tmp_path: Path) -> None:
    await recorder.record(_event(0))
    # A recorder that died after noting its batch and storing one of its two events.
    (tmp_path / "audit-owners" / "4242-dead.lock").touch()
    recorder.chain.intend("4242-dead", ["stored-1", "never-stored"])
    stored = {**_event(1), "id": "stored-1"}
    await recorder.store.commit([Write("AuditEvent", "stored-1", stored, extract(stored), "POST")])
    assert "AuditEvent/stored-1 is not in the chain (added outside the recorder)" in await _verdict(recorder)
    assert await recorder.recover() == 1
    assert await _verdict(recorder) == []
    assert recorder.chain.pending("4242-dead") == []
    assert not (tmp_path / "audit-owners" / "4242-dead.lock").exists()
    # A living recorder's notes are left alone: its batch is still being written.
    other = AuditRecorder(recorder.store, Chain(tmp_path / "audit-chain.db"))
    other.chain.intend(other.owner.name, ["in-flight"])
    assert await recorder.recover() == 0 and other.chain.pending(other.owner.name) == ["in-flight"]
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
