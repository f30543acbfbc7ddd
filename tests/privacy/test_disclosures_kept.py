"""The register of disclosures outlives the patient's erasure (services/kept_registers.py):
each disclosure is kept without naming the patient, outside their compartment and their
keys; a refused conditional erasure and an erasure run again leave exactly one of each."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest

from fhir_server import clock
from fhir_server.model.errors import FhirError
from fhir_server.model.platform_codes import DISCLOSURE, REGISTER_SYSTEM
from fhir_server.privacy import disclosures
from fhir_server.services import erase, kept_registers
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
