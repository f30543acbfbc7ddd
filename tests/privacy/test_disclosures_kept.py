"""The register of disclosures outlives the patient's erasure (services/kept_registers.py):
each disclosure is kept without naming the patient, outside their compartment and their
keys; a refused conditional erasure and an erasure run again leave exactly one of each."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest

from fhir_server import clock
from fhir_server.model.errors import FhirError
from fhir_server.model.platform_codes import DISCLOSURE, REGISTER_SYSTEM
from fhir_server.privacy import disclosures
from fhir_server.privacy.register import RegisterError
from fhir_server.services import erase, kept_registers, server_writes
from fhir_server.services.server_writes import as_server
from tests.privacy.conftest import Server
from tests.privacy.test_disclosures import _add, _run

REGISTER = f"/fhir/Task?code={REGISTER_SYSTEM}|{DISCLOSURE}"


def _call(server: Server, function: Any, *args: Any, **kwargs: Any) -> Any:
    assert server.client.portal is not None
    return server.client.portal.call(lambda: function(*args, **kwargs))


def _register(server: Server) -> dict[str, dict[str, Any]]:
    response = server.client.get(REGISTER, headers=server.headers("admin"))
    assert response.status_code == 200, response.text
    return {e["resource"]["id"]: e["resource"] for e in response.json().get("entry", [])}


def _disclose(server: Server, **extra: Any) -> str:
    ctx = as_server(server.client.app.state.context)  # type: ignore[attr-defined]
    task = _call(server, disclosures.add, ctx, patient="Patient/a", requester="Tribunal judiciaire",
                 legal_basis="CPP art. 60-1", given="the observations of March",
                 on=date(2026, 3, 20), **extra)
    return str(task["id"])


def test_an_erasure_keeps_the_register_without_the_patient(server: Server) -> None:
    given = _disclose(server, resources=["Observation/a-obs0"], visible=True)
    other = _disclose(server)
    assert server.erase_and_settle("a").status_code == 200
    kept = _register(server)
    assert set(kept) == {given, other}
    task = kept[given]
    assert task["for"] == {"display": f"a patient whose record was erased on {clock.now().date()}"}
    assert task["requester"] == {"display": "Tribunal judiciaire"}
    assert task["reasonCode"] == {"text": "CPP art. 60-1"} and task["authoredOn"] == "2026-03-20"
    assert task["description"] == "the observations of March"
    assert task["output"] == [{"type": {"coding": [{"system": f"{REGISTER_SYSTEM}-step",
                                                    "code": "disclosed"}]},
                               "valueString": "Observation (erased)"}]
    assert [t["code"] for t in task["meta"]["tag"]] == [kept_registers.SUBJECT_ERASED]
    assert "Patient/a" not in str(kept) and "a-obs0" not in str(kept)
    # Nobody but administrators reads it: not the other patient, nor a system client.
    for caller in ("patient-b", "ehr"):
        response = server.client.get("/fhir/Task", headers=server.headers(caller))
        assert given not in response.text, caller
    # A second erasure of the same patient keeps them as they are, once each.
    assert server.erase("a").status_code == 200
    assert _register(server) == kept


def test_a_refused_conditional_erasure_leaves_the_register_as_it_was(server: Server) -> None:
    given = _disclose(server)
    ctx = as_server(server.client.app.state.context)  # type: ignore[attr-defined]
    before = _register(server)
    long_ago = datetime(2000, 1, 1, tzinfo=timezone.utc)
    with pytest.raises(FhirError):
        _call(server, erase.sweep, ctx, "a", "retention", unless_updated_since=long_ago)
    assert _register(server) == before and before[given]["for"] == {"reference": "Patient/a"}
    store = ctx.store
    assert _call(server, store.outbox, "kept-register/") == []
    # The condition met, it erases and keeps the copy.
    _call(server, erase.sweep, ctx, "a", "retention",
          unless_updated_since=clock.now() + timedelta(days=1))
    assert _register(server)[given]["for"]["display"].startswith("a patient whose record was erased")


def test_a_copy_stashed_by_a_run_cut_short_is_written_once(server: Server) -> None:
    """A process dying after the store's erasure: the next run finds no original, writes what
    the first stashed; a run dying after the copies were written writes none twice."""
    given = _disclose(server)
    ctx = as_server(server.client.app.state.context)  # type: ignore[attr-defined]
    registry = ctx.registry
    assert _call(server, kept_registers.stash, ctx.store, registry, "a", date(2026, 12, 7)) == 1
    _call(server, ctx.store.erase, erase.compartment(registry, "a"), ("Patient", "a"))
    assert _register(server) == {}
    assert _call(server, kept_registers.stash, ctx.store, registry, "a", date(2026, 12, 8)) == 0
    assert _call(server, kept_registers.flush, ctx.store, "a") == 1
    assert _call(server, kept_registers.flush, ctx.store, "a") == 0
    [task] = _register(server).values()
    assert task["id"] == given and task["for"]["display"].endswith("2026-12-07")


def test_the_command_lists_the_disclosures_kept(sqlite_server: Server,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    task = _add(capsys, "--patient-visible")
    assert sqlite_server.erase_and_settle("a").status_code == 200
    code, out = _run(capsys, "list", "--erased")
    assert code == 0, out
    [line] = out.splitlines()
    assert line.startswith(f"Task/{task} 2026-03-20 to Tribunal judiciaire de Paris")
    assert "about a patient whose record was erased on" in line and "may see it" not in line
    code, out = _run(capsys, "list", "--patient", "Patient/a")
    assert code != 0 and "no Patient Patient/a" in out


def _admin_disclosure(server: Server, **extra: Any) -> str:
    """A disclosure the server writes with more than `disclosures.add` puts in it (as a
    server running `auth=off`, whose REST callers act as the server, or a later command
    correcting the register would)."""
    task = {"resourceType": "Task", "id": str(uuid.uuid4()), "status": "completed", "intent": "order",
            "code": {"coding": [{"system": REGISTER_SYSTEM, "code": DISCLOSURE}]},
            "for": {"reference": "Patient/a"}, "requester": {"display": "Tribunal judiciaire"},
            "reasonCode": {"text": "CPP art. 60-1"}, "description": "the observations of March",
            "authoredOn": "2026-03-20", **extra}
    ctx = as_server(server.client.app.state.context)  # type: ignore[attr-defined]
    _call(server, server_writes.commit, ctx, [server_writes.ServerWrite(task)])
    return str(task["id"])


def test_a_kept_copy_holds_the_register_fields_alone(server: Server) -> None:
    """kept_copy drops meta, for and output and keeps every other field: a note, an
    identifier, the narrative of the original survive the erasure, sealed under the Task
    type's key (not shredded with the patient's)."""
    given = _admin_disclosure(
        server, note=[{"text": "Zwxqvtrudel, born 1961"}],
        identifier=[{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "1610275112043"}],
        text={"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Zwxqvtrudel</div>'})
    assert server.erase_and_settle("a").status_code == 200
    kept = _register(server)[given]
    assert "Zwxqvtrudel" not in str(kept) and "1610275112043" not in str(kept)


def test_a_copy_of_a_disclosure_naming_the_patient_elsewhere_stays_readable(server: Server) -> None:
    """A disclosure naming the patient outside `for`/`output` (here `focus`): its copy still
    names Patient/a, so it is sealed under a's key, which the erasure then destroys: the
    register entry is silently lost (unreadable, left out of the search), and its index
    rows (focus=Patient/a) stay."""
    given = _admin_disclosure(server, focus={"reference": "Patient/a"})
    assert server.erase_and_settle("a").status_code == 200
    count = server.client.get("/fhir/Task?focus=Patient/a&_summary=count", headers=server.headers("admin"))
    assert count.json()["total"] == 0  # 1: an index row names the erased patient
    kept = _register(server)
    assert given in kept and "Patient/a" not in str(kept[given])


def test_an_output_without_a_reference_does_not_block_the_erasure(server: Server) -> None:
    """A Reference with only a display (or identifier) is valid R4 (Reference.reference 0..1);
    kept_copy reads output.valueReference.reference and the erasure fails with a KeyError
    before the store erases anything."""
    _admin_disclosure(server, output=[{
        "type": {"coding": [{"system": f"{REGISTER_SYSTEM}-step", "code": "disclosed"}]},
        "valueReference": {"display": "the paper file"}}])
    assert server.erase_and_settle("a").status_code == 200


def test_a_disclosure_registered_during_an_erasure_waits_for_it(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """A disclosure registered while the patient's erasure runs (here right after its stash)
    waits for the erasure, then is refused (the patient is gone): never erased uncopied."""
    stash = kept_registers.stash
    late: list[asyncio.Task[Any]] = []

    async def stashed(*args: Any) -> int:
        found = await stash(*args)
        ctx = as_server(server.client.app.state.context)  # type: ignore[attr-defined]
        late.append(asyncio.get_running_loop().create_task(disclosures.add(
            ctx, patient="Patient/a", requester="Procureur", legal_basis="CPP art. 77-1-1",
            given="the file", on=date(2026, 3, 21))))
        await asyncio.sleep(0.2)  # it would have been written by now, were it not held off
        return found

    monkeypatch.setattr(kept_registers, "stash", stashed)
    assert server.erase_and_settle("a").status_code == 200

    async def outcome() -> BaseException | None:
        return (await asyncio.gather(late[0], return_exceptions=True))[0]

    refused = _call(server, outcome)
    assert isinstance(refused, RegisterError) and "no Patient Patient/a" in str(refused)
    assert _register(server) == {}


def test_an_erasure_replayed_on_restore_writes_the_copies_a_backup_held_stashed(server: Server) -> None:
    """A backup taken between the stash and the store's erasure holds the stashed copies (in
    the outbox, under no key of the patient's) and the originals: the erasure replayed on
    restore writes the copies, as the run would have."""
    given = _disclose(server)
    ctx = as_server(server.client.app.state.context)  # type: ignore[attr-defined]
    assert _call(server, kept_registers.stash, ctx.store, ctx.registry, "a", date(2026, 12, 7)) == 1
    events: list[dict[str, Any]] = []

    async def record(event: dict[str, Any]) -> str:
        events.append(event)
        return "recorded"

    entry = {"patient": "a", "erased": "2026-12-07T10:00:00Z", "by": "the patient", "reason": "asked"}
    _call(server, erase.replay, ctx.store, ctx.registry, record, entry, "on restore")
    [task] = _register(server).values()
    assert task["id"] == given and task["for"] == {"display": "a patient whose record was erased on 2026-12-07"}
    assert _call(server, ctx.store.outbox, "kept-register/") == [] and len(events) == 1


def _replay(server: Server) -> None:
    ctx = as_server(server.client.app.state.context)  # type: ignore[attr-defined]

    async def record(event: dict[str, Any]) -> str:
        return "recorded"

    entry = {"patient": "a", "erased": "2026-12-07T10:00:00Z", "by": "the patient", "reason": "asked"}
    _call(server, erase.replay, ctx.store, ctx.registry, record, entry, "on restore")


def test_an_erasure_replayed_with_nothing_stashed_writes_no_copy(server: Server) -> None:
    """A backup from before the erasure holds the original, sealed, and no stash: erased,
    no copy (the register loses the entry, as docs/privacy.md says)."""
    _disclose(server)
    _replay(server)
    assert _register(server) == {}


def test_an_erasure_replayed_twice_writes_its_stashed_copies_once(server: Server) -> None:
    """Replayed at each restore and start-up: the second replay leaves the copies the first
    wrote as they are."""
    given = _disclose(server)
    ctx = as_server(server.client.app.state.context)  # type: ignore[attr-defined]
    assert _call(server, kept_registers.stash, ctx.store, ctx.registry, "a", date(2026, 12, 7)) == 1
    for _ in range(2):
        _replay(server)
        [task] = _register(server).values()
        assert task["id"] == given and _call(server, ctx.store.outbox, "kept-register/") == []
