"""The active Consents kept per store and brought up to date from the history
(trials/consents_kept.py) equal those read afresh, on each store: after random creates,
updates (a Consent moved to another patient, withdrawn, made a deny or a pre-screening permit)
and deletions, several in the same instant, through two handles on the same store (two worker
processes), with a patient erased now and then as services/erase.py erases them, and on
MongoDB versions that appear behind newer ones within its settling time. Equal means the same
Consents by patient, the same patients asking, counted and pre-screened. And the server reads
them at start, in the background, a call meanwhile waiting for that one read."""

from __future__ import annotations

import asyncio
import gc
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_server import clock
from fhir_server.search import default_registry, extract
from fhir_server.services.context import Context
from fhir_server.services.erase import compartment, forget_figures
from fhir_server.store.base import Delete, HistoryQuery, Store, Write
from fhir_server.trials import consents_kept
from tests.builders import consent
from tests.store.conftest import DOUBLE
from tests.trials.inverse_world import prescreening
from tests.trials.kept_stores import Handle, afresh, context, opened, run

CONSENTS, PATIENTS = ("c0", "c1", "c2", "c3"), ("p0", "p1", "p2")
STUDY = "ResearchStudy/s1"


def _consent(id: str, patient: str, kind: str) -> dict[str, Any]:
    body = {"privacy": lambda: consent(patient, actor="Practitioner/dr"),
            "research": lambda: consent(patient, "research"),
            "objection": lambda: consent(patient, "research", type="deny"),
            "prescreening": lambda: prescreening(patient, "s1"),
            "withdrawn": lambda: consent(patient, "research") | {"status": "inactive"}}[kind]()
    return body | {"id": id}


puts = st.builds(lambda id, patient, kind: ("put", _consent(id, patient, kind)), st.sampled_from(CONSENTS),
                 st.sampled_from(PATIENTS),
                 st.sampled_from(["privacy", "research", "objection", "prescreening", "withdrawn"]))
LOAD = st.just(("load", None))
STEP = st.one_of(puts, puts, st.tuples(st.just("delete"), st.sampled_from(CONSENTS)),
                 st.tuples(st.just("erase"), st.sampled_from(PATIENTS)), LOAD, LOAD,
                 st.tuples(st.just("tick"), st.sampled_from([0.000001, 1.0, 30.0])))
# A step: what it does, whether the second handle writes it, whether it is stamped late.
STEPS = st.lists(st.tuples(STEP, st.booleans(), st.booleans()), min_size=5, max_size=40)


def _same(kept: consents_kept.Agreements, fresh: consents_kept.Agreements, day: str) -> None:
    assert kept.by_patient == fresh.by_patient
    assert kept.owners == fresh.owners
    assert kept.asking == fresh.asking
    assert kept.counted(day) == fresh.counted(day)
    assert kept.prescreened(STUDY, day) == fresh.prescreened(STUDY, day)


async def _write(store: Store, step: str, value: Any) -> None:
    if step == "put":
        await store.commit([Write("Consent", value["id"], value, extract(value))])
    elif step == "delete":
        await store.commit([Delete("Consent", value)])
    elif step == "erase":  # as services/erase.py does
        await store.erase(compartment(default_registry(), value), ("Patient", value))
        await forget_figures(store)


