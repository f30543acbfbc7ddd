"""The retention's group erasure when one member, or a step after the store's erasure, fails:
each member ends as it would alone (erased whole, or kept with its intent left), and the
next run finishes what was left announced (services/erase.py `finish_left`)."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

import pytest

from fhir_server import cli
from fhir_server.crypto import patient_scope
from fhir_server.model.errors import FhirError, Kind, fail
from fhir_server.services import erase as erase_service
from fhir_server.store.sqlite import erase as sqlite_erase
from tests.privacy.conftest import Server
from tests.privacy.test_erase_intents import _erasure_reasons
from tests.builders import observation
from tests.privacy.test_retention import (_a_result_for_p_after_the_copies, _archives, _headers, _life,
                                          _put, _run, _seed_p, _seed_p_with_observations, on)
from tests.privacy.test_retention_window import _get

PATIENTS = ("a", "b", "p")  # the records `_seed_p_with_observations` leaves inactive


def _innermost(store: Any) -> Any:
    while (inner := getattr(store, "inner", None) or getattr(store, "main", None)) is not None:
        store = inner
    return store


def _state(server: Server) -> dict[str, dict[str, Any]]:
    """Per patient: the Patient's read status, whether the ledger holds its erasure, whether
    its data keys remain, its erasure AuditEvents, its intents left."""
    erasures = server.client.app.state.context.erasures  # type: ignore[attr-defined]
    return {who: {
        "read": server.client.get(f"/fhir/Patient/{who}", headers=_headers(server)).status_code,
        "ledger": erasures.ledger.find(who) is not None,
        "keys": bool(erasures.keys.keys_of(patient_scope(who), retired=True)),
        "audited": len(_erasure_reasons(server.client, who)),
        "intents": sum(i["patient"] == who for i in erasures.ledger.intended()),
    } for who in PATIENTS}


ERASED = {"read": 404, "ledger": True, "keys": False, "audited": 1, "intents": 0}
KEPT = {"read": 200, "ledger": False, "keys": True, "audited": 0}


def _the_next_run_erases_every_record(server: Server) -> None:
    with on(date(2029, 1, 11)):
        _run(server)
    assert all(state == ERASED for state in _state(server).values()), _state(server)


def _seeded(server: Server) -> None:
    _seed_p_with_observations(server)
    erasures = server.client.app.state.context.erasures  # type: ignore[attr-defined]
    with on(date(2027, 1, 10)):
        for who in PATIENTS:
            erasures.keys.current(patient_scope(who))


def test_a_member_the_store_fails_to_erase_leaves_the_others_as_each_would_be_alone(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """MongoDB erases each member in its own transaction: the others stand, erased whole
    (ledger entry, keys destroyed, AuditEvent); SQLite's one transaction rolls them all back.
    Either way no member is erased unrecorded, and the next run finishes the failed ones."""
    _seeded(server)
    store = _innermost(server.client.app.state.context.store)  # type: ignore[attr-defined]
    tried: list[str] = []
    one_each = type(store).__name__.startswith("Mongo")
    if one_each:
        real = store.erase

        async def erase(compartment: Any, last: Any, *args: Any, **kw: Any) -> Any:
            tried.append(last[1])
            if len(tried) == 2:
                raise fail(Kind.BUSY, "transient", "The store is busy; retry later.")
            return await real(compartment, last, *args, **kw)
        monkeypatch.setattr(store, "erase", erase)
    else:
        real_remove = sqlite_erase.remove

        def remove(conn: Any, search: Any, codec: Any, compartment: Any, last: Any, *args: Any) -> Any:
            tried.append(last[1])
            if len(tried) == 2:
                raise fail(Kind.BUSY, "transient", "The store is busy; retry later.")
            return real_remove(conn, search, codec, compartment, last, *args)
        monkeypatch.setattr(sqlite_erase, "remove", remove)
    with on(date(2029, 1, 10)):
        made = _run(server)
    state = _state(server)
    failed = {action.target.split("/")[1] for action, _ in made.failed}
    assert failed == ({tried[1]} if one_each else set(PATIENTS)), made.failed
    for who in PATIENTS:
        expected = KEPT if who in failed else ERASED
        assert {k: state[who][k] for k in expected} == expected, (who, state)
    monkeypatch.undo()
    _the_next_run_erases_every_record(server)


def test_an_error_after_the_stores_erasure_leaves_each_member_announced_and_the_next_run_finishes_it(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forgetting the day's figures fails once the store has erased the group: no member's
    erasure is settled without it, none stops another's, each intent stays, and the next run
    finishes each erasure whole, once."""
    _seeded(server)
    monkeypatch.setattr(erase_service, "forget_figures", _fails_once(erase_service.forget_figures))
    with on(date(2029, 1, 10)):
        made = _run(server)
    assert {action.target for action, _ in made.failed} == {f"Patient/{who}" for who in PATIENTS}
    left = _state(server)
    assert all(s["read"] == 404 and s["intents"] == 1 and not s["ledger"] for s in left.values()), left
    _the_next_run_erases_every_record(server)


