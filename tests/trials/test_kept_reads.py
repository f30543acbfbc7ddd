"""The per-process Consents and trial catalogue (consents_kept.py, match_catalogue.py) as read
beside other requests: garbage others leave during a read is collected, concurrent first
loads read once, a read ahead at start serves the first request, a withdrawal stamped behind
the newest entry is seen."""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path
from typing import Any

import pytest

from fhir_server import clock
from fhir_server.search import default_registry, extract
from fhir_server.services.erase import compartment, forget_figures
from fhir_server.store.base import Write
from fhir_server.trials import consents_kept, match_catalogue
from tests.builders import consent
from tests.trials.kept_stores import Handle, afresh, context, opened


class _Cyclic:
    """Cyclic garbage, as a request in flight leaves it (a parsed model, an exception frame)."""

    def __init__(self) -> None:
        self.me = self


class _Busy(Handle):
    """The store while other requests run: each search lets one leave cyclic garbage."""

    def __init__(self, store: Any) -> None:
        super().__init__(store)
        self.left: list[weakref.ref[_Cyclic]] = []

    async def search(self, *args: Any, **kwargs: Any) -> Any:
        self.left.append(weakref.ref(_Cyclic()))  # dropped at once: garbage for the collector
        return await self.store.search(*args, **kwargs)


async def _put(store: Any, body: dict[str, Any]) -> None:
    await store.commit([Write("Consent", body["id"], body, extract(body))])


def test_cyclic_garbage_made_during_the_consents_read_is_collected(tmp_path: Path) -> None:
    """The read keeps the collector off (across awaits) and freezes what it read: the cyclic
    garbage other requests leave meanwhile is collected first, not frozen for good."""

    async def go() -> list[weakref.ref[_Cyclic]]:
        async with opened("sqlite", tmp_path) as stores:
            await _put(stores.first, consent("p0", "research") | {"id": "c0"})
            busy = _Busy(stores.first)
            await consents_kept.agreements(context(busy))  # type: ignore[arg-type]
            return busy.left

    left = asyncio.run(go())
    try:
        assert left
        gc.collect()
        assert [ref for ref in left if ref() is not None] == []
    finally:
        gc.unfreeze()


def test_concurrent_first_loads_read_the_catalogue_once(tmp_path: Path) -> None:
    """The start's read ahead and `$match` calls arriving meanwhile read the catalogue once
    (10,000 trials: seconds of CPU each)."""

    async def go() -> int:
        async with opened("sqlite", tmp_path) as stores:
            with afresh(match_catalogue, stores.first) as reads:
                ctx = context(stores.first)
                await asyncio.gather(match_catalogue.warm(ctx), match_catalogue.load(ctx),
                                     match_catalogue.load(ctx))
                return len(reads)

    assert asyncio.run(go()) == 1


def test_a_match_request_after_the_start_finds_the_catalogue_read_ahead(tmp_path: Path, signing_keys: bytes) -> None:
    """The request's store (an AuditedStore) unwraps to the very
    store the background read kept the catalogue by: the first HTTP $match reads nothing."""
    from tests.http.helpers import send
    from tests.trials.conftest import served

    with afresh(match_catalogue, None) as reads, served("sqlite", tmp_path, signing_keys) as client:
        store = client.app.state.context.store  # type: ignore[attr-defined]
        for _ in range(600):
            if store in consents_kept._KEPT:
                break
            client.portal.call(asyncio.sleep, 0.1)
        assert len(reads) == 1
        profile = {"resourceType": "Bundle", "type": "collection", "entry": [
            {"fullUrl": "urn:uuid:00000000-0000-4000-8000-000000000001",
             "resource": {"resourceType": "Patient", "gender": "female", "birthDate": "1970-01-01"}}]}
        response = send(client, "POST", "/fhir/ResearchStudy/$match", {"resourceType": "Parameters",
                        "parameter": [{"name": "bundle", "resource": profile}]})
        assert response.status_code == 200, response.text
        assert len(reads) == 1


def test_a_withdrawal_stamped_behind_the_newest_entry_is_seen(tmp_path: Path) -> None:
    """On SQLite the history is read down to the newest entry's lastUpdated,
    which assumes the wall clock never steps back (datetime.now is not monotonic). When it
    does, a withdrawal committed later but stamped earlier stops the scan before the entry
    kept, which `position` takes for an erasure: the Consents are read afresh."""
    from datetime import timedelta

    async def go() -> None:
        with clock.frozen(clock.now()) as moving:
            async with opened("sqlite", tmp_path) as stores:
                await _put(stores.first, consent("p0", "research") | {"id": "c0"})
                await _put(stores.first, consent("p0", actor="Practitioner/dr") | {"id": "c1"})
                ctx = context(stores.first)
                assert "p0" in (await consents_kept.agreements(ctx)).counted(clock.today())
                moving.advance(-1)  # the clock stepped back one second, in another process
                withdrawn = consent("p0", "research") | {"id": "c0", "status": "inactive"}
                await _put(stores.second, withdrawn)
                moving.advance(timedelta(minutes=5).total_seconds())
                await _put(stores.second, consent("p9", "research") | {"id": "c9"})  # a later write
                got = await consents_kept.agreements(ctx)
                assert "p0" not in got.counted(clock.today())

    asyncio.run(go())


@pytest.mark.parametrize("module, again", [(match_catalogue, match_catalogue.load),
                                           (consents_kept, consents_kept.agreements)])
def test_the_server_reads_ahead_at_start(module: Any, again: Any, tmp_path: Path,
                                         signing_keys: bytes) -> None:
    """Started, the app reads the trial catalogue, then the Consents, in the background; the
    first call finds them kept."""
    from tests.trials.conftest import served

    with afresh(module, None) as reads, served("sqlite", tmp_path, signing_keys) as client:
        store = client.app.state.context.store  # type: ignore[attr-defined]
        for _ in range(600):  # the reads ahead end (at most a minute), the Consents' last
            if store in consents_kept._KEPT:
                break
            client.portal.call(asyncio.sleep, 0.1)
        assert store in module._KEPT and len(reads) == 1
        client.portal.call(again, context(store))
        assert len(reads) == 1


def test_an_investigators_prescreening_list_is_not_judged_again_at_every_call(monkeypatch: Any) -> None:
    """The pre-screened patients of a study are judged once per set of Consents and day (at
    10,000 patients asking, 0.3 s of CPU a call with the event loop held); a write makes a
    new set, judged again."""
    from fhir_server.services import study_access
    from fhir_server.trials.catalogue_history import Position
    from tests.trials.inverse_world import prescreening

    day = clock.today()
    by_patient = {f"p{n}": [consent(f"p{n}", actor="Practitioner/dr") | {"id": f"r{n}"},
                            prescreening(f"p{n}", "s1") | {"id": f"c{n}"}] for n in range(50)}
    kept = consents_kept.Agreements(Position((), (), frozenset(), False), None, by_patient, {},
                                    frozenset(by_patient))
    first = kept.prescreened("ResearchStudy/s1", day)
    assert len(first) == 50
    judged: list[str] = []
    for name in ("counted", "prescreened"):
        real = getattr(study_access, name)
        monkeypatch.setattr(study_access, name, lambda found, patient, *rest, real=real:
                            judged.append(patient) or real(found, patient, *rest))
    assert kept.prescreened("ResearchStudy/s1", day) == first
    assert judged == []