@pytest.mark.parametrize("kind", ["sqlite", DOUBLE])
@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(steps=STEPS)
def test_the_consents_kept_equal_those_read_afresh(kind: str, steps: list[Any],
                                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    asyncio.run(run(kind, steps, tmp_path_factory.getbasetemp(), consents_kept, _write,
                    consents_kept.agreements, _same))


async def _withdrawn(kind: str, base: Path) -> tuple[list[str], list[str], list[list[str] | None], int]:
    with tempfile.TemporaryDirectory(dir=base) as folder:
        async with opened(kind, Path(folder)) as stores:
            ctx, day = context(stores.first), clock.now().date().isoformat()
            bodies = [_consent(f"{p}-{k}", p, k) for p in ("p0", "p1", "p2") for k in ("privacy", "prescreening")]
            await stores.first.commit([Write("Consent", b["id"], b, extract(b)) for b in bodies])
            before = (await consents_kept.agreements(ctx)).prescreened(STUDY, day)
            (await consents_kept.agreements(ctx)).counted(day)
            withdrawn = _consent("p1-prescreening", "p1", "withdrawn")  # by another worker process
            await stores.second.commit([Write("Consent", withdrawn["id"], withdrawn, extract(withdrawn))])
            searched: list[list[str] | None] = []  # the Consents read: their ids, None for all
            real = consents_kept._active

            def active(ctx: Context, ids: list[str] | None) -> Any:
                searched.append(ids)
                return real(ctx, ids)

            asked: list[HistoryQuery] = []  # the history questions with `since`
            history = stores.first.history

            async def spied(query: HistoryQuery) -> Any:
                asked.extend([query] if query.since is not None else [])
                return await history(query)

            consents_kept._active = active  # type: ignore[assignment]
            stores.first.history = spied  # type: ignore[method-assign]
            try:
                kept = await consents_kept.agreements(ctx)
            finally:
                consents_kept._active = real  # type: ignore[assignment]
                stores.first.history = history  # type: ignore[method-assign]
            assert sorted(kept.counted(day)) == ["p0", "p2"]  # from the day's kept cache
            _same(kept, await consents_kept.agreements(context(Handle(stores.first))), day)
            return before, kept.prescreened(STUDY, day), searched, len(asked)


@pytest.mark.parametrize("kind", ["sqlite", DOUBLE])
def test_a_withdrawal_takes_effect_at_the_next_call_reading_only_it(kind: str, tmp_path: Path) -> None:
    """A patient withdrawing their pre-screening Consent (written by another handle) is
    neither counted nor pre-screened at the next call, which reads that Consent alone; on
    SQLite without asking the history for entries `since` now (a scan of the type's history,
    asked for MongoDB's settling time, which SQLite never gives)."""
    before, after, searched, asked = asyncio.run(_withdrawn(kind, tmp_path))
    assert before == ["p0", "p1", "p2"] and after == ["p0", "p2"]
    assert searched == [["p1-prescreening"]]
    assert asked == (1 if kind == DOUBLE else 0)


async def _warming(kind: str, base: Path) -> tuple[int, int, bool]:
    with tempfile.TemporaryDirectory(dir=base) as folder:
        async with opened(kind, Path(folder)) as stores:
            bodies = [_consent(f"c{n}", f"p{n // 2}", ("privacy", "research")[n % 2]) for n in range(250)]
            await stores.first.commit([Write("Consent", b["id"], b, extract(b)) for b in bodies])
            ctx = context(stores.first)
            turns = 0

            async def ticking() -> None:  # another coroutine, served while the read goes on
                nonlocal turns
                while True:
                    turns += 1
                    await asyncio.sleep(0)

            with afresh(consents_kept, stores.first) as reads:
                ticker = asyncio.create_task(ticking())
                warming = asyncio.create_task(consents_kept.warm(ctx))
                await asyncio.sleep(0)  # the read begins
                called = await consents_kept.agreements(ctx)  # a call arriving meanwhile
                await warming
                ticker.cancel()
                at_call = turns
                again = await consents_kept.agreements(ctx)  # MongoDB: not yet settled, the same Consents
                same = again.by_patient is called.by_patient and len(called.by_patient) == 125
            return len(reads), at_call, same


@pytest.mark.parametrize("kind", ["sqlite", DOUBLE])
def test_a_call_during_warming_waits_for_the_same_read(kind: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A call arriving while the Consents are read ahead (three pages) waits for that read,
    which yields to the event loop meanwhile: one read, the same Agreements."""
    monkeypatch.setattr(consents_kept, "PAGE", 100)
    reads, turns, same = asyncio.run(_warming(kind, tmp_path))
    assert reads == 1 and same
    assert turns >= 3  # another coroutine ran during the read, at least once a page


async def _collected(base: Path) -> tuple[bool, int]:
    with tempfile.TemporaryDirectory(dir=base) as folder:
        async with opened("sqlite", Path(folder)) as stores:
            body = _consent("c0", "p0", "privacy")
            await stores.first.commit([Write("Consent", "c0", body, extract(body))])
            during, real = [], consents_kept._parsed

            async def parsed(*args: Any) -> Any:
                during.append(gc.isenabled())
                return await real(*args)

            consents_kept._parsed = parsed  # type: ignore[assignment]
            before = gc.get_freeze_count()
            try:
                await consents_kept.agreements(context(stores.first))
            finally:
                consents_kept._parsed = real  # type: ignore[assignment]
            return during == [False] and gc.isenabled(), gc.get_freeze_count() - before


def test_the_consents_read_are_kept_out_of_the_collectors_walks(tmp_path: Path) -> None:
    """The collector is off while the Consents are read afresh, on again after, and what was
    read is frozen (never walked by a full collection)."""
    assert gc.isenabled()
    try:
        paused, frozen = asyncio.run(_collected(tmp_path))
    finally:
        gc.unfreeze()
    assert paused and frozen > 0
