"""`Store.erase` on every store (store/erasure.py): a patient's compartment leaves nothing
behind, however many versions, deleted resources included; others' data stays. A conditional
erasure removes nothing if the compartment was written to since its instant, and no write
lands between its check and its removal."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fhir_server import clock
from fhir_server.model.errors import FhirError, Kind
from fhir_server.search import default_registry, extract
from fhir_server.services.erase import compartment
from fhir_server.store import erasure
from fhir_server.store.base import Delete, Erase, Erasure, HistoryQuery, Result, Store, Write
from tests.builders import observation, organization, patient

pytestmark = pytest.mark.anyio


def _write(resource_type: str, id: str, resource: dict[str, Any]) -> Write:
    resource = {**resource, "resourceType": resource_type, "id": id}
    return Write(resource_type, id, resource, extract(resource))


async def _erase(store: Store, patient_id: str) -> Any:
    return await store.erase(compartment(default_registry(), patient_id), ("Patient", patient_id))


async def _seed(store: Store) -> None:
    for who in ("a", "b"):
        await store.commit([_write("Patient", who, patient())])
        await store.commit([_write("Patient", who, patient(gender="male"))])
        for n in range(3):
            await store.commit([_write("Observation", f"{who}{n}", observation(f"Patient/{who}"))])
            await store.commit([_write("Observation", f"{who}{n}", observation(f"Patient/{who}", 70))])
    await store.commit([_write("Organization", "org", organization())])
    await store.commit([Delete("Observation", "a2")])  # deleted: its history holds a's data


async def _all_history(store: Store) -> list[tuple[str, str, int]]:
    page = await store.history(HistoryQuery(count=1000))
    return [(v.resource_type, v.id, v.version) for v in page.versions]


async def test_erase_removes_every_version_of_the_compartment(store: Store) -> None:
    await _seed(store)
    erased = await _erase(store, "a")
    assert erased.resources == {"Patient": 1, "Observation": 3}
    assert erased.versions == {"Patient": 2, "Observation": 7}  # 2 + 2 + 3 (a2 deleted)
    history = await _all_history(store)
    assert not [key for key in history if key[1] in ("a", "a0", "a1", "a2")]
    assert await store.read("Patient", "a") is None
    assert await store.vread("Observation", "a2", 1) is None
    for instance in (("Patient", "a"), ("Observation", "a0")):
        assert (await store.history(HistoryQuery(*instance))).versions == ()
    subject = [("subject", "Patient/a")]
    from fhir_server.search import parse_query
    query, _ = parse_query("Observation", subject, default_registry())
    assert (await store.search(query)).matches == ()
    assert await store.count("Observation") == 3  # b's


async def test_erase_leaves_other_patients_and_other_data(store: Store) -> None:
    await _seed(store)
    before = [key for key in await _all_history(store) if key[1] in ("b", "b0", "b1", "b2", "org")]
    await _erase(store, "a")
    after = [key for key in await _all_history(store) if key[1] in ("b", "b0", "b1", "b2", "org")]
    assert after == before
    assert (await store.read("Patient", "b")) is not None


async def test_erase_is_idempotent_and_unknown_is_nothing(store: Store) -> None:
    await _seed(store)
    await _erase(store, "a")
    again = await _erase(store, "a")
    assert again.resources == {} and again.versions == {}
    nobody = await _erase(store, "nobody")
    assert nobody.resources == {}


async def test_an_erased_id_can_be_written_anew(store: Store) -> None:
    """Nothing of the erased resource is kept, not even its version counter."""
    await _seed(store)
    await _erase(store, "a")
    [result] = await store.commit([_write("Patient", "a", patient())])
    assert result.outcome == "created" and result.version is not None
    assert result.version.version == 1


async def test_linked_patients_stay_shared_resources_go(store: Store) -> None:
    """A Patient whose `link` names the erased one is someone else (access never follows
    link); a resource in two patients' compartments holds the erased one's data."""
    await _seed(store)
    linked = patient(link=[{"other": {"reference": "Patient/a"}, "type": "seealso"}])
    await store.commit([_write("Patient", "c", linked)])
    both = observation("Patient/a", performer=[{"reference": "Patient/b"}])
    await store.commit([_write("Observation", "shared", both)])
    erased = await _erase(store, "a")
    assert erased.resources["Observation"] == 4
    assert await store.read("Patient", "c") is not None
    assert await store.read("Observation", "shared") is None
    assert await store.read("Observation", "b0") is not None


async def test_versions_that_left_the_compartment_are_removed(store: Store) -> None:
    """An Observation first about a, then moved to b: its first version holds a's data,
    sealed under a's key. Erasing a removes that version, keeps the later one (b's)."""
    await _seed(store)
    await store.commit([_write("Observation", "moved", observation("Patient/a"))])
    await store.commit([_write("Observation", "moved", observation("Patient/a", 71))])
    await store.commit([_write("Observation", "moved", observation("Patient/b"))])
    erased = await _erase(store, "a")
    assert erased.versions["Observation"] == 7 + 2  # the compartment's, and moved's first two
    history = [key for key in await _all_history(store) if key[1] == "moved"]
    assert history == [("Observation", "moved", 3)]
    assert await store.vread("Observation", "moved", 1) is None
    current = await store.read("Observation", "moved")
    assert current is not None and current.version == 3 and b"Patient/b" in (current.body or b"")


async def test_a_bundle_holding_the_patients_record_is_removed(store: Store) -> None:
    """A stored Bundle with Patient/a among its entries (a referral's frozen record) belongs
    to no compartment: it is sealed under a's key, and erasing a removes it."""
    await _seed(store)
    frozen = {"type": "collection", "entry": [
        {"fullUrl": "http://x/fhir/Patient/a", "resource": {**patient(), "resourceType": "Patient", "id": "a"}},
        {"fullUrl": "http://x/fhir/Observation/a0",
         "resource": {**observation("Patient/a"), "resourceType": "Observation", "id": "a0"}}]}
    other = {"type": "collection", "entry": [
        {"fullUrl": "http://x/fhir/Patient/b", "resource": {**patient(), "resourceType": "Patient", "id": "b"}}]}
    await store.commit([_write("Bundle", "frozen-a", frozen), _write("Bundle", "frozen-b", other)])
    await store.commit([_write("Bundle", "frozen-a", frozen)])  # a second version
    erased = await _erase(store, "a")
    assert erased.resources["Bundle"] == 1 and erased.versions["Bundle"] == 2
    assert await store.read("Bundle", "frozen-a") is None
    assert await store.vread("Bundle", "frozen-a", 1) is None
    assert await store.read("Bundle", "frozen-b") is not None


async def test_a_conditional_erasure_after_a_write_since_its_instant_removes_nothing(
        store: Store) -> None:
    await _seed(store)
    since = clock.now()
    await store.commit([_write("Observation", "late", observation("Patient/a"))])
    before = await _all_history(store)
    with pytest.raises(FhirError) as refused:
        await store.erase(compartment(default_registry(), "a"), ("Patient", "a"), since)
    assert refused.value.kind is Kind.CONFLICT
    assert "Patient/a" not in str(refused.value.issues)  # no patient named: it reaches logs
    assert await _all_history(store) == before
    assert await store.read("Patient", "a") is not None


async def test_a_conditional_erasure_with_no_write_since_erases_as_before(store: Store) -> None:
    await _seed(store)
    await store.commit([_write("Observation", "elsewhere", observation("Patient/b"))])  # b's
    erased = await store.erase(compartment(default_registry(), "a"), ("Patient", "a"), clock.now())
    assert erased.resources == {"Patient": 1, "Observation": 3}
    assert erased.versions == {"Patient": 2, "Observation": 7}
    assert not [key for key in await _all_history(store) if key[1] in ("a", "a0", "a1", "a2")]


async def test_erasures_together_each_on_its_own_condition(store: Store) -> None:
    """`erase_each`: several patients' erasures in one call (the retention's group); one
    whose compartment was written to since its instant removes nothing and has its CONFLICT
    for outcome, the others are erased as each alone would be."""
    await _seed(store)
    await store.commit([_write("Patient", "c", patient())])
    since = clock.now()
    await store.commit([_write("Observation", "late", observation("Patient/b"))])
    before = [key for key in await _all_history(store) if key[1].startswith("b") or key[1] == "late"]
    erased_a, refused_b, erased_c = await store.erase_each(
        [Erase(compartment(default_registry(), who), ("Patient", who), since) for who in ("a", "b", "c")],
        checkpoint=False)
    assert isinstance(erased_a, Erasure) and erased_a.versions == {"Patient": 2, "Observation": 7}
    assert isinstance(refused_b, FhirError) and refused_b.kind is Kind.CONFLICT
    assert isinstance(erased_c, Erasure) and erased_c.resources == {"Patient": 1}
    assert await store.read("Patient", "a") is None and await store.read("Patient", "c") is None
    after = [key for key in await _all_history(store) if key[1].startswith("b") or key[1] == "late"]
    assert after == before


async def test_a_write_sent_during_a_conditional_erasure_lands_after_it(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A result for a sent once the erasure's transaction has begun checking a's compartment
    (as it cuts keys into batches: SQLite's condition, MongoDB's members after the check) is
    not erased: it waits for the erasure's transaction (SQLite's write lock; on MongoDB, the
    compartment's fence), and lands after it. (MongoDB reads the deleted members' last bodies
    before its transaction: a write sent then may land before it, and make the record active.)"""
    await _seed(store)
    loop = asyncio.get_running_loop()
    sent: list[asyncio.Future[list[Result]]] = []
    batches = erasure.batches
    calls: list[list[Any]] = []

    def meanwhile(keys: list[Any]) -> list[list[Any]]:
        calls.append(keys)
        if len(calls) == 1:  # from the erasure's thread (SQLite) or its coroutine (MongoDB)
            loop.call_soon_threadsafe(lambda: sent.append(asyncio.ensure_future(
                store.commit([_write("Observation", "late", observation("Patient/a"))]))))
        return batches(keys)

    for module in _erasures():
        monkeypatch.setattr(module, "batches", meanwhile)
    erased = await store.erase(compartment(default_registry(), "a"), ("Patient", "a"), clock.now())
    assert sent and not sent[0].done()  # sent while the erasure ran, committed after it
    assert erased.resources == {"Patient": 1, "Observation": 3}
    [result] = await sent[0]
    assert result.outcome == "created"
    late = await store.read("Observation", "late")
    assert late is not None and late.version == 1


def _erasures() -> list[Any]:
    from fhir_server.store.mongo import erase as mongo_erase
    from fhir_server.store.sqlite import erase as sqlite_erase
    return [mongo_erase, sqlite_erase]


async def test_an_erasure_whose_checkpoint_is_deferred_reads_as_gone_at_once(store: Store) -> None:
    """Many erasures in a row, the checkpoint left to the caller (the retention run): each
    is gone from every read as it returns, on every store; a store without a log of its own
    to checkpoint (MongoDB) takes the same calls."""
    await _seed(store)
    async with store.checkpoints_deferred():
        erased = await store.erase(compartment(default_registry(), "a"), ("Patient", "a"),
                                   checkpoint=False)
        assert erased.resources == {"Patient": 1, "Observation": 3}
        assert await store.read("Patient", "a") is None
        assert not [key for key in await _all_history(store) if key[1].startswith("a")]
        await store.checkpoint()
        assert await store.read("Patient", "b") is not None
    assert await store.read("Patient", "a") is None and await store.count("Observation") == 3
