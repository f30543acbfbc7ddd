"""The MongoDB erasure finds what a patient's keys sealed through an index, never by reading
the whole history (store/mongo/erase.py; docs/backup-and-erasure.md). The double runs as a
server started with `notablescan` (tests/store/mongo_double.py): a query no index serves
fails, as it would there."""

from __future__ import annotations

from pathlib import Path

import pytest
from pymongo.errors import OperationFailure

from fhir_server.crypto import EnvelopeCodec, key_id_of, patient_key_ids, patient_scope
from fhir_server.store.mongo import MongoStore
from fhir_server.store.rekey import rotate_data_key
from tests.builders import observation, patient
from tests.store.conftest import encrypting, migrated_double
from tests.store.mongo_double import DoubleClient
from tests.store.test_erase import _erase, _seed, _write

pytestmark = pytest.mark.anyio


@pytest.fixture
def strict(tmp_path: Path) -> MongoStore:
    store = migrated_double(DoubleClient(), codec=encrypting(tmp_path))
    store.client.notablescan = True  # after migrate: index builds and back-fills may scan
    return store


async def test_the_double_refuses_a_query_no_index_serves(strict: MongoStore) -> None:
    with pytest.raises(OperationFailure) as refused:
        await strict.history_docs.find_one({"body": {"$ne": None}})
    assert refused.value.code == 291  # NoQueryExecutionPlans
    assert await strict.history_docs.find_one({"type": "Patient", "id": "x"}) is None  # indexed
    assert await strict.history_docs.find_one({}) is None  # no predicate: a server allows it


async def test_the_versions_under_a_patients_keys_are_found_through_an_index(
        strict: MongoStore) -> None:
    await _seed(strict)
    await strict.commit([_write("Observation", "moved", observation("Patient/a"))])
    await strict.commit([_write("Observation", "moved", observation("Patient/b"))])
    frozen = {"type": "collection", "entry": [
        {"fullUrl": "http://x/fhir/Patient/a", "resource": {**patient(), "resourceType": "Patient", "id": "a"}}]}
    await strict.commit([_write("Bundle", "frozen-a", frozen)])
    double = strict.client
    assert isinstance(double, DoubleClient)
    before = len(double.calls)
    erased = await _erase(strict, "a")  # every query of the erasure served by an index
    assert erased.resources["Bundle"] == 1 and erased.versions["Observation"] == 7 + 1
    keys = patient_key_ids(strict.codec, "a")
    sealed = [c.filter for c in double.calls[before:]
              if c.collection == "history" and c.filter and "key" in c.filter]
    assert sealed == [{"key": {"$in": sorted(keys)}, "type": {"$ne": "AuditEvent"}}]
    assert await strict.read("Bundle", "frozen-a") is None
    assert await strict.vread("Observation", "moved", 1) is None


async def test_migrate_gives_older_history_documents_their_key(tmp_path: Path) -> None:
    """History written before the key was kept in its own field: `migrate` fills it in before
    building the index, and the erasure then finds those versions too."""
    store = MongoStore(DoubleClient(), codec=encrypting(tmp_path))
    await store.migrate()
    await store.commit([_write("Patient", "a", patient())])
    await store.commit([_write("Bundle", "frozen-a", {"type": "collection", "entry": [
        {"fullUrl": "http://x/fhir/Patient/a", "resource": {**patient(), "resourceType": "Patient", "id": "a"}}]})])
    await store.history_docs.update_many({}, {"$unset": {"key": ""}})  # as an older release wrote
    await store.history_docs.drop_index("sealed_key")
    await store.migrate()
    docs = [d async for d in store.history_docs.find({})]
    assert len(docs) == 2 and all(d["key"] == key_id_of(d["body"]) for d in docs)
    store.client.notablescan = True
    assert (await _erase(store, "a")).resources == {"Patient": 1, "Bundle": 1}


