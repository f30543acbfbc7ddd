"""Pruning the audit trail at a signed checkpoint (audit/prune.py): each kind of log goes on
its day, the chain verifies afterwards from the checkpoint, and a forged checkpoint or pruned
note does not; on each store."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server import clock
from fhir_server.audit.chain import Chain
from fhir_server.audit.events import command_event, request_events, security_event
from fhir_server.audit.trail import Trail
from fhir_server.audit.prune import Trimmer, verify_pruned
from fhir_server.audit.recorder import AuditRecorder
from fhir_server.search import Query
from fhir_server.store.base import Store
from tests.store.conftest import store  # noqa: F401 - the store fixture, on each store

KEY = b"k" * 32
pytestmark = pytest.mark.anyio


def _at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)


async def _record(recorder: AuditRecorder, day: date, connection: bool) -> None:
    with clock.frozen(_at(day)):
        if connection:
            event = security_event(kind="login", status=200, recorded=clock.instant(), who="u",
                                   client_id="portal", address=None)
        else:  # an access log: the event of a RESTful read
            [event] = request_events(interaction="read", status=200, recorded=clock.instant(),
                                     principal=None, address=None, trail=Trail(), query=None)
        await recorder.record(event)


@pytest.fixture
def trail(store: Store, tmp_path: Path) -> Iterator[tuple[Chain, AuditRecorder, Trimmer]]:  # noqa: F811
    """An audit trail on `store`: its chain, its recorder, its pruning."""
    chain = Chain(tmp_path / "audit-chain.db")
    yield chain, AuditRecorder(store, chain), Trimmer(store, chain.path, KEY)
    chain.close()


async def _verdict(store: Store, chain: Chain, trimmer: Trimmer) -> tuple[list[str], int]:
    events: dict[str, dict[str, Any]] = {}
    page = await store.search(Query("AuditEvent", count=1000))
    events.update((v.id, orjson.loads(v.body)) for v in page.matches if v.body)
    verdict, _ = verify_pruned(chain.links(), events, list(events), (), trimmer.state())
    return verdict.problems, len(events)


async def test_logs_go_on_their_days_and_the_chain_still_verifies(store: Store,  # noqa: F811
                                                                 trail: tuple[Chain, AuditRecorder, Trimmer]) -> None:
    chain, recorder, trimmer = trail
    await _record(recorder, date(2027, 1, 10), connection=False)
    await _record(recorder, date(2027, 1, 10), connection=True)
    await _record(recorder, date(2027, 3, 1), connection=False)
    # `due` takes, per kind, the first day kept: recorded before it, an event goes
    due = await trimmer.due({"access-logs": date(2027, 1, 10), "connection-logs": date(2027, 1, 10)})
    assert due == {"access-logs": [], "connection-logs": []}
    due = await trimmer.due({"access-logs": date(2027, 1, 11), "connection-logs": date(2027, 1, 10)})
    assert [len(due["access-logs"]), len(due["connection-logs"])] == [1, 0]
    done = await trimmer.prune(due)
    assert done.links == 1  # the first link, its one event pruned: cut at a checkpoint
    problems, left = await _verdict(store, chain, trimmer)
    assert problems == [] and left == 2
    assert [link.seq for link in chain.links()] == [2, 3]
    # the connection log, alone in link 2, goes later; link 3's access log stays
    due = await trimmer.due({"access-logs": date(2027, 1, 11), "connection-logs": date(2027, 1, 10)})
    assert due == {"access-logs": [], "connection-logs": []}
    due = await trimmer.due({"access-logs": date(2027, 1, 11), "connection-logs": date(2027, 1, 11)})
    assert len(due["connection-logs"]) == 1
    assert (await trimmer.prune(due)).links == 1
    problems, left = await _verdict(store, chain, trimmer)
    assert problems == [] and left == 1


async def test_an_event_pruned_behind_a_younger_one_verifies_from_its_note(store: Store,  # noqa: F811
                                                                          trail: tuple[Chain, AuditRecorder, Trimmer]) -> None:
    chain, recorder, trimmer = trail
    await _record(recorder, date(2027, 1, 10), connection=True)  # kept 13 months
    await _record(recorder, date(2027, 1, 11), connection=False)  # kept 1 year
    due = await trimmer.due({"access-logs": date(2027, 1, 12), "connection-logs": date(2027, 1, 10)})
    assert (await trimmer.prune(due)).links == 0  # link 1 holds a connection log still kept
    problems, left = await _verdict(store, chain, trimmer)
    assert problems == [] and left == 1


async def test_accountability_events_are_not_access_logs(store: Store,  # noqa: F811
                                                         trail: tuple[Chain, AuditRecorder, Trimmer]) -> None:
    # A command (a retention run, a breach or disclosure record, a load) accounts for what
    # was done with the data: the access-log rule never prunes it, however old.
    _, recorder, trimmer = trail
    with clock.frozen(_at(date(2027, 1, 10))):
        await recorder.record(command_event(command="load", action="C", recorded=clock.instant(),
                                            operator="op", entities=[]))
    await _record(recorder, date(2027, 1, 10), connection=False)
    due = await trimmer.due({"access-logs": date(2030, 1, 1)})
    assert len(due["access-logs"]) == 1  # the read, not the command


async def test_a_forged_checkpoint_or_note_is_reported(store: Store,  # noqa: F811
                                                      trail: tuple[Chain, AuditRecorder, Trimmer]) -> None:
    chain, recorder, trimmer = trail
    for day in (1, 2, 3):
        await _record(recorder, date(2027, 1, day), connection=False)
    await trimmer.prune(await trimmer.due({"access-logs": date(2027, 1, 2)}))
    assert (await _verdict(store, chain, trimmer))[0] == []
    # someone without the key removes link 2 and moves the checkpoint past it
    with sqlite3.connect(chain.path) as conn:
        digest = conn.execute("SELECT digest FROM link WHERE seq = 2").fetchone()[0]
        conn.execute("DELETE FROM link WHERE seq = 2")
        conn.execute("UPDATE checkpoint SET seq = 2, digest = ?", (digest,))
    problems, _ = await _verdict(store, chain, trimmer)
    assert any("not signed" in p for p in problems)
    # a note claiming an event was pruned, without the key
    with sqlite3.connect(chain.path) as conn:
        conn.execute("INSERT INTO pruned (event_id, mac) VALUES ('x', 'forged')")
    problems, _ = await _verdict(store, chain, trimmer)
    assert any("AuditEvent/x is noted as pruned without a valid signature" in p for p in problems)
    assert (await _verdict(store, chain, Trimmer(store, chain.path, b"o" * 32)))[0]  # another key


async def test_when_every_event_is_pruned_the_chain_goes_on(store: Store,  # noqa: F811
                                                           trail: tuple[Chain, AuditRecorder, Trimmer]) -> None:
    chain, recorder, trimmer = trail
    await _record(recorder, date(2027, 1, 1), connection=False)
    await _record(recorder, date(2027, 1, 2), connection=False)
    assert (await trimmer.prune(await trimmer.due({"access-logs": date(2027, 1, 3)}))).links == 1
    assert [link.seq for link in chain.links()] == [2]  # the newest stays: the next follows it
    await _record(recorder, date(2027, 1, 4), connection=False)
    problems, left = await _verdict(store, chain, trimmer)
    assert problems == [] and left == 1
