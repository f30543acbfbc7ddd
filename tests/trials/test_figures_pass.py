"""The daily figures pass (trials/figures_pass.py): the figures every study's snapshot holds
after it are those the day's first call would have computed, on both stores, for worlds
hypothesis draws; the call is then served from the snapshot; the patients read are audited."""

from __future__ import annotations

import itertools
import time
import weakref
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings, strategies as st

from fhir_server import cli, clock
from fhir_server.services import study_access
from fhir_server.services.study_access import FIGURES_PREFIX
from fhir_server.store.base import Outbox
from fhir_server.trials import consents_kept, figures_pass, inverse_counts
from fhir_server.trials.eligibility import Trial
from tests.builders import consent
from tests.http.helpers import send
from tests.privacy.conftest import serving, spied_children
from tests.trials.eligibility_builders import ICD10, coded, condition, criterion, group, patient, quantity
from tests.trials.inverse_world import DR, STUDY, InverseWorld, inverse_world, new_day  # noqa: F401  (fixture)
from tests.trials.match_world import RECENT, site, study

STUDIES = (STUDY, "s2", "s3", "s4")
_IDS = itertools.count()


def _put(client: TestClient, resource: dict[str, Any]) -> None:
    r = send(client, "PUT", f"/fhir/{resource['resourceType']}/{resource['id']}", resource)
    assert r.status_code in (200, 201), r.text


@pytest.fixture(scope="module")
def world(inverse_world: InverseWorld) -> InverseWorld:  # noqa: F811
    """The inverse world with two more studies at the investigator's site: lung cancer under
    70, and a breast cancer location excluding men."""
    client = inverse_world.client
    _put(client, group("s3-criteria", criterion("condition", coded(ICD10, "C34"), text="Lung cancer"),
                       criterion("age", quantity(70, "<", "a"), text="Under 70")))
    _put(client, study("s3", "phase-2", [site("lyon", "recruiting", RECENT)]))
    _put(client, group("s4-criteria", criterion("condition", coded(ICD10, "C50.4"), text="Upper outer quadrant"),
                       criterion("sex", {"valueCodeableConcept": {"coding": [{
                           "system": "http://hl7.org/fhir/administrative-gender", "code": "male"}]}},
                                 exclude=True, text="Not a man")))
    _put(client, study("s4", "phase-3", [site("lyon", "recruiting", RECENT)]))
    return inverse_world


_PATIENTS = st.lists(st.tuples(
    st.sampled_from(["C50.4", "C50.9", "C34.1", "C18.7", None]),  # diagnosis
    st.sampled_from(["1940-01-01", "1960-06-15", "2001-03-03", None]),  # birth
    st.sampled_from(["female", "male", None]),
    st.sampled_from(["75013", "69003", None]),  # postal code
    st.booleans()), max_size=8)  # counted (research Consent) or not


def _add(client: TestClient, drawn: tuple[str | None, str | None, str | None, str | None, bool]) -> None:
    code, birth, gender, postal, counted = drawn
    id = f"w{next(_IDS)}"
    body = patient(birth=birth, gender=gender, id=id)
    if postal:
        body["address"] = [{"postalCode": postal}]
    _put(client, body)
    if code:
        _put(client, {**condition(code, id=f"{id}-c"), "subject": {"reference": f"Patient/{id}"}})
    _put(client, {**consent(id, actor=DR), "id": f"{id}-k0"})
    if counted:
        _put(client, {**consent(id, "research"), "id": f"{id}-k1"})


def _answers(world: InverseWorld) -> dict[str, Any]:
    found = {}
    for id in STUDIES:
        r = world.match(id, "site")
        assert r.status_code == 200, r.text
        found[id] = r.json()
    return found


def _stored(client: TestClient) -> dict[str, bytes]:
    store = client.app.state.context.store  # type: ignore[attr-defined]
    return dict(client.portal.call(store.outbox, FIGURES_PREFIX))  # type: ignore[union-attr]


