"""The retention's archive of an inactive record (privacy/retention.py): a result written
just before the store erases the record's original, after the run last looked at the record,
is not erased with no copy of it (the store checks the record's activity in the transaction
that erases it: `Store.erase`, conditional), on both stores."""

from __future__ import annotations

from datetime import date
from functools import partial
from typing import Any

import pytest

from fhir_server.crypto import ErasureLedger, patient_scope
from fhir_server.services import erase as erase_service
from fhir_server.services import server_writes
from tests.builders import observation
from tests.privacy.conftest import Server
from tests.privacy.test_erase_intents import _erasure_reasons, _start_again
from tests.privacy.test_retention import (_archives, _headers, _life, _run, _seed_p_with_observations,
                                          _served, on)


def _a_result_for_p_in_the_window(server: Server, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A result about p committed when the store is asked to erase p's original (with those
    of its group): after every check the retention makes before it. The store's erasures
    asked, by patient."""
    store = server.client.app.state.context.store  # type: ignore[attr-defined]
    erase_each = store.erase_each
    asked: list[str] = []

    async def late(erasures: Any, **options: Any) -> Any:
        asked.extend(erasure.last[1] for erasure in erasures)
        if ("Patient", "p") in [erasure.last for erasure in erasures]:
            await server_writes.commit(_life(server).server, [server_writes.ServerWrite(
                {**observation("Patient/p"), "id": "p-late"})])
        return await erase_each(erasures, **options)

    monkeypatch.setattr(store, "erase_each", late)
    return asked


def _get(server: Server, path: str) -> int:
    return server.client.get(f"/fhir/{path}", headers=_headers(server)).status_code


def test_a_result_written_as_the_original_is_erased_keeps_the_record_whole(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    _seed_p_with_observations(server)
    erasures = server.client.app.state.context.erasures  # type: ignore[attr-defined]
    with on(date(2027, 1, 10)):
        erasures.keys.current(patient_scope("p"))
    asked = _a_result_for_p_in_the_window(server, monkeypatch)
    with on(date(2029, 1, 10)):
        made = _run(server)
    assert "p" in asked
    assert [(a.target, "active again" in why) for a, why in made.failed] == [("Patient/p", True)]
    for path in ("Patient/p", "Observation/p-late", "Observation/p-obs", "Observation/p-obs-0"):
        assert _get(server, path) == 200, path
    for id in ("a", "b"):
        assert _get(server, f"Patient/{id}") == 404
    archives = _archives(server)
    assert not [r for r in archives if r.get("birthDate") == "1961"]  # p's copies removed
    assert len([r for r in archives if r["resourceType"] == "Patient"]) == 2  # a's and b's
    # the refused erasure destroyed no key and left nothing to finish at the next start
    assert erasures.keys.keys_of(patient_scope("p"))
    assert erasures.ledger.find("p") is None and erasures.ledger.intended() == []


def test_without_a_write_in_the_window_the_record_is_archived_and_erased(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    _seed_p_with_observations(server)
    with on(date(2029, 1, 10)):
        made = _run(server)
    assert made.failed == []
    assert _get(server, "Patient/p") == 404 and _get(server, "Observation/p-obs") == 404
    assert len([r for r in _archives(server) if r.get("birthDate") == "1961"]) == 1


def test_an_archive_cut_short_before_the_erasure_is_finished_on_the_same_condition(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process killed once the erasures of a group's originals are announced, before
    the store erased them; a result comes in for one; the next start finishes each announced
    erasure on its condition: that record was written to since, so nothing of it is erased
    and its intent is withdrawn (its archive copies stay: the next run does not archive it
    again), the others of the group are erased."""
    _seed_p_with_observations(server)
    with monkeypatch.context() as patch:
        patch.setattr(erase_service, "compartment", _killed)
        with on(date(2029, 1, 10)), pytest.raises(Killed):
            _run(server)
    erasures = server.client.app.state.context.erasures  # type: ignore[attr-defined]
    group = [intent["patient"] for intent in erasures.ledger.intended()]
    assert sorted(group) == ["a", "b", "p"]  # the group's, announced together
    who, *others = group
    with on(date(2029, 1, 10)):
        server_writes_commit(server, {**observation(f"Patient/{who}"), "id": "late"})
        assert sorted(_start_again(server)) == sorted(others)
    assert erasures.ledger.intended() == [] and erasures.ledger.find(who) is None
    assert _get(server, f"Patient/{who}") == 200 and _get(server, "Observation/late") == 200
    assert erasures.keys.keys_of(patient_scope(who))
    for other in others:
        assert erasures.ledger.find(other) is not None and _get(server, f"Patient/{other}") == 404