async def test_a_rotated_key_is_the_one_the_erasure_looks_for(strict: MongoStore) -> None:
    """`keys rotate --data` reseals a patient's versions under a new key: their `key` follows."""
    await strict.commit([_write("Patient", "a", patient())])
    await strict.commit([_write("Bundle", "frozen-a", {"type": "collection", "entry": [
        {"fullUrl": "http://x/fhir/Patient/a", "resource": {**patient(), "resourceType": "Patient", "id": "a"}}]})])
    codec = strict.codec
    assert isinstance(codec, EnvelopeCodec)
    rotated = await rotate_data_key(codec.keys, [strict], patient_scope("a"), settle=0)
    assert rotated.resealed == 2
    docs = [d async for d in strict.history_docs.find({"_id": {"$in": ["Patient/a/1", "Bundle/frozen-a/1"]}})]
    assert len(docs) == 2
    assert all(d["key"] == rotated.key_id == key_id_of(d["body"]) for d in docs)
    assert (await _erase(strict, "a")).resources == {"Patient": 1, "Bundle": 1}


async def test_the_double_refuses_a_bulk_write_no_index_serves(strict: MongoStore) -> None:
    """A bulk write's operations are queries too: one no index serves fails as a write error
    291, as on a server started with `notablescan`; one served by `_id` runs."""
    from pymongo import DeleteMany, UpdateOne
    from pymongo.errors import BulkWriteError

    await strict.commit([_write("Patient", "a", patient())])
    with pytest.raises(BulkWriteError) as refused:
        await strict.history_docs.bulk_write([
            UpdateOne({"_id": "Patient/a/1"}, {"$set": {"x": 1}}),
            DeleteMany({"body": {"$ne": None}})])
    assert [e["code"] for e in refused.value.details["writeErrors"]] == [291]
    assert refused.value.details["writeErrors"][0]["index"] == 1
    assert await strict.read("Patient", "a") is not None  # nothing deleted
    assert (await strict.history_docs.find_one({"_id": "Patient/a/1"}))["x"] == 1  # ordered: applied
    done = await strict.history_docs.bulk_write([UpdateOne({"_id": "Patient/a/1"}, {"$set": {"x": 2}})])
    assert done.modified_count == 1


async def test_sealed_audit_events_keep_no_key_id_to_index(strict: MongoStore) -> None:
    """No erasure removes AuditEvents by key (they shred with it): their random key ids stay
    out of `sealed_key`, where each would cost a write at a random place of the index
    (docs/security.md#cost); a sealed Patient's version keeps its key as before."""
    event = {"resourceType": "AuditEvent", "recorded": "2026-12-07T02:00:00Z",
             "entity": [{"what": {"reference": "Patient/a"}}]}
    await strict.commit([_write("AuditEvent", "e1", event), _write("Patient", "a", patient())])
    ids = ["AuditEvent/e1/1", "Patient/a/1"]
    docs = {d["type"]: d async for d in strict.history_docs.find({"_id": {"$in": ids}})}
    assert key_id_of(docs["AuditEvent"]["body"]) == key_id_of(docs["Patient"]["body"])  # both sealed
    assert docs["AuditEvent"]["key"] is None
    assert docs["Patient"]["key"] == key_id_of(docs["Patient"]["body"])


async def test_an_audit_event_written_with_its_key_id_is_not_erased_by_key(strict: MongoStore) -> None:
    """AuditEvents written before they kept no key id still hold it: an erasure by key passes
    them by all the same (they shred with the key; the audit store is only pruned), and the
    query stays served by `sealed_key`."""
    event = {"resourceType": "AuditEvent", "recorded": "2026-12-07T02:00:00Z",
             "entity": [{"what": {"reference": "Patient/a"}}]}
    await strict.commit([_write("AuditEvent", "older", event), _write("Patient", "a", patient())])
    doc = await strict.history_docs.find_one({"_id": "AuditEvent/older/1"})
    await strict.history_docs.update_one({"_id": doc["_id"]}, {"$set": {"key": key_id_of(doc["body"])}})
    await _erase(strict, "a")
    assert await strict.history_docs.find_one({"_id": "AuditEvent/older/1"}) is not None
    assert await strict.read("Patient", "a") is None