def _pass(client: TestClient) -> tuple[figures_pass.Report, list[dict[str, Any]]]:
    """Today's pass, as if none ran today yet, and the AuditEvents it recorded."""
    store = client.app.state.context.store  # type: ignore[attr-defined]
    client.portal.call(store.commit, [Outbox(remove=(figures_pass.DONE,))])  # type: ignore[union-attr]
    new_day(client)
    events: list[dict[str, Any]] = []

    class Recorder:
        async def record_all(self, batch: Any) -> None:
            events.extend(batch)

    report = client.portal.call(figures_pass.run, client.app.state.context,  # type: ignore[union-attr, attr-defined]
                                cli.figures_audit(Recorder()))  # type: ignore[arg-type]
    return report, events


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_PATIENTS, st.sampled_from([1, inverse_counts.BASE]))
def test_the_pass_stores_the_figures_the_first_call_computes(
        world: InverseWorld, monkeypatch: pytest.MonkeyPatch, drawn: list[Any], base: int) -> None:
    monkeypatch.setattr(inverse_counts, "BASE", base)
    for one in drawn:
        _add(world.client, one)
    new_day(world.client)
    computed = _answers(world)  # each call computes its study's snapshot
    report, events = _pass(world.client)
    stored = _stored(world.client)
    assert report.stored == len(STUDIES) and set(stored) == {f"{FIGURES_PREFIX}{s}" for s in STUDIES}
    assert _answers(world) == computed
    assert _stored(world.client) == stored  # served from the pass's snapshots: none computed again
    assert report.patients == report.events == len(events)
    assert report.pruned + report.evaluated == report.patients * report.studies


def test_each_counted_patient_gets_one_event_saying_so(world: InverseWorld) -> None:
    report, events = _pass(world.client)
    named = [e["entity"][0]["what"]["reference"] for e in events]
    assert len(named) == len(set(named)) == report.patients
    assert {"Patient/ann", "Patient/bea", "Patient/cat", "Patient/gus"} <= set(named)
    assert not {"Patient/dot", "Patient/eve", "Patient/fay", "Patient/hal"} & set(named)  # not counted
    assert all(report.day in e["entity"][0]["description"] for e in events)
    assert {e["agent"][0]["name"] for e in events} == {figures_pass.PRINCIPAL}
    assert _pass(world.client)[0].events == report.events  # a new day's pass (DONE removed) audits again


def test_a_second_pass_the_same_day_does_nothing(world: InverseWorld) -> None:
    _pass(world.client)
    again = world.client.portal.call(figures_pass.run, world.client.app.state.context, _refuse)  # type: ignore[union-attr, attr-defined]
    assert again.done_before and again.events == 0


async def _refuse(day: str, patients: Any) -> None:
    raise AssertionError("nothing is read, nothing is recorded")


def test_a_call_stored_first_keeps_its_snapshot(world: InverseWorld) -> None:
    new_day(world.client)
    _answers(world)
    before = _stored(world.client)
    report, _ = _pass(world.client)  # new_day inside drops them: stored anew
    assert report.stored == len(STUDIES)
    store = world.client.app.state.context.store  # type: ignore[attr-defined]
    world.client.portal.call(store.commit, [Outbox(remove=(figures_pass.DONE,))])  # type: ignore[union-attr]
    again = world.client.portal.call(figures_pass.run, world.client.app.state.context, _ignore)  # type: ignore[union-attr, attr-defined]
    assert again.stored == 0 and set(_stored(world.client)) == set(before)


async def _ignore(day: str, patients: Any) -> None:
    return None


def test_digests_are_order_free_and_split_as_sets_do() -> None:
    key = b"k" * 32
    members = [f"p{n}" for n in range(9)]
    assert inverse_counts.set_digest(key, members) == inverse_counts.set_digest(key, reversed(members))
    whole = inverse_counts.set_digest(key, members)
    part = inverse_counts.set_digest(key, members[:4])
    assert (whole - part) % inverse_counts.MODULUS == inverse_counts.set_digest(key, members[4:])
    tally = inverse_counts.Tally()
    for member in members[:4]:
        tally.add(("undetermined", "", ()), inverse_counts.member_digest(key, member))
    cells, rows = tally.rounded(key, (len(members), whole), Trial("s", ()))
    parts = {("pruned",): members[4:], ("undetermined", ""): members[:4]}
    assert (cells, rows) == inverse_counts.controlled(key, (len(members), whole), {
        cell: (len(found), inverse_counts.set_digest(key, found)) for cell, found in parts.items()})
    assert sum(cells.values()) == inverse_counts.rounded(key, members)


