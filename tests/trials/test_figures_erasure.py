"""An erasure takes the erased patient out of the daily pass's figures (trials/figures_erasure.py;
docs/matching.md, "Erasure and the day's figures"): on both stores, the figures served after it
are those computed afresh without the patient, and no call reads every record again."""

from __future__ import annotations

from functools import partial
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fhir_server.services import erase, study_access, subscriptions
from fhir_server.store.base import Outbox
from fhir_server.trials import figures_basis, figures_pass, inverse_counts, inverse_population
from tests.trials.eligibility_builders import condition
from tests.trials.inverse_world import STUDY, InverseWorld, inverse_world, new_day  # noqa: F401  (fixture)
from tests.trials.test_figures_pass import (STUDIES, _PATIENTS, _add, _answers, _pass, _put, _stored,  # noqa: F401
                                            world)  # (fixture)

def _population(answers: dict[str, Any]) -> int:
    found = {next(p["valueInteger"] for p in a["parameter"] if p["name"] == "population") for a in answers.values()}
    assert len(found) == 1  # one figure in every study of the day
    return found.pop()


def _computed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry for each time a call reads every counted record from now on (its study's
    figures computed)."""
    computed: list[int] = []
    read = inverse_population.population

    async def spy(ctx: Any, index: Any, today: Any) -> Any:
        found = await read(ctx, index, today)
        computed.append(len(found.counted))
        return found

    monkeypatch.setattr(inverse_population, "population", spy)
    return computed


def _erase(world: InverseWorld, patient: str, requested: bool = True) -> None:
    ctx = world.client.app.state.context  # type: ignore[attr-defined]
    world.client.portal.call(partial(erase.sweep, ctx, patient, "test", requested=requested))  # type: ignore[union-attr]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_PATIENTS.filter(bool), st.integers(0, 7), st.booleans(), st.sampled_from([1, inverse_counts.BASE]))
def test_after_an_erasure_the_figures_are_those_computed_afresh_without_the_patient(
        world: InverseWorld, monkeypatch: pytest.MonkeyPatch, drawn: list[Any], which: int,  # noqa: F811
        touched: bool, base: int) -> None:
    monkeypatch.setattr(inverse_counts, "BASE", base)
    ids = [_add(world.client, one) for one in drawn]
    erased = ids[which % len(ids)]
    _pass(world.client)
    before = _answers(world)
    if touched:  # the record the pass judged is no longer the one erased: figures dropped
        _put(world.client, {**condition("C34.1", id=f"{erased}-t"), "subject": {"reference": f"Patient/{erased}"}})
    computed = _computed(monkeypatch)
    _erase(world, erased)
    after = _answers(world)
    assert not computed or touched  # served from the pass's snapshots, rounded again
    assert _traces(world, erased) == []
    new_day(world.client)
    assert _answers(world) == after  # computed afresh: the erased patient is not there
    if base == 1:
        counted = drawn[which % len(ids)][4]
        assert _population(after) == _population(before) - counted


def _traces(world: InverseWorld, patient: str) -> list[str]:
    """The figures records still naming Patient/`patient`: a member shard under their token,
    a cell whose digest is their share alone."""
    ctx = world.client.app.state.context  # type: ignore[attr-defined]
    outbox = world.client.portal.call  # type: ignore[union-attr]
    token = figures_basis.token(ctx.pseudonym_key, patient)
    share = f"{inverse_counts.member_digest(ctx.pseudonym_key, patient):x}"
    members = [n for n, b in outbox(ctx.store.outbox, study_access.FIGURES_MEMBERS)
               if token in orjson.loads(b)["members"]]
    cells = [n for n, b in outbox(ctx.store.outbox, study_access.FIGURES_PREFIX)
             if any(d == share for _, _, d in orjson.loads(b).get("tally", ()))]
    return members + cells


def test_the_erased_patient_leaves_no_trace_in_the_figures(world: InverseWorld) -> None:  # noqa: F811
    alone = _add(world.client, ("C50.4", "2001-03-03", "male", "75013", True))  # counted, their own cells
    _pass(world.client)
    assert _traces(world, alone)
    _erase(world, alone)
    assert _traces(world, alone) == []


def test_figures_a_call_computed_across_an_erasure_are_not_kept(
        world: InverseWorld, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """A call that read the records before an erasure and stores after it: its figures count
    the erased patient, so they are not stored (the erasure mark changed meanwhile)."""
    monkeypatch.setattr(inverse_counts, "BASE", 1)
    new_day(world.client)
    erased = _add(world.client, ("C50.4", "1960-06-15", "female", "69003", True))
    read = inverse_population.population

    async def erasing(ctx: Any, index: Any, today: Any) -> Any:
        found = await read(ctx, index, today)
        monkeypatch.setattr(inverse_population, "population", read)
        await erase.sweep(world.client.app.state.context, erased, "during the call")  # type: ignore[attr-defined]
        return found

    monkeypatch.setattr(inverse_population, "population", erasing)
    first = {STUDY: world.match(STUDY, "site").json()}
    computed = _computed(monkeypatch)
    again = {STUDY: world.match(STUDY, "site").json()}
    assert computed and _population(again) == _population(first) - 1


def test_a_calls_figures_of_the_day_are_computed_again_after_an_erasure(
        world: InverseWorld, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """Figures a call stored before the pass ran (the pass keeps them) count the erased
    patient with no basis to take them out: after the erasure the call computes them anew."""
    erased = _add(world.client, ("C50.4", "1960-06-15", "female", "69003", True))
    new_day(world.client)
    _answers(world)  # the calls store the day's figures
    ctx = world.client.app.state.context  # type: ignore[attr-defined]
    world.client.portal.call(ctx.store.commit, [Outbox(remove=(figures_pass.DONE,))])  # type: ignore[union-attr]
    assert world.client.portal.call(figures_pass.run, ctx, _ignore).stored == 0  # type: ignore[union-attr]
    computed = _computed(monkeypatch)
    _erase(world, erased)
    after = _answers(world)
    assert len(computed) == len(STUDIES)
    new_day(world.client)
    assert _answers(world) == after


def test_an_erasure_that_cannot_take_the_patient_out_drops_the_figures(
        world: InverseWorld, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    erased = _add(world.client, ("C50.4", "1960-06-15", "female", "69003", True))
    _pass(world.client)
    ctx = world.client.app.state.context  # type: ignore[attr-defined]

    async def refused(ctx: Any, patient: str) -> Any:
        async def apply() -> bool:
            return False  # a record it read changed meanwhile
        return apply

    monkeypatch.setattr(ctx.erasures, "figures", refused)
    _erase(world, erased)
    assert _stored(world.client) == {}
    assert _basis(world) is None


def test_a_retention_erasure_drops_the_figures_without_judging(
        world: InverseWorld, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """The retention run's erasures (not requested) come by the thousand: the first drops the
    figures, as before, and none judges its patient."""
    erased = _add(world.client, ("C50.4", "1960-06-15", "female", "69003", True))
    _pass(world.client)
    ctx = world.client.app.state.context  # type: ignore[attr-defined]
    judged: list[str] = []
    prepared = ctx.erasures.figures

    async def spy(ctx: Any, patient: str) -> Any:
        judged.append(patient)
        return await prepared(ctx, patient)

    monkeypatch.setattr(ctx.erasures, "figures", spy)
    _erase(world, erased, requested=False)
    assert judged == []
    assert _stored(world.client) == {}
    assert _basis(world) is None


def test_the_pass_removes_the_figures_of_studies_gone_from_the_catalogue(world: InverseWorld) -> None:  # noqa: F811
    ctx = world.client.app.state.context  # type: ignore[attr-defined]
    gone = f"{study_access.FIGURES_PREFIX}gone"
    world.client.portal.call(ctx.store.commit, [Outbox(put=((gone, b'{"day": ""}'),))])  # type: ignore[union-attr]
    world.client.portal.call(ctx.store.commit, [Outbox(remove=(figures_pass.DONE,))])  # type: ignore[union-attr]
    world.client.portal.call(figures_pass.run, ctx, _ignore)  # type: ignore[union-attr]
    assert gone not in _stored(world.client)


async def _ignore(day: str, patients: Any) -> None:
    return None


def test_an_erasure_cut_short_after_the_store_leaves_no_figures_once_finished(
        world: InverseWorld, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """The process dies between the store's erasure and taking the patient out of the
    figures: finishing the erasure (at the next start) drops them, the record being gone."""
    erased = _add(world.client, ("C50.4", "1960-06-15", "female", "69003", True))
    _pass(world.client)
    ctx = world.client.app.state.context  # type: ignore[attr-defined]
    prepared = ctx.erasures.figures

    async def dying(ctx: Any, patient: str) -> Any:
        await prepared(ctx, patient)

        async def apply() -> bool:
            raise RuntimeError("the process dies")
        return apply

    monkeypatch.setattr(ctx.erasures, "figures", dying)
    with pytest.raises(RuntimeError):
        _erase(world, erased)
    monkeypatch.setattr(ctx.erasures, "figures", prepared)
    assert world.client.portal.call(erase.reconcile, ctx) == [erased]  # type: ignore[union-attr]
    assert _stored(world.client) == {}
    assert _basis(world) is None


def _basis(world: InverseWorld) -> bytes | None:
    store = world.client.app.state.context.store  # type: ignore[attr-defined]
    found = world.client.portal.call(subscriptions.one, store, study_access.FIGURES_BASIS)  # type: ignore[union-attr]
    return found  # type: ignore[no-any-return]