class Killed(Exception):
    """The process dying there (not a FhirError: nothing catches it)."""


def _killed(*args: object) -> None:
    raise Killed


def server_writes_commit(server: Server, resource: dict[str, Any]) -> None:
    _served(server, partial(server_writes.commit, _life(server).server,
                            [server_writes.ServerWrite(resource)]))


def test_an_archive_killed_after_the_stores_erasure_is_finished_whole_at_the_next_start(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's erasure of a group's originals committed, then the process died before
    the first record's keys were destroyed; a write to that record lands before the restart:
    each erasure of the group is finished all the same (its condition held when the store
    erased), not withdrawn with the record gone and its key kept."""
    _seed_p_with_observations(server)

    async def killed(*_: object, **__: object) -> None:
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(erase_service.notifications, "forget", killed)  # right after the store's erasure
        with on(date(2029, 1, 10)), pytest.raises(Killed):
            _run(server)
    erasures = server.client.app.state.context.erasures
    group = [intent["patient"] for intent in erasures.ledger.intended()]
    assert sorted(group) == ["a", "b", "p"]
    with on(date(2029, 1, 10)):
        server_writes_commit(server, {**observation(f"Patient/{group[0]}"), "id": "late"})
        _start_again(server)
    assert erasures.ledger.intended() == []
    for patient in group:
        assert erasures.ledger.find(patient) is not None
        assert erasures.keys.keys_of(patient_scope(patient)) == []


def test_a_group_killed_between_two_of_its_audit_events_finishes_each_once(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store erased a group's originals together, and the ledger took their entries in
    one write; the process died once the first record's AuditEvent was recorded and its
    erasure settled, before the second's event: the next start records the missing events,
    and every record of the group has one ledger entry and one AuditEvent."""
    _seed_p_with_observations(server)
    erasures = server.client.app.state.context.erasures  # type: ignore[attr-defined]
    record = erasures.record
    calls: list[object] = []

    async def second_killed(event: Any) -> str:
        calls.append(event)
        if len(calls) == 2:
            raise Killed
        return await record(event)

    with monkeypatch.context() as patch:
        patch.setattr(erasures, "record", second_killed)
        with on(date(2029, 1, 10)), pytest.raises(Killed):
            _run(server)
    left = [i["patient"] for i in erasures.ledger.intended()]
    assert len(left) == 2 and len(erasures.ledger.entries()) == 3
    with on(date(2029, 1, 10)):
        assert sorted(_start_again(server)) == sorted(left)
    assert erasures.ledger.intended() == []
    assert sorted(e["patient"] for e in erasures.ledger.entries()) == ["a", "b", "p"]
    for patient in ("a", "b", "p"):
        assert _erasure_reasons(server.client, patient) == ["retention: record inactive for P2Y"]
        assert erasures.keys.keys_of(patient_scope(patient)) == []


def test_a_groups_erasures_read_and_write_the_ledger_once(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ledger is read and verified whole for each write, and grows with every erasure
    ever made (thousands in a retention run): the erasures of a group append their entries
    in one write, after one read."""
    _seed_p_with_observations(server)
    reads: list[bool] = []
    verified = ErasureLedger._read_verified
    monkeypatch.setattr(ErasureLedger, "_read_verified",
                        lambda self, fd: reads.append(True) or verified(self, fd))
    with on(date(2029, 1, 10)):
        made = _run(server)
    assert made.failed == [] and made.counts()["patient-record archive"] == 3
    assert len(reads) == 1
    erasures = server.client.app.state.context.erasures  # type: ignore[attr-defined]
    assert sorted(e["patient"] for e in erasures.ledger.entries()) == ["a", "b", "p"]