def test_an_erasure_stopped_again_keeps_its_intent_and_the_others_are_finished(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """`finish_left` tries each erasure left announced once: one that fails again is named
    with its error and keeps its intent; the others are finished."""
    _seeded(server)
    real = erase_service.forget_figures
    monkeypatch.setattr(erase_service, "forget_figures", _busy)
    with on(date(2029, 1, 10)):
        _run(server)
    real_finish = erase_service._finish

    async def finish(ctx: Any, intent: dict[str, Any]) -> bool:
        if intent["patient"] == "b":
            raise fail(Kind.FAULT, "exception", "The erasure failed.")
        return await real_finish(ctx, intent)
    monkeypatch.setattr(erase_service, "forget_figures", real)
    monkeypatch.setattr(erase_service, "_finish", finish)
    ctx = server.client.app.state.context  # type: ignore[attr-defined]
    with on(date(2029, 1, 11)):
        again, stopped = server.client.portal.call(erase_service.finish_left, ctx)  # type: ignore[union-attr]
    assert sorted(again) == ["a", "p"] and list(stopped) == ["b"]
    assert stopped["b"].kind is Kind.FAULT
    state = _state(server)
    assert state["a"] == state["p"] == ERASED and state["b"]["intents"] == 1, state


def test_a_busy_store_stops_finishing_at_the_first_erasure(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the store away (BUSY), every other erasure would wait its time-out too: the first
    is named and the others left announced, untried."""
    _seeded(server)
    monkeypatch.setattr(erase_service, "forget_figures", _busy)
    with on(date(2029, 1, 10)):
        _run(server)
    tried: list[str] = []

    async def finish(ctx: Any, intent: dict[str, Any]) -> bool:
        tried.append(intent["patient"])
        raise fail(Kind.BUSY, "transient", "The store is busy; retry later.")
    monkeypatch.setattr(erase_service, "_finish", finish)
    ctx = server.client.app.state.context  # type: ignore[attr-defined]
    with on(date(2029, 1, 11)):
        again, stopped = server.client.portal.call(erase_service.finish_left, ctx)  # type: ignore[union-attr]
    assert again == [] and len(tried) == 1 and list(stopped) == tried
    assert all(state["intents"] == 1 for state in _state(server).values())


def test_a_shared_resource_keeps_its_copy_when_its_archive_is_left_announced(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """a's original is erased, its erasure left announced by an error after the store's; p,
    in the same group, is refused (active again): p's copies go, but not the copy of the
    Observation both records hold, whose original a's erasure removed."""
    with on(date(2027, 1, 10)):
        _seed_p(server)
        _put(server, {**observation("Patient/p"), "id": "shared", "performer": [{"reference": "Patient/a"}]})
    _a_result_for_p_after_the_copies(monkeypatch)
    monkeypatch.setattr(erase_service, "forget_figures", _fails_once(erase_service.forget_figures))
    with on(date(2029, 1, 10)):
        _run(server)
    assert _get(server, "Patient/a") == 404 and _get(server, "Observation/shared") == 404
    copy = _life(server).pseudonyms.of("Observation/shared")
    assert copy in {resource["id"] for resource in _archives(server)}


def _fails_once(real: Any) -> Any:
    calls = [0]

    async def failing(*args: Any) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise fail(Kind.BUSY, "transient", "The store is busy; retry later.")
        await real(*args)
    return failing


async def _busy(*args: Any) -> None:
    raise fail(Kind.BUSY, "transient", "The store is busy; retry later.")


def test_a_retention_process_wipes_the_hl7_inbox_as_the_server_does(sqlite_server: Server) -> None:
    """The erasures a retention process makes or finishes wipe the patient's HL7 v2 messages:
    its erasure set-up is the server's."""
    async def wipes() -> bool:
        async with cli._lifecycle(sqlite_server.settings) as life:
            return life.ctx.erasures is not None and life.ctx.erasures.messages is not None
    assert asyncio.run(wipes())


def test_an_inbox_locked_fails_its_records_not_the_run(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The HL7 v2 inbox locked past its busy timeout while the group's erasures wipe it: each
    record's erasure is left announced (BUSY), the run goes on and reports them."""
    _seeded(server)
    erasures = server.client.app.state.context.erasures  # type: ignore[attr-defined]

    async def locked(patient: str) -> int:
        raise fail(Kind.BUSY, "transient", "The HL7 v2 inbox is busy; retry later.")
    monkeypatch.setattr(erasures, "messages", locked)
    with on(date(2029, 1, 10)):
        made = _run(server)
    assert {action.target for action, _ in made.failed} == {f"Patient/{who}" for who in PATIENTS}
    monkeypatch.undo()
    _the_next_run_erases_every_record(server)


def test_a_start_finishes_every_erasure_it_can_before_refusing_to_serve(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """One left erasure fails again at start (not BUSY): the start still refuses to serve
    with its error, but only after finishing the others."""
    _seeded(server)
    monkeypatch.setattr(erase_service, "forget_figures", _busy)
    with on(date(2029, 1, 10)):
        _run(server)
    monkeypatch.undo()
    ctx = server.client.app.state.context  # type: ignore[attr-defined]
    first = ctx.erasures.ledger.intended()[0]["patient"]  # the one a start tries first
    real_finish = erase_service._finish

    async def finish(ctx: Any, intent: dict[str, Any]) -> bool:
        if intent["patient"] == first:
            raise fail(Kind.FAULT, "exception", "The erasure failed.")
        return await real_finish(ctx, intent)
    monkeypatch.setattr(erase_service, "_finish", finish)
    with on(date(2029, 1, 11)), pytest.raises(FhirError) as raised:
        server.client.portal.call(erase_service.reconcile, ctx)  # type: ignore[union-attr]
    assert raised.value.kind is Kind.FAULT
    state = _state(server)
    assert state[first]["intents"] == 1, state
    assert all(state[who] == ERASED for who in PATIENTS if who != first), state