def test_the_server_starts_the_pass_at_start_and_on_each_new_day_in_a_niced_process(
        tmp_path: Path, signing_keys: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIR_SERVER_FIGURES_DAILY", "true")
    started = spied_children(monkeypatch)
    with clock.frozen(datetime.now(UTC)) as frozen, serving("sqlite", tmp_path, signing_keys, monkeypatch) as server:
        store = server.client.app.state.context.store  # type: ignore[attr-defined]
        for _ in range(600):  # the child process starts, then runs
            if server.client.portal.call(figures_pass.done, store) is not None:  # type: ignore[union-attr]
                break
            time.sleep(0.1)
        assert server.client.portal.call(figures_pass.done, store) == date.today().isoformat()  # type: ignore[union-attr]
        time.sleep(0.2)
        assert [argv[1:] for argv in started] == [("-m", "fhir_server.cli", "figures", "run", "--nice", "10")]
        frozen.advance(24 * 3600)
        for _ in range(600):
            if len(started) == 2:
                break
            time.sleep(0.1)
        assert len(started) == 2


def test_a_call_served_from_the_pass_judges_only_the_pre_screening_candidates(
        world: InverseWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    _pass(world.client)
    monkeypatch.setattr(consents_kept, "_KEPT", weakref.WeakKeyDictionary())
    judged: list[str] = []
    counted = study_access.counted

    def spy(found: Any, patient: str, day: str) -> bool:
        judged.append(patient)
        return counted(found, patient, day)

    monkeypatch.setattr(study_access, "counted", spy)
    assert world.match(STUDY, "site").status_code == 200
    assert set(judged) <= {"bea", "cat", "hal"}  # those whose Consent names pre-screening at all


def test_a_study_added_after_the_pass_is_computed_by_its_first_call(
        world: InverseWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inverse_counts, "BASE", 1)  # a handful of patients may round to 0
    report, _ = _pass(world.client)
    _put(world.client, group("s5-criteria", criterion("condition", coded(ICD10, "C50"), text="Breast cancer")))
    _put(world.client, study("s5", "phase-2", [site("lyon", "recruiting", RECENT)]))
    assert f"{FIGURES_PREFIX}s5" not in _stored(world.client)
    response = world.match("s5", "site")
    assert response.status_code == 200, response.text
    population = next(p["valueInteger"] for p in response.json()["parameter"] if p["name"] == "population")
    assert population > 0 and f"{FIGURES_PREFIX}s5" in _stored(world.client)


def test_an_erasure_during_the_pass_leaves_it_storing_nothing(world: InverseWorld) -> None:
    """A patient the pass read, erased before it stores (the erasure drops the day's figures
    and marks it): the pass stores no figure counting them, and fails, to run again."""
    from fhir_server.model.errors import FhirError, Kind
    from fhir_server.services import erase

    client = world.client
    ctx = client.app.state.context  # type: ignore[attr-defined]
    client.portal.call(ctx.store.commit, [Outbox(remove=(figures_pass.DONE,))])  # type: ignore[union-attr]
    client.portal.call(erase.forget_figures, ctx.store)  # type: ignore[union-attr]
    new_day(client)

    class Recorder:
        async def record_all(self, batch: Any) -> None:  # the records are read: now the erasure
            await erase.sweep(ctx, "ann", "erased during the pass")

    with pytest.raises(FhirError) as refused:
        client.portal.call(figures_pass.run, ctx, cli.figures_audit(Recorder()))  # type: ignore[union-attr, arg-type]
    assert refused.value.kind is Kind.CONFLICT
    assert _stored(client) == {}
    assert client.portal.call(figures_pass.done, ctx.store) != clock.now().date().isoformat()  # type: ignore[union-attr]
